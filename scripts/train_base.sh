#!/usr/bin/env bash
# Make the committed multi-city base model (weights/base/) from the real data sets, as it was made.
#
#   TRANSFERTRAJ_HOME=var/base bash scripts/train_base.sh      # a data root of its own (default var/base)
#
# Needs the datasets root (TRANSFERTRAJ_DATASETS, default ../shared/data: README "Bundled data").
# 1. lands the Porto year as 11 monthly deliveries and the 21 San Francisco days as 21 daily ones;
# 2. builds both cities' OSM context tables;
# 3. ingests every delivery through the nightly DAG (`transfertraj backfill`: one DAG run per date);
# 4. trains the small model (2 layers, d=64) from scratch on both cities under the multitask mask (each
#    trajectory draws TP, TR4/8/16, OD or the pretraining mask: the registered model answers every task with
#    one set of weights) within a time budget: each epoch draws EPOCH_SIZE trajectories, half per city (San
#    Francisco holds many more), cosine learning rate, best validation epoch kept;
# 5. copies that best.pt to weights/base/transfertraj-base.pt.
# weights/base/README.md records the run that made the committed file: data versions, time, memory, metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
export TRANSFERTRAJ_HOME="${TRANSFERTRAJ_HOME:-var/base}"
EPOCHS="${EPOCHS:-16}"
EPOCH_SIZE="${EPOCH_SIZE:-16384}"
BUDGET_MIN="${BUDGET_MIN:-30}"
tt=".venv/bin/transfertraj"
[ -x "$tt" ] || bash scripts/bootstrap.sh

if [ "${SKIP_INGEST:-0}" != 1 ]; then
  $tt land --city porto --datasets --per month
  $tt land --city sanfrancisco --datasets
  $tt context --city porto --no-map
  $tt context --city sanfrancisco --no-map
  $tt backfill --city porto --out "$TRANSFERTRAJ_HOME/reports/backfill/porto.md"
  $tt backfill --city sanfrancisco --out "$TRANSFERTRAJ_HOME/reports/backfill/sanfrancisco.md" || true  # a failed date is reported, training goes on
fi
out="$TRANSFERTRAJ_HOME/checkpoints/base-multicity"
version=(${FEATURES_VERSION:+--version "$FEATURES_VERSION"})  # the committed weights: FEATURES_VERSION=67
/usr/bin/time -v $tt pretrain --city porto --city sanfrancisco "${version[@]}" --task multitask --size small \
  --batch-size 64 --epochs "$EPOCHS" --epoch-size "$EPOCH_SIZE" --val-size 2048 \
  --lr 2e-3 --lr-schedule cosine --patience 6 --time-budget-min "$BUDGET_MIN" --no-progress --out "$out"
cp "$out/best.pt" weights/base/transfertraj-base.pt
echo "weights/base/transfertraj-base.pt <- $out/best.pt"

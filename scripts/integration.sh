#!/usr/bin/env bash
# `make integration`: the pipeline against real servers on localhost (tests/integration).
#
#   scripts/integration.sh [pytest args...]
#
# Installs PostgreSQL from the Debian packages when its server binaries are missing (as root, with
# apt-get; otherwise say how), then runs the integration tests, which start PostgreSQL (initdb on a
# free port), a Spark standalone master + worker from the pyspark wheel and `mlflow server`, run the CLI
# and the Airflow DAGs against them, and stop them. The run folder (data root, server logs, pid files)
# is TRANSFERTRAJ_INTEGRATION_RUN, default a fresh folder under /tmp, kept for inspection and printed.
# Should pytest die before its own cleanup, the trap below stops whatever it left, by pid file.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { echo "[integration] $*" >&2; }

if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing PostgreSQL (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  else
    say "PostgreSQL server binaries are missing: install them (e.g. 'sudo apt-get install postgresql') and rerun"
    exit 1
  fi
fi

run="${TRANSFERTRAJ_INTEGRATION_RUN:-$(mktemp -d /tmp/transfertraj-integration.XXXXXX)}"
mkdir -p "$run" && chmod 755 "$run"  # the postgres account must reach $run/postgres
export TRANSFERTRAJ_INTEGRATION=1 TRANSFERTRAJ_INTEGRATION_RUN="$run"

cleanup() {
  # Normally empty: each server's pid file goes when the tests stop it.
  for pid_file in "$run"/pids/*.pid; do
    [ -e "$pid_file" ] || continue
    pid="$(cat "$pid_file")"
    if kill -0 "$pid" 2>/dev/null; then
      say "stopping leftover $(basename "$pid_file" .pid) (pid $pid)"
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    fi
    rm -f "$pid_file"
  done
  if [ -f "$run/postgres/data/postmaster.pid" ]; then
    pg_ctl="$(compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" | sort -V | tail -1)"
    if [ "$(id -u)" = 0 ]; then
      runuser -u postgres -- "$pg_ctl" -D "$run/postgres/data" -m fast stop >/dev/null 2>&1 || true
    else
      "$pg_ctl" -D "$run/postgres/data" -m fast stop >/dev/null 2>&1 || true
    fi
  fi
}
trap cleanup EXIT

say "run folder: $run"
start=$(date +%s)
status=0
"$here/.venv/bin/python" -m pytest -p no:cacheprovider -v -s --durations=0 tests/integration "$@" || status=$?
say "finished in $(( $(date +%s) - start )) s (exit $status); logs and data root under $run"
exit $status

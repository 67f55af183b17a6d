#!/usr/bin/env bash
# Make (or reuse) the project's Python environment, then point it at this checkout.
#
#   scripts/bootstrap.sh            # prints the venv path on its last line
#
# The venv holds every pinned dependency of requirements.txt and lives in a cache folder keyed by the
# lock's hash ($TRANSFERTRAJ_CACHE, default ~/.cache/transfertraj/venv-<hash>), so a second checkout or a
# CI clone on the same machine does not reinstall 6.5 GB. This checkout is then installed into it in
# editable mode (a one-second step), and ./.venv links to it. One checkout at a time uses a given cache:
# set TRANSFERTRAJ_CACHE to keep two checkouts apart.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${TRANSFERTRAJ_CACHE:-$HOME/.cache/transfertraj}"
mkdir -p "$cache"

say() { echo "[bootstrap] $*" >&2; }

# Python 3.11 is what the lock was resolved and proved for.
py="${TRANSFERTRAJ_PYTHON:-}"
if [ -z "$py" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      py="$(command -v "$cand")"; break
    fi
  done
fi
if [ -z "$py" ]; then
  say "Python 3.11 is required (python3.11 or python3 on PATH, or TRANSFERTRAJ_PYTHON). Install it, e.g. 'apt-get install python3.11 python3.11-venv' or pyenv."
  exit 1
fi

# Spark 4 needs Java 17 or newer.
if ! command -v java >/dev/null 2>&1; then
  say "Java is missing: Spark 4 needs Java 17+. Install it, e.g. 'apt-get install openjdk-17-jre-headless'."
  exit 1
fi

lock_hash="$(cat "$here/requirements.txt" | sha256sum | cut -c1-12)"
venv="$cache/venv-$lock_hash"
if [ ! -f "$venv/.complete" ]; then
  say "creating $venv from requirements.txt (first run: about a minute and 6.5 GB)"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
  "$venv/bin/uv" pip install --quiet --python "$venv/bin/python" -r "$here/requirements.txt"
  # This machine sets PYTHONDONTWRITEBYTECODE=1, so nothing would ever be cached: compile once here
  # (Airflow imports 2-3x faster).
  say "byte-compiling the venv"
  "$venv/bin/python" -m compileall -q -j 0 "$venv/lib" >/dev/null 2>&1 || true
  touch "$venv/.complete"
fi

# Point the venv at this checkout (editable install, no dependency resolution).
"$venv/bin/uv" pip install --quiet --python "$venv/bin/python" --no-deps -e "$here"
ln -sfn "$venv" "$here/.venv"
echo "$venv"

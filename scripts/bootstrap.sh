#!/usr/bin/env bash
# Make (or reuse) the project's Python environment for this checkout.
#
#   scripts/bootstrap.sh            # prints the checkout's venv path (./.venv) on its last line
#
# Two layers, so that every checkout runs its own code and none reinstalls 7 GB:
# - the base: every pinned dependency of requirements.txt, in a cache folder keyed by the lock's hash
#   ($TRANSFERTRAJ_CACHE, default ~/.cache/transfertraj/venv-<hash>), shared by all checkouts and CI
#   clones on the machine. The project itself is never installed there.
# - ./.venv: a small venv of this checkout (a few MB) that sees the base's packages through a .pth file
#   and holds the editable install of this checkout alone, with the base's console scripts (airflow,
#   mlflow, pytest, ruff...) re-pointed at its own interpreter. `.venv/bin/transfertraj` of one clone
#   therefore runs that clone's code, inside or outside make.
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

# This checkout's own venv on top of the base (rebuilt when the base changes or the venv is missing).
local="$here/.venv"
if [ -L "$local" ]; then rm -f "$local"; fi   # the old layout linked .venv to the shared cache
if [ ! -x "$local/bin/python" ] || [ "$(cat "$local/.base" 2>/dev/null)" != "$venv" ]; then
  say "creating $local on top of $venv"
  rm -rf "$local"
  "$venv/bin/python" -m venv --without-pip "$local"
  site_of() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
  echo "import site; site.addsitedir('$(site_of "$venv/bin/python")')" > "$(site_of "$local/bin/python")/_transfertraj_base.pth"
  for f in "$venv"/bin/*; do
    name="$(basename "$f")"
    [ -e "$local/bin/$name" ] && continue
    if head -c 200 "$f" 2>/dev/null | head -n 1 | grep -q "^#!.*$venv/bin/python"; then
      sed "1s|.*|#!$local/bin/python|" "$f" > "$local/bin/$name" && chmod +x "$local/bin/$name"
    elif [ -f "$f" ] && [ -x "$f" ]; then
      ln -s "$f" "$local/bin/$name"   # native executables (ruff, uv) and shell scripts (spark-submit)
    fi
  done
  echo "$venv" > "$local/.base"
fi
"$venv/bin/uv" pip install --quiet --python "$local/bin/python" --no-deps -e "$here"
echo "$local"

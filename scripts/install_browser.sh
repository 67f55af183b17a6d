#!/usr/bin/env bash
# Chromium for the page test (tests/transfertraj/test_trip_page.py renders the offline page of
# `transfertraj predict --html` headless and checks the picture). Debian's package `chromium`, installed
# when apt-get is usable (root); anywhere else this says so and the test skips with the same advice.
#
#   bash scripts/install_browser.sh        # `make test` runs it when /usr/bin/chromium is missing
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "[install_browser] no chromium, and apt-get is not usable here (needs Debian/Ubuntu as root):" \
    "the page test will skip; install a Chromium and put it on PATH as 'chromium' to run it" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
echo "[install_browser] apt-get install chromium (about 100 MB, once)" >&2
if ! apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
chromium --version >&2

# The README's two commands are `make demo` and `make test`; each installs what it needs first
# (scripts/bootstrap.sh: ./.venv for this checkout, on top of a cached base keyed by requirements.txt)
# and can be run again safely.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The demo and the tests keep their data under ./var unless TRANSFERTRAJ_HOME says otherwise.
export TRANSFERTRAJ_HOME ?= $(CURDIR)/var

VENV_BIN = $(CURDIR)/.venv/bin

.PHONY: help venv demo test test-slow integration bench lock clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

venv:  ## create or reuse the pinned environment (./.venv, on a cached base)
	@bash scripts/bootstrap.sh >/dev/null

demo: venv  ## run the pipeline end to end on the bundled real sample
	$(VENV_BIN)/transfertraj demo

test: venv  ## lint and format check (ruff), then the fast tier of the tests (all but the `slow` ones)
	$(VENV_BIN)/ruff check . && $(VENV_BIN)/ruff format --check .
	$(VENV_BIN)/python -m pytest -q -m "not slow"

test-slow: venv  ## the slow tier: the tests marked `slow` (CI runs it after `make test`)
	@[ -x /usr/bin/chromium ] || bash scripts/install_browser.sh  # for the page test; it skips without one
	$(VENV_BIN)/python -m pytest -q -m slow

integration: venv  ## the pipeline against real servers on localhost: Spark standalone, MLflow and Airflow on PostgreSQL
	bash scripts/integration.sh

bench: venv  ## run the benchmarks (bench/), printing figures and ratios (adds DuckDB, a bench-only peer)
	$(VENV_BIN)/uv pip install --quiet --python $(VENV_BIN)/python -r requirements-bench.txt
	@for b in bench/context.py bench/train.py bench/ingest.py; do $(VENV_BIN)/python $$b || exit 1; done

lock:  ## re-resolve requirements.txt from requirements.in
	uv pip compile requirements.in -o requirements.txt --python-version 3.11

clean:  ## remove the demo's data root (./var); the venv cache stays
	rm -rf var

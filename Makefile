# xnorflow: `make test` sets everything up from nothing, then runs the test suite.
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
# Generated Verilog and simulator builds are cached per checkout, so a test run never picks up
# a build made from other sources (delete build/ to start from nothing).
export XNORFLOW_CACHE_DIR ?= $(abspath build/cache)
# setup.sh installs the cell libraries and OpenSTA of `xnorflow asic`: in `make test` their
# tests must run, not skip (outside make they skip, naming what is missing)
TEST_ENV := XNORFLOW_ASIC_REQUIRED=1

.PHONY: setup test test-all lint demo clean

setup:
	@bash scripts/setup.sh

test: setup
	$(TEST_ENV) $(PY) -m pytest -n 2 -q

test-all: setup
	$(TEST_ENV) $(PY) -m pytest -n 2 -q -m "slow or not slow"

lint: setup
	$(VENV)/bin/ruff check .

demo: setup
	$(VENV)/bin/xnorflow demo

clean:
	rm -rf build .pytest_cache

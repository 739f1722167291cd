# xnorflow: `make test` sets everything up from nothing, then runs the test suite.
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
# Generated Verilog and simulator builds are cached per checkout, so a test run never picks up
# a build made from other sources (delete build/ to start from nothing).
export XNORFLOW_CACHE_DIR ?= $(abspath build/cache)

.PHONY: setup test test-all lint demo clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -n 2 -q

test-all: setup
	$(PY) -m pytest -n 2 -q -m "slow or not slow"

lint: setup
	$(VENV)/bin/ruff check .

demo: setup
	$(VENV)/bin/xnorflow demo

clean:
	rm -rf build .pytest_cache

# The project's one command runner: README and CI call these targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.runtime-stamp
STAMP := $(VENV)/.installed-stamp
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check

.PHONY: install install-runtime serve test lint typecheck unit bench clean

# What `tocsin serve` needs, and nothing else: a first `make serve` installs only this.
$(RUN_STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.lock
	$(PIP) --no-deps -e .
	touch $(RUN_STAMP)

# Everything, development tools (tests, ruff, mypy) included. Depends on both lock
# files: a pin added to either reinstalls.
$(STAMP): $(RUN_STAMP) requirements.lock requirements-dev.lock
	$(PIP) -r requirements.lock -r requirements-dev.lock
	touch $(STAMP)

install-runtime: $(RUN_STAMP)

install: $(STAMP)

serve: install-runtime
	$(BIN)/tocsin serve

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

# The peer it measures against is Debian's Alertmanager (installed once, as root).
# Pass options with BENCH_ARGS, e.g. `make bench BENCH_ARGS=--quick`.
bench: install
	command -v prometheus-alertmanager >/dev/null || \
	  (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y prometheus-alertmanager)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info

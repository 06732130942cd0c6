# The project's one command runner: README and CI call these targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install serve test lint typecheck unit bench clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

serve: install
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

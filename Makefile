# The project's one command runner: README and CI call these targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.runtime-stamp
STAMP := $(VENV)/.installed-stamp
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check

.PHONY: install install-runtime serve demo test lint typecheck unit bench clean browser-deps vendor \
  vendor-check

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

# tocsin at work on temporary files (docs/cli.md); needs only the run-time install.
demo: install-runtime
	$(BIN)/tocsin demo

lint: install
	$(BIN)/ruff check src tests bench web
	$(BIN)/ruff format --check src tests bench web

typecheck: install
	$(BIN)/mypy

test: lint typecheck browser-deps vendor-check
	$(BIN)/pytest

# The browser tests (tests/browser) drive Debian's Chromium (installed once, as root) and
# inject axe-core from web/node_modules (npm ci from the committed lock).
NODE_MODULES := web/node_modules/.package-lock.json
$(NODE_MODULES): web/package.json web/package-lock.json
	npm ci --prefix web --no-audit --no-fund --ignore-scripts
	touch $(NODE_MODULES)

browser-deps: $(NODE_MODULES)
	command -v chromium >/dev/null || \
	  (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

# htmx (the console) and Swagger UI (/api/v1/docs), pinned by web/package-lock.json, are
# committed in the package so that `make serve` needs no npm and the docs need no CDN:
# `vendor` copies them from the verified tarballs, `vendor-check` fails unless the
# committed copies are those files. npm runs no package's install scripts.
vendor:
	$(PYTHON) web/vendor.py copy

vendor-check:
	$(PYTHON) web/vendor.py check

# The peer it measures against is Debian's Alertmanager (installed once, as root).
# Pass options with BENCH_ARGS, e.g. `make bench BENCH_ARGS=--quick`.
bench: install
	command -v prometheus-alertmanager >/dev/null || \
	  (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y prometheus-alertmanager)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info

# Two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON := $(shell command -v $(PYTHON))
export UV_PYTHON_DOWNLOADS := never
CONFIG ?= examples/quickstart.yaml
PG_BIN := $(firstword $(wildcard /usr/lib/postgresql/*/bin))

.PHONY: run test lint typecheck pytest sync sync-dev services-bin web clean bench e2e e2e-clients

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet 'uv==0.13.9'

sync: $(UV)
	$(UV) sync --frozen --no-dev

sync-dev: $(UV)
	$(UV) sync --frozen

# The console is built only when its sources exist.
web:
	@if [ -f web/package.json ]; then cd web && npm ci --no-audit --no-fund && npm run build; fi

run: sync web
	$(VENV)/bin/isthmus serve --config $(CONFIG)

# PostgreSQL and Redis server binaries for the throwaway test servers.
services-bin:
	@if [ -z "$(PG_BIN)" ] || ! command -v redis-server >/dev/null; then \
	  echo "installing postgresql and redis-server from the system packages"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] && echo "" || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq postgresql redis-server >/dev/null; \
	fi

lint: sync-dev
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

typecheck: sync-dev
	$(VENV)/bin/mypy

# The real CLIs the end-to-end suite drives (pinned in tests/e2e/clients.py), installed from npm into
# .e2e-cache/ once and reused; the test session would install them too, this just does it up front.
e2e-clients: sync-dev
	$(VENV)/bin/python tests/e2e/clients.py

pytest: sync-dev services-bin e2e-clients
	$(VENV)/bin/pytest $(PYTEST_ARGS)

e2e: sync-dev e2e-clients
	$(VENV)/bin/pytest tests/e2e $(PYTEST_ARGS)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .pytest_cache .ruff_cache

# Benchmark (bench/README.md). `make bench` is the one command; BENCH_ARGS=--quick for a short run.
.PHONY: bench-smoke bench-deps bench-litellm
BENCH_ARGS ?=
LITELLM_VENV := bench/.venvs/litellm

# nginx (fake upstream and reverse-proxy peer) and wrk (the load) from the system packages.
bench-deps:
	@if [ ! -x /usr/sbin/nginx ] && ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then \
	  echo "installing nginx and wrk from the system packages"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] && echo "" || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq nginx wrk >/dev/null; \
	fi

# One-time: the LiteLLM proxy in its own venv, never in the project's.
$(LITELLM_VENV)/bin/litellm: bench/litellm-requirements.txt
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install --quiet -r bench/litellm-requirements.txt
	touch $@

bench-litellm: $(LITELLM_VENV)/bin/litellm

bench: sync-dev bench-deps bench-litellm
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

bench-smoke: sync-dev
	$(VENV)/bin/python bench/run.py --smoke

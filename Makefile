# Two commands: `make run` and `make test`. Everything else they need is set up here.
SHELL := /bin/bash
.DEFAULT_GOAL := help

HOST ?= 127.0.0.1
PORT ?= 8000
WEB_PORT ?= 3000
UV_VERSION := 0.13.9
PYTHON ?= python3

# uv from PATH, else a private copy in .tools/ (installed from PyPI on first use).
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
RUN := $(UV) run --frozen --no-sync

# The real Better Auth the interop tests run against, installed from its lock file
# when npm is here (without it those tests skip, or fail under CI=true).
HARNESS := tests/interop/better_auth
# openapi-typescript and tsc, for the check that a client generated from /openapi.json type-checks.
TS_HARNESS := tests/interop/typescript
# The demo web app (Better Auth and one page), which the browser tests drive in Chromium.
WEB := web
ifneq ($(shell command -v npm 2>/dev/null),)
INTEROP_DEPS := $(HARNESS)/node_modules/.installed $(TS_HARNESS)/node_modules/.installed \
  $(WEB)/node_modules/.installed chromium
endif

.PHONY: help run demo test test-fast lint format typecheck pytest migrate token clean bench chromium image-test

help:
	@echo "make run    set up, migrate the SQLite database, serve on http://$(HOST):$(PORT)"
	@echo "make demo   the API and the demo web app (sign up, manage tasks) on http://localhost:$(WEB_PORT)"
	@echo "make test   set up, then ruff, mypy and the whole pytest suite"
	@echo "make test-fast   ruff, mypy and the in-process tests only (no processes, Node or browser)"
	@echo "make token USER=alice   print a token for user alice, signed with the .env secret"
	@echo "make bench  benchmark the API against a hand-written ceiling app (wrk, PostgreSQL)"
	@echo "make image-test   build the image and run it, compose.yaml and the Kubernetes manifests with podman (root)"

# Set-up steps say what they do on stderr, so `TOKEN=$$(make token USER=alice)` captures the token alone.

$(CURDIR)/.tools/bin/uv:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "error: Python 3.11+ is required ($(PYTHON) is $$($(PYTHON) -V 2>&1))"; exit 1; }
	@$(PYTHON) -m venv .tools \
	  || { echo "error: '$(PYTHON) -m venv' failed; on Debian: apt-get install python3-venv"; exit 1; }
	@echo "installing uv $(UV_VERSION) into .tools/" >&2
	@.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION) >&2

# The environment, exactly as uv.lock pins it.
.venv/.synced: pyproject.toml uv.lock | $(UV)
	@echo "installing the locked environment into .venv/" >&2
	@$(UV) sync --frozen >&2
	@touch $@

$(HARNESS)/node_modules/.installed: $(HARNESS)/package.json $(HARNESS)/package-lock.json
	cd $(HARNESS) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(TS_HARNESS)/node_modules/.installed: $(TS_HARNESS)/package.json $(TS_HARNESS)/package-lock.json
	cd $(TS_HARNESS) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# better-sqlite3 compiles itself (about a minute) when its prebuilt binary cannot be downloaded.
$(WEB)/node_modules/.installed: $(WEB)/package.json $(WEB)/package-lock.json
	cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error || { echo "error: npm ci failed in $(WEB);" \
	  "if better-sqlite3 failed to build, it needs g++, make and python3 (apt-get install g++ make python3)"; exit 1; }
	@touch $@

# Debian's chromium for the browser tests, installed when it is missing and we may.
chromium:
	@command -v chromium >/dev/null || [ -n "$$CHROMIUM" ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests" >&2; \
	    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2; \
	  else \
	    echo "warning: chromium is not installed (sudo apt-get install chromium); the browser tests will skip" >&2; \
	  fi; }

# A fresh secret for local use; never committed (.gitignore).
.env:
	@echo "BETTER_AUTH_SECRET=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(48))')" > .env
	@echo "wrote .env with a freshly generated BETTER_AUTH_SECRET" >&2

# serve checks the port first, then migrates, then serves.
run: .venv/.synced .env
	@$(RUN) todo-api serve --host $(HOST) --port $(PORT) --migrate

# The API (on demo.db) and the web app, configured for each other; Ctrl-C stops both.
demo: .venv/.synced .env $(WEB)/node_modules/.installed
	@command -v node >/dev/null || { echo "error: make demo needs Node.js 20+ and npm (apt-get install nodejs npm)"; exit 1; }
	@TODO_API="$(RUN) todo-api" API_PORT=$(PORT) WEB_PORT=$(WEB_PORT) bash $(WEB)/demo.sh

# A development token for USER (default: you), signed with the secret in .env.
token: .venv/.synced .env
	@$(RUN) todo-api token --user-id "$(USER)"

migrate: .venv/.synced
	$(RUN) todo-api migrate

test: lint typecheck pytest

lint: .venv/.synced
	$(RUN) ruff check .
	$(RUN) ruff format --check .

typecheck: .venv/.synced
	$(RUN) mypy

pytest: .venv/.synced $(INTEROP_DEPS)
	$(RUN) pytest $(PYTEST_ARGS)

# The inner loop: ruff, mypy and the in-process tests (both databases), without the tests
# that start processes, need Node or a browser. `make test` still runs everything.
test-fast: lint typecheck .venv/.synced
	$(RUN) pytest -m "not processes and not node and not browser" $(PYTEST_ARGS)

# Not part of `make test`: the API against bench/ceiling.py under wrk, on a PostgreSQL
# database of its own (BENCH_ADMIN_URL, default postgresql://postgres@127.0.0.1:5432/postgres).
bench: .venv/.synced
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(RUN) python -m bench.run $(BENCH_ARGS)
	$(RUN) python -m bench.streams

# Not part of `make test` (root, podman, a few minutes; CI does not run it): builds the images
# exactly as the Containerfiles say, then runs the image, compose.yaml and the Kubernetes
# manifests here against this machine's PostgreSQL (deploy/tests/, README "Deploying").
image-test: .venv/.synced
	bash deploy/local/setup.sh
	$(UV) run --frozen --group deploy pytest deploy/tests -v -s -p no:cacheprovider $(PYTEST_ARGS)

format: .venv/.synced
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

clean:
	rm -rf .venv .tools .mypy_cache .ruff_cache .pytest_cache

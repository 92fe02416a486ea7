# Two commands do all set-up on a fresh machine with Python 3.11: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed-stamp
FAST := not browser and not reliability

PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: install lock audit check-deploy migrate run test test-browser test-reliability \
	test-miniprogram lint format bench clean

install: $(STAMP)

# Exactly the locked versions, each checked against its hash, then this project on top of them
# (no dependency of its own is resolved again).
$(STAMP): pyproject.toml requirements/dev.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --require-hashes -r requirements/dev.lock
	$(PIP) --no-deps -e .
	@touch $(STAMP)

# Re-resolve the lock files after a change to pyproject.toml; existing pins are kept unless
# `make lock UPGRADE=--upgrade`. The runtime, browser and bench locks are constrained by the
# dev lock, so a package has one version in all of them. (uv: only for writing the locks.)
UV_VERSION := 0.13.9
COMPILE = $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 \
	--generate-hashes --quiet $(UPGRADE)
lock: install
	$(PIP) uv==$(UV_VERSION)
	$(COMPILE) --extra dev -o requirements/dev.lock
	$(COMPILE) -c requirements/dev.lock -o requirements/runtime.lock
	$(COMPILE) --extra dev --extra browser -c requirements/dev.lock -o requirements/browser.lock
	$(COMPILE) --extra dev --extra bench -c requirements/dev.lock -o requirements/bench.lock

# Known vulnerabilities in every locked package. --strict: a package that could not be looked
# up fails the run instead of passing silently (see README: from this machine it cannot).
audit: install
	$(BIN)/pip-audit --strict --progress-spinner off --disable-pip --require-hashes \
		-r requirements/dev.lock -r requirements/browser.lock -r requirements/bench.lock

# The Kubernetes manifests against the API's schemas (strict: no unknown field), and the
# Dockerfile with hadolint. No Docker engine runs here: the image is linted, never built.
check-deploy: install
	$(BIN)/kubernetes-validate --strict --quiet deploy/kubernetes/*.yaml
	$(BIN)/hadolint Dockerfile
	sh -n deploy/entrypoint.sh

migrate: install
	@mkdir -p var
	$(BIN)/alembic upgrade head

run: migrate
	$(BIN)/python -m app.cli seed-demo
	WXPAY_SELF_BASE_URL="$${WXPAY_SELF_BASE_URL:-http://$(HOST):$(PORT)}" \
		$(BIN)/uvicorn app.main:app --host $(HOST) --port $(PORT) --no-proxy-headers --no-access-log

LOCAL_PG := postgresql+asyncpg://postgres@127.0.0.1:5432/test

# The whole fast suite on SQLite, then again on PostgreSQL: WXPAY_TEST_DATABASE_URL, or else the
# local server (127.0.0.1:5432, user postgres, database test) when one answers there. Without
# either the PostgreSQL pass is skipped, loudly; under CI=true that fails the run, since a green
# CI must mean both databases passed. (The suite ignores any other WXPAY_* and .env itself.)
test: install
	env -u WXPAY_TEST_DATABASE_URL $(BIN)/pytest -m "$(FAST)"
	@url="$${WXPAY_TEST_DATABASE_URL:-}"; \
	if [ -z "$$url" ] && $(BIN)/python -c "import socket; socket.create_connection(('127.0.0.1', 5432), 2)" 2>/dev/null; then \
		url="$(LOCAL_PG)"; fi; \
	skipped="PostgreSQL pass SKIPPED: WXPAY_TEST_DATABASE_URL is unset and nothing answers on 127.0.0.1:5432"; \
	if [ -n "$$url" ]; then \
		echo "== PostgreSQL pass ($${url%%@*}@…) =="; WXPAY_TEST_DATABASE_URL="$$url" $(BIN)/pytest -m "$(FAST)"; \
	elif [ "$${CI:-}" = true ] || [ "$${CI:-}" = 1 ]; then \
		echo "== FAILED: $$skipped, and CI=$$CI requires it ==" >&2; exit 1; \
	else echo "== $$skipped; only SQLite was tested =="; fi

test-browser: install
	$(PIP) --require-hashes -r requirements/browser.lock
	$(BIN)/pytest -m browser

# Several server processes on PostgreSQL, the simulator injecting faults (a few minutes).
test-reliability: install
	WXPAY_TEST_DATABASE_URL="$${WXPAY_TEST_DATABASE_URL:-$(LOCAL_PG)}" \
		$(BIN)/pytest -m reliability tests/reliability

# The example mini-program (examples/miniprogram): its client module and pages, run by Node's
# test runner against the service on free ports (temporary SQLite, demo products, the simulator
# mounted; v2 MD5, v2 HMAC-SHA256 and v3 RSA). Needs `node` (18 or newer); about a minute.
test-miniprogram: install
	$(BIN)/python -m tests.miniprogram.harness

lint: install
	$(BIN)/ruff check app tests bench alembic examples
	$(BIN)/ruff format --check app tests bench alembic examples
	$(BIN)/mypy app examples/webhook_receiver.py

format: install
	$(BIN)/ruff format app tests bench alembic examples
	$(BIN)/ruff check --fix app tests bench alembic examples

bench: install
	$(PIP) --require-hashes -r requirements/bench.lock
	$(BIN)/python bench/protocol.py
	$(BIN)/python bench/notify.py
	$(BIN)/python bench/create_order.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

# Two commands do all set-up on a fresh machine with Python 3.11: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed-stamp
FAST := not browser and not reliability

.PHONY: install migrate run test test-browser test-reliability lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

migrate: install
	@mkdir -p var
	$(BIN)/alembic upgrade head

run: migrate
	$(BIN)/python -m app.cli seed-demo
	WXPAY_SELF_BASE_URL="$${WXPAY_SELF_BASE_URL:-http://$(HOST):$(PORT)}" \
		$(BIN)/uvicorn app.main:app --host $(HOST) --port $(PORT) --no-proxy-headers

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
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,browser]'
	$(BIN)/pytest -m browser

# Several server processes on PostgreSQL, the simulator injecting faults (a few minutes).
test-reliability: install
	WXPAY_TEST_DATABASE_URL="$${WXPAY_TEST_DATABASE_URL:-$(LOCAL_PG)}" \
		$(BIN)/pytest -m reliability tests/reliability

lint: install
	$(BIN)/ruff check app tests bench alembic examples
	$(BIN)/ruff format --check app tests bench alembic examples
	$(BIN)/mypy app examples/webhook_receiver.py

format: install
	$(BIN)/ruff format app tests bench alembic examples
	$(BIN)/ruff check --fix app tests bench alembic examples

bench: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(BIN)/python bench/protocol.py
	$(BIN)/python bench/notify.py
	$(BIN)/python bench/create_order.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

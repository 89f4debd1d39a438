# Two commands for a fresh machine: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DISTS := dispatch_core dispatch_plugins/sqlite dispatch_plugins/postgres dispatch_plugins/redis dispatch_plugins/admin dispatch_plugins/otel dispatch_plugins/relay adapters/flask adapters/starlette adapters/celery

.PHONY: setup demo serve test chaos lint typecheck bench wheels wheel-check clean

$(STAMP): requirements-dev.txt dispatch_core/pyproject.toml $(wildcard dispatch_plugins/*/pyproject.toml) $(wildcard adapters/*/pyproject.toml)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	# arq (a benchmark peer) pins redis<6, which Celery's kombu cannot share: it runs on ours.
	$(BIN)/python -m pip install --quiet --no-deps 'arq==0.28.0'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv with every distribution installed editable

demo: $(STAMP)  ## run the demo app's jobs through a worker on SQLite
	$(BIN)/python examples/demo.py

serve: $(STAMP)  ## the dashboard and admin API on the demo app, with a worker and a one-off token
	$(BIN)/dispatch serve examples.demo_app:engine --worker --dev-token

test: $(STAMP)  ## run the whole test suite
	$(BIN)/python -m pytest

chaos: $(STAMP)  ## the chaos suite alone (SQLite, a private PostgreSQL and a private Redis); DISPATCH_CHAOS_SEED=N replays a run
	DISPATCH_TEST_CHAOS_SEED=$${DISPATCH_CHAOS_SEED:-$$DISPATCH_TEST_CHAOS_SEED} $(BIN)/python -m pytest tests/chaos -p no:cacheprovider -v

lint: $(STAMP)  ## ruff and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy dispatch_core/src dispatch_plugins/sqlite/src dispatch_plugins/postgres/src dispatch_plugins/redis/src dispatch_plugins/admin/src dispatch_plugins/otel/src dispatch_plugins/relay/src adapters/flask/src adapters/starlette/src adapters/celery/src bench tests/typing tests/adapters

bench: $(STAMP)  ## Dispatch (memory, SQLite) against Huey, same machine, same run
	$(BIN)/python -m bench

wheels: $(STAMP)  ## build every distribution's wheel into dist/
	rm -rf dist
	for d in $(DISTS); do $(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist ./$$d || exit 1; done

wheel-check: wheels  ## install core + each store plugin from the wheel files alone into fresh venvs
	bash scripts/check_wheels.sh

clean:
	rm -rf $(VENV) dist build .demo .pytest_cache .mypy_cache .ruff_cache

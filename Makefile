# Two commands for a fresh machine: `make demo` and `make test`. Each sets up what it needs first.
#
# `make test` (and setup, lint, bench) use .venv: every distribution editable plus the dev tools,
# at the exact versions of requirements-dev.txt (the lock; `make lock` refreshes it).
# `make demo` and `make serve` use .venv-demo: only the runtime distributions they run.
# `make test-latest` is the canary: .venv-latest with the newest releases the ranges allow.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
REQUIREMENTS ?= requirements-dev.txt
STAMP := $(VENV)/.installed
DEMO_VENV := .venv-demo
DEMO_BIN := $(DEMO_VENV)/bin
DISTS := dispatch_core dispatch_plugins/sqlite dispatch_plugins/postgres dispatch_plugins/redis dispatch_plugins/admin dispatch_plugins/otel dispatch_plugins/webhooks adapters/flask adapters/starlette adapters/celery
DIST_PYPROJECTS := $(foreach d,$(DISTS),$(d)/pyproject.toml)
# arq, a benchmark peer, pins redis<6, which Celery's kombu cannot share: it runs on ours.
ARQ := arq==0.28.0

ifeq ($(REQUIREMENTS),requirements-dev.txt)
# The lock names every package: install exactly it, and fail if anything is missing.
RESOLVE := --no-deps
else
# The canary: let pip resolve the ranges, taking the newest release of everything.
RESOLVE := --upgrade --upgrade-strategy eager
endif

.PHONY: setup demo serve test test-latest chaos lint bench lock wheels wheel-check clean

$(STAMP): $(REQUIREMENTS) $(DIST_PYPROJECTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(RESOLVE) -r $(REQUIREMENTS)
	# The distributions, editable, built by the hatchling just installed (no download).
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation $(foreach d,$(DISTS),-e ./$(d))
	$(BIN)/python -m pip check
	$(BIN)/python -m pip install --quiet --no-deps '$(ARQ)'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv: every distribution editable, the dev tools at the locked versions

lock: $(STAMP)  ## resolve requirements-dev.in into requirements-dev.txt, taking the newest releases
	$(BIN)/uv pip compile requirements-dev.in --output-file requirements-dev.txt --universal \
	  --python-version 3.11 --upgrade --quiet --custom-compile-command "make lock" \
	  $(foreach d,$(DISTS),--no-emit-package $(shell sed -n 's/^name = "\(.*\)"/\1/p' $(d)/pyproject.toml))

# The demo runs on dispatch-core and dispatch-sqlite alone; their dependencies at the lock's
# versions. `make serve` adds dispatch-admin.
$(DEMO_VENV)/.installed: requirements-dev.txt dispatch_core/pyproject.toml dispatch_plugins/sqlite/pyproject.toml
	test -x $(DEMO_BIN)/python || $(PYTHON) -m venv $(DEMO_VENV)
	PIP_CONSTRAINT=requirements-dev.txt $(DEMO_BIN)/python -m pip install --quiet \
	  -e ./dispatch_core -e ./dispatch_plugins/sqlite
	touch $@

$(DEMO_VENV)/.admin: $(DEMO_VENV)/.installed dispatch_plugins/admin/pyproject.toml
	PIP_CONSTRAINT=requirements-dev.txt $(DEMO_BIN)/python -m pip install --quiet -e ./dispatch_plugins/admin
	touch $@

demo: $(DEMO_VENV)/.installed  ## run the demo app's jobs, workflows and cron through a worker on SQLite
	$(DEMO_BIN)/python examples/demo.py

serve: $(DEMO_VENV)/.admin  ## the dashboard on the demo's database (run `make demo` first), with a worker
	$(DEMO_BIN)/dispatch serve examples.demo_app:engine --worker --dev-token

test: $(STAMP)  ## run the whole test suite
	$(BIN)/python -m pytest

test-latest:  ## the canary: lint and test in .venv-latest, built with the newest allowed releases
	rm -rf .venv-latest
	$(MAKE) VENV=.venv-latest REQUIREMENTS=requirements-dev.in lint test

chaos: $(STAMP)  ## the chaos suite alone (SQLite, a private PostgreSQL and a private Redis); DISPATCH_CHAOS_SEED=N replays a run
	DISPATCH_TEST_CHAOS_SEED=$${DISPATCH_CHAOS_SEED:-$$DISPATCH_TEST_CHAOS_SEED} $(BIN)/python -m pytest tests/chaos -p no:cacheprovider -v

lint: $(STAMP)  ## ruff and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(foreach d,$(DISTS),$(d)/src) bench tests/typing tests/adapters

bench: $(STAMP)  ## Dispatch against its peers (Huey, Procrastinate, Celery, arq, DBOS), same machine, same run
	$(BIN)/python -m bench

wheels: $(STAMP)  ## build every distribution's wheel into dist/ (a wheelhouse for pip --find-links)
	rm -rf dist
	for d in $(DISTS); do $(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir dist ./$$d || exit 1; done

wheel-check: wheels  ## run the README's Install commands in fresh venvs, and a job through each
	bash scripts/check_wheels.sh

clean:
	rm -rf $(VENV) $(DEMO_VENV) .venv-latest dist build .demo .pytest_cache .mypy_cache .ruff_cache

# nightshift: every command a user needs. `make help` lists them.
SHELL := /bin/bash
PY := .venv/bin/python
# uv on PATH if there is one; else a pinned uv that tools/get_uv.py fetches with the standard
# library alone (a distribution's python3 refuses `pip install`, PEP 668, or has no pip).
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)

.PHONY: help setup setup-dev demo test test-fast test-slow test-replay test-compose compose-images lint format up down status bench bench-stages clean bench-training bench-gate bench-compose

help:  ## list the commands
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(UV):
	python3 tools/get_uv.py $(dir $(UV))

# What runs nightshift (CPU XGBoost: the `cpu` extra), then the test and lint tools beside it
# for the targets that need them: `make demo` downloads no test tools.
.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --extra cpu --no-dev
	@# uv compiles the dependencies' bytecode (pyproject's [tool.uv]); this compiles nightshift's.
	$(PY) -m compileall -q include dags plugins
	@touch $@

.venv/.synced-dev: .venv/.synced
	$(UV) sync --frozen --extra cpu
	@touch $@

setup: .venv/.synced  ## create .venv from uv.lock (Airflow home goes in .airflow/, ignored by git)

setup-dev: .venv/.synced-dev  ## setup, plus the test and lint tools

demo: setup  ## one nightly run under the real Airflow scheduler; prints the report path (DATE=, KEEP=1)
	.venv/bin/nightshift demo $(if $(DATE),--date $(DATE)) $(if $(KEEP),--keep-running)

# The test targets run two test modules at a time (pytest-xdist): each module whole on one
# worker, so its Airflow or compose stack starts once; the compose and slow tiers handed out
# first (tests/conftest.py). TEST_WORKERS=0 runs everything in this one process.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: setup-dev  ## the whole suite: unit, DAG integrity and e2e (incl. the real-scheduler tier)
	$(PYTEST)

test-fast: setup-dev  ## everything except the slow real-scheduler and compose tiers
	$(PYTEST) -m "not slow and not compose"

test-slow: setup-dev  ## only the slow tier: real scheduler, api-server, dag-processor, backfills
	$(PYTEST) -m slow

test-replay: setup-dev  ## only the replay, at 30 dates: backfilled forward, again and backwards (test-slow runs 8)
	NIGHTSHIFT_REPLAY_DATES=$${NIGHTSHIFT_REPLAY_DATES:-30} $(PY) -m pytest -m replay

test-compose: setup-dev  ## only the compose tier: docker-compose.yaml started for real (needs Docker)
	$(PYTEST) -m compose

compose-images:  ## build local stand-ins for Docker Hub's images (Postgres, S3, Python base)
	bash compose/stand-ins/build.sh

lint: setup-dev  ## ruff (lint + format check) and mypy on include/
	.venv/bin/ruff check include dags plugins tests bench compose tools
	.venv/bin/ruff format --check include dags plugins tests bench compose tools
	.venv/bin/mypy

format: setup-dev  ## apply ruff's formatting and safe fixes
	.venv/bin/ruff check --fix include dags plugins tests bench compose tools
	.venv/bin/ruff format include dags plugins tests bench compose tools

up: setup  ## start Airflow (api-server, scheduler, dag-processor, triggerer) and Dask locally
	.venv/bin/nightshift up

down:  ## stop everything `make up` started, by pid
	@if [ -x .venv/bin/nightshift ]; then .venv/bin/nightshift down; fi

status: setup  ## list the running services and their pids
	.venv/bin/nightshift status

bench: setup-dev  ## P1-P4, the cost curves, P9 and SGD against baselines measured in the same run (about 100 min on 2 cores); writes bench/RESULTS.md
	$(PY) -u bench/scale.py all
	$(PY) -u bench/curves.py
	$(MAKE) bench-training
	$(MAKE) bench-gate
	$(PY) bench/results.py

bench-training: setup-dev  ## training in bounded memory: P9 (a window 10x the workers' memory), SGD on 1/2/4 workers, the capacity model (about 10 min; bench/out/)
	$(PY) -u bench/p9.py
	$(PY) -u bench/sgd.py
	$(PY) bench/capacity.py

bench-gate: setup-dev  ## the champion gate as a classifier of simulated nights, before and now (about 6 min; bench/out/gate.json)
	$(PY) -u bench/gate.py

bench-compose: setup-dev  ## P6: a 1M-row night on docker-compose vs the embedded default, with the profile (needs Docker; about 25 min; bench/out/compose.json)
	$(PY) -u bench/compose.py --rows 1000000 --window 7

bench-stages: setup-dev  ## seconds per stage of one in-process nightly run (bench/stages.py)
	$(PY) -u bench/stages.py

clean: down  ## remove the local Airflow home, data and virtualenv
	rm -rf .airflow data .venv .tools

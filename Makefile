# machine-health: the README's commands. `make run` and `make test` install whatever is missing.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
AIRFLOW_VENV := .venv-airflow
BIN := $(VENV)/bin
AIRFLOW_BIN := $(AIRFLOW_VENV)/bin

# Stamps keyed on the content of what defines each environment: an unchanged environment
# makes `make install` a no-op; any change to the pins reinstalls.
APP_HASH := $(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
AIRFLOW_HASH := $(shell cat requirements-airflow.txt | sha256sum | cut -c1-16)
APP_STAMP := $(VENV)/.installed-$(APP_HASH)
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed-$(AIRFLOW_HASH)

.PHONY: help install run test test-fast lint format bench data clean freeze helm-check promtool wrk \
	bwrap cluster-check

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(APP_STAMP): requirements.txt pyproject.toml
	@echo "==> installing the serving/training environment into $(VENV)"
	rm -f $(VENV)/.installed-*
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import machine_health, pymongo, mlflow, tensorflow, fastapi, streamlit"
	touch $@

$(AIRFLOW_STAMP): requirements-airflow.txt
	@echo "==> installing the orchestration environment into $(AIRFLOW_VENV)"
	rm -f $(AIRFLOW_VENV)/.installed-*
	test -x $(AIRFLOW_BIN)/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_BIN)/python -m pip install -q --upgrade pip
	$(AIRFLOW_BIN)/python -m pip install -q -r requirements-airflow.txt
	$(AIRFLOW_BIN)/airflow version >/dev/null
	touch $@

install: $(APP_STAMP) $(AIRFLOW_STAMP)  ## create/refresh both pinned environments (no-op when unchanged)

run: install  ## run the embedded stack in the foreground (Ctrl-C stops everything)
	$(BIN)/machine-health stack

test: install helm-check promtool bwrap  ## run the whole test suite (Helm checks and cluster check included)
	$(CLUSTER_PYTEST)
	$(BIN)/python -m pytest --ignore=tests/cluster

bwrap:  ## bubblewrap and iproute2 (Debian): the cluster check's container sandbox and pod network
	bash scripts/install_debian_tool.sh bwrap bubblewrap
	bash scripts/install_debian_tool.sh ip iproute2

# The chart's workloads and the DAGs' step pods run under their manifests' constraints
# (docs/CLUSTER-CHECK.md), in a network namespace of their own: `unshare --net`.
CLUSTER_PYTEST := unshare --net -- $(BIN)/python -m pytest tests/cluster -p no:cacheprovider
cluster-check: install helm-check bwrap  ## run every chart workload and step pod as the cluster would
	$(CLUSTER_PYTEST)

promtool:  ## Prometheus' rule checker (Debian's prometheus package), for the alert-rule tests
	bash scripts/install_debian_tool.sh promtool prometheus

wrk:  ## the HTTP load generator of the API benchmark (Debian's wrk package)
	bash scripts/install_debian_tool.sh wrk wrk

helm-check: install  ## helm lint + template + schema validation of the chart (real helm binary)
	bash scripts/helm_check.sh

test-fast: install helm-check promtool bwrap  ## tests without the slow model-training ones
	$(BIN)/python -m pytest -m "not slow" --ignore=tests/cluster

lint: install  ## ruff check + format check, hadolint on every Dockerfile
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	bash scripts/lint_docker.sh

format: install  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install wrk  ## run the benchmarks; figures go to docs/BENCHMARKS.md
	$(BIN)/python -m bench

data:  ## download the public data sets into data/ and verify their sha256 (needs internet)
	$(PYTHON) scripts/fetch_data.py --dest data

freeze:  ## re-pin both environments from what is installed
	{ echo "# Serving / training / UI / test environment: pip freeze of a working install."; \
	  echo "# Regenerate: make freeze"; $(BIN)/pip freeze --exclude-editable | grep -v '^machine-health'; } > requirements.txt
	{ echo "# Orchestration environment (Airflow 3.3 + cncf.kubernetes): pip freeze of a working install."; \
	  echo "# Airflow never imports ML code. Regenerate: make freeze"; $(AIRFLOW_BIN)/pip freeze --exclude-editable; } > requirements-airflow.txt

clean:  ## remove both environments and local state (var/)
	-$(BIN)/machine-health store stop 2>/dev/null
	rm -rf $(VENV) $(AIRFLOW_VENV) var .pytest_cache .ruff_cache

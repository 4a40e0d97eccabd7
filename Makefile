# churnflow — every routine is a target here. Start with `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed
TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
REGISTRY ?= churnflow

# torch is pinned to 2.13.0 and must be its CPU build locally. A machine whose pip is set up
# with find-links (a wheel folder) gets it from there; elsewhere from PyTorch's CPU index.
FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell pip config get global.find-links 2>/dev/null))
ifneq ($(strip $(FIND_LINKS)),)
TORCH_SOURCE := $(foreach d,$(FIND_LINKS),--find-links $(d))
else
TORCH_SOURCE := --extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match
endif

.PHONY: help setup demo up down status test lint format step-docs bench bench-features bench-history bench-backfill bench-train bench-score lock image-requirements images clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "churnflow needs Python 3.11 (found " + sys.version.split()[0] + "); set PYTHON=/path/to/python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==$(UV_VERSION)
	$(UV) pip install --python $(PY) --no-deps $(TORCH_SOURCE) -r requirements.txt
	$(UV) pip install --python $(PY) --no-deps -e .
	$(UV) pip check --python $(PY)
	touch $(STAMP)

setup: $(STAMP) ## create .venv from the pinned requirements.txt (only when missing or stale)

demo: $(STAMP) ## start the local stack, generate data, backfill the DAGs, print a summary [DAYS=n]
	$(PY) -m devstack demo $(if $(DAYS),--days $(DAYS))

up: $(STAMP) ## start the local stack (Airflow, MLflow, embedded PostgreSQL); reuses what runs
	$(PY) -m devstack up

down: ## stop everything the local stack started
	@if [ -x $(PY) ]; then $(PY) -m devstack down; fi

status: ## which local services run
	$(PY) -m devstack status

lint: $(STAMP) ## ruff lint and format check, hadolint on the three Dockerfiles
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint --config .hadolint.yaml images/*/Dockerfile

format: $(STAMP) ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

step-docs: $(STAMP) ## regenerate the task docs (plugins/churnflow_airflow/step_docs.json) from the CLI's help
	PYTHONPATH=plugins $(PY) -m churnflow_airflow.step_docs

test: lint ## lint, then the whole test suite (unit, DAG, pod specs, end to end)
	$(VENV)/bin/pytest

bench: $(STAMP) ## DAG parse benchmark (figures and ratios measured side by side)
	$(PY) bench/parse.py

bench-features: $(STAMP) ## one day's feature build on Spark vs DuckDB, 10M orders (minutes)
	$(PY) bench/features.py

bench-history: $(STAMP) ## a load of order history (ingest --through): one Spark pass a month vs a pass a day (minutes)
	$(PY) bench/history.py

bench-backfill: $(STAMP) ## the four daily DAGs backfilled together through the scheduler: s/day, critical path, CPU (15 min)
	$(PY) bench/backfill.py

bench-train: $(STAMP) ## churn model fit time, Lightning and sklearn, 10k vs 1M examples, CPU (+ GPU if any) (minutes)
	$(PY) bench/train.py

bench-score: $(STAMP) ## batch scoring of 1M rows: Spark job vs in-process predict_proba, both model types (minutes)
	$(PY) bench/score.py

# The current pins seed the resolution (torch under its local +cpu name), so adding one package
# does not move the others; UPGRADE=1 re-resolves everything to the newest versions.
lock: $(STAMP) ## re-resolve requirements.in into the pinned requirements.txt [UPGRADE=1]
	sed -e 's/^torch==2.13.0$$/torch==2.13.0+cpu/' requirements.txt > requirements.txt.new
	$(UV) pip compile $(if $(UPGRADE),--upgrade) requirements.in --python-version 3.11 $(TORCH_SOURCE) --no-header -o requirements.txt.new
	{ echo "# Pinned lock of requirements.in for Python 3.11 (make lock). torch is the CPU build where"; \
	  echo "# find-links offers one (see README, 'Installing')."; \
	  sed -e 's/^torch==2.13.0+cpu/torch==2.13.0/' requirements.txt.new; } > requirements.txt
	rm requirements.txt.new

# Each image installs only its own packages: images/<name>/requirements.in lists them, and this
# writes images/<name>/requirements.txt, their closure at the lock's pins (run it after `make
# lock`; tests/k8s/test_image_requirements.py fails while a file is stale).
image-requirements: $(STAMP) ## write each image's requirements.txt from its requirements.in and the lock
	$(PY) images/image_requirements.py

images: ## build the three images (needs Docker), tagged $(REGISTRY)/churnflow-<name>:$(TAG)
	for image in airflow spark train; do \
	  docker build -f images/$$image/Dockerfile --build-arg GIT_COMMIT=$$(git rev-parse HEAD) -t $(REGISTRY)/churnflow-$$image:$(TAG) . || exit 1; \
	done

clean: down ## stop the stack and delete all local state (.churnflow/)
	rm -rf .churnflow

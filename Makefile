# govlake — `make help` lists the targets. Every target creates or updates .venv itself.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
AIRFLOW_PORT ?= 8080

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,airflow,bench]"
	@touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create or update .venv with govlake and its development tools

.PHONY: demo
demo: $(STAMP) ## Generate department extracts, ingest all four themes, print the summary
	$(BIN)/govlake demo

.PHONY: demo-s3
demo-s3: $(STAMP) ## The demo with warehouse and landing zone on a local S3 server (SeaweedFS)
	$(BIN)/govlake demo-s3

.PHONY: airflow
airflow: $(STAMP) ## Airflow standalone on 127.0.0.1:8080 (AIRFLOW_PORT=…) with the project's DAGs (Ctrl-C stops it)
	$(BIN)/govlake airflow --port $(AIRFLOW_PORT)

.PHONY: test
test: $(STAMP) ## Run the whole test suite (unit, catalogue, end to end)
	$(BIN)/python -m pytest -p no:cacheprovider

.PHONY: bench
bench: $(STAMP) ## Benchmark: ingest, merge, sharing reads and load against their floors and a peer; writes reports/bench/bench.json and bench.png
	$(BIN)/python -m govlake.bench --out reports/bench

.PHONY: check
check: $(STAMP) ## Lint and type-check (ruff + mypy)
	$(BIN)/ruff check src jobs dags expectations tests
	$(BIN)/ruff format --check src jobs dags expectations tests
	$(BIN)/mypy

.PHONY: clean
clean: ## Remove the local lakehouse, landing zone, reports, Airflow home and S3 demo (not .venv)
	rm -rf lakehouse landing reports govlake.db .airflow .demo-s3

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

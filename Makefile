# govlake — `make help` lists the targets. Every target creates or updates .venv itself.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
AIRFLOW_PORT ?= 8080

$(STAMP): pyproject.toml tools/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,airflow]" -e ./tools
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
test: $(STAMP) ## Run the whole test suite (unit, catalogue, end to end), then the pipeline on Sail's local-cluster mode
	$(BIN)/python -m pytest -p no:cacheprovider
	$(MAKE) --no-print-directory test-cluster

# The end-to-end pipeline tests once more with the embedded engine in Sail's local-cluster
# mode: a driver and workers exchanging tasks and shuffle data over RPC, the execution path
# of a Kubernetes deployment. test_engine_mode.py proves the pass ran in that mode.
CLUSTER_TESTS ?= tests/e2e/test_pipeline.py tests/unit/test_engine_mode.py

.PHONY: test-cluster
test-cluster: $(STAMP) ## Run the pipeline tests with GOVLAKE_SAIL_MODE=local-cluster (make test runs it)
	GOVLAKE_SAIL_MODE=local-cluster $(BIN)/python -m pytest -p no:cacheprovider -q $(CLUSTER_TESTS)

# The clock-sensitive tests run once more with the clock faked (libfaketime) to a leap day
# past every holiday calendar govlake has; the deadline tests also to the issue-14 date and
# to a Monday past chinese-calendar's last year (2026 in 1.11.0). S3-backed tests skip
# themselves under a faked clock (the S3 server keeps the real one).
FAKE_DATE ?= 2028-02-29
DATE_TESTS ?= tests/platform/test_requests.py tests/platform/test_requests_api.py tests/platform/test_audit.py \
	tests/unit/test_workdays.py tests/e2e/test_timeliness.py tests/e2e/test_changes.py
DEADLINE_DATES ?= 2026-12-07 2027-01-04
DEADLINE_TESTS ?= tests/platform/test_requests.py tests/unit/test_workdays.py

.PHONY: test-dates
test-dates: $(STAMP) ## Run the clock-sensitive tests on faked dates (needs Debian's faketime)
	@command -v faketime >/dev/null || { echo "faketime is missing: apt-get install faketime" >&2; exit 1; }
	faketime -f "@$(FAKE_DATE) 10:00:00" $(BIN)/python -m pytest -p no:cacheprovider -q $(DATE_TESTS)
	@set -e; for day in $(DEADLINE_DATES); do \
	  echo "faketime -f \"@$$day 10:00:00\" … $(DEADLINE_TESTS)"; \
	  faketime -f "@$$day 10:00:00" $(BIN)/python -m pytest -p no:cacheprovider -q $(DEADLINE_TESTS); \
	done

.PHONY: bench
bench: $(STAMP) ## Benchmark (~15 min): the change cycle on 100 k / 1 M / 10 M rows and in local-cluster mode, the full ingest against its floor and a peer, sharing reads and load; ratios and targets in reports/bench/bench.json and bench.png
	$(BIN)/python -m govlake_tools.bench --out reports/bench

.PHONY: check
check: $(STAMP) ## Lint, type-check, import contracts (floors, no cycles), dead code, dependencies
	$(BIN)/ruff check src jobs dags expectations tests tools
	$(BIN)/ruff format --check src jobs dags expectations tests tools
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/vulture
	$(BIN)/deptry .

.PHONY: clean
clean: ## Remove the local lakehouse, landing zone, reports, Airflow home and S3 demo (not .venv)
	rm -rf lakehouse landing reports govlake.db .airflow .demo-s3

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

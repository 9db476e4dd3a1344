# Two commands for a new user: `make demo` and `make test`.
# Both install into .venv first when it is missing or older than the
# dependency files; Debian tools the tests talk to are installed with apt.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo
SYSTEM_TOOLS := storescu:dcmtk dcmdump:dcmtk dciodvfy:dicom3tools chromium:chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-deps demo model bench airflow-up airflow-down test lint format clean

install: $(STAMP) system-deps

$(STAMP): pyproject.toml setup.py constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# dcmtk (storescu, dcmdump), dicom3tools (dciodvfy) and chromium are real peers in the tests.
system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

# The whole nightly job on synthetic studies, in ./demo, on the embedded SQLite database.
demo: install
	$(BIN)/sciatic demo --dir $(DEMO_DIR)

# Rebuild the shipped phantom model and check it is bit-identical (same CPU architecture and libraries).
model: install
	$(BIN)/python -m sciatic.model.demo_model --out sciatic/model/phantom-cascade.pt --check sciatic/model/phantom-cascade.sha256

# Speed and quality benchmarks: each prints ratios against a baseline run in the same command.
bench: install
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/cpu_runtime.py
	$(BIN)/python benchmarks/quality.py
	$(BIN)/python benchmarks/throughput.py

# A local Airflow (api-server, scheduler, dag-processor, Celery workers for `default` and `gpu`)
# on this machine's PostgreSQL and Redis, to watch the DAGs in the UI (docs/airflow.md).
airflow-up: install
	$(BIN)/python -m tools.airflow_stack up

airflow-down:
	$(BIN)/python -m tools.airflow_stack down

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: install lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) $(DEMO_DIR) .mypy_cache .pytest_cache .ruff_cache .hypothesis

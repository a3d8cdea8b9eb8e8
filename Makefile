# The commands a person types. `demo` and `test` set everything up first, so each is one
# command on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch/torchvision are pinned to the wheels that ship on the project machines.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# Fast-tier test processes: the usable cores, at most 4 (each worker holds about 1 GB).
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; n = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count(); print(min(4, n or 1))")

.PHONY: install demo test test-all bench ui lint format docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/python -m experiments.demo

# Workers take whole test modules (--dist loadscope), so a module's fixtures are built once.
test: install
	$(BIN)/python -m pytest -m "not slow" -q -n $(TEST_WORKERS) --dist loadscope

test-all: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m benchmarks.run

ui: install
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///mlflow.db

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The documentation site (mkdocs.yml, pages in docs/) into site/; --strict fails on any warning
# (a broken link, a missing page, an API reference to a moved function).
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache

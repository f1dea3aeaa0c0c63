# The two set-up commands of the README: `make up` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DB ?= data/demo.duckdb

.PHONY: install up test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/smz up --db $(DB)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/env.py
	$(BIN)/python bench/mcts.py
	$(BIN)/python bench/selfplay.py
	$(BIN)/python bench/learner.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

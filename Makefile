# The two commands of the README. Each creates .venv (Python 3.11) and installs
# selfsup into it first, so a fresh machine needs nothing else.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install quickstart test lint

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed

quickstart: install
	$(BIN)/selfsup pretrain --config configs/quickstart.yaml

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check ssl tests
	$(BIN)/ruff format --check ssl tests

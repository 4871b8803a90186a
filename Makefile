# The two commands of the README. Each creates .venv (Python 3.11) and installs
# selfsup into it first, so a fresh machine needs nothing else.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install quickstart test lint slurm-deps

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

# The daemons of the single-node SLURM cluster that tests/slurm starts (Debian,
# root). Without them those tests skip and say why.
SLURM_PACKAGES := slurmctld slurmd slurm-client munge
slurm-deps:
	command -v slurmctld >/dev/null && command -v munged >/dev/null || { \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y --no-install-recommends $(SLURM_PACKAGES) >/dev/null 2>&1 || \
	  { apt-get update >/dev/null && apt-get install -y --no-install-recommends $(SLURM_PACKAGES) >/dev/null; }; }

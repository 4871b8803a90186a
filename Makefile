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

# The single-node SLURM cluster that tests/slurm starts (Debian, root): every
# binary its fixture runs (REQUIRED in tests/slurm/slurm_cluster.py: the DAEMONS
# and mungekey). The packages are installed when any one is missing, and the
# target fails when they cannot be, or when a binary is still missing after.
SLURM_PACKAGES := slurmctld slurmd slurm-client munge
SLURM_BINARIES := munged slurmctld slurmd sbatch scontrol sinfo scancel squeue mungekey
slurm-deps:
	@missing=""; for b in $(SLURM_BINARIES); do command -v $$b >/dev/null || missing="$$missing $$b"; done; \
	[ -z "$$missing" ] && exit 0; \
	echo "selfsup: SLURM binaries missing:$$missing; installing $(SLURM_PACKAGES)" >&2; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y --no-install-recommends $(SLURM_PACKAGES) >/dev/null 2>&1 || \
	  { apt-get update >/dev/null && apt-get install -y --no-install-recommends $(SLURM_PACKAGES) >/dev/null; } || \
	  { echo "selfsup: apt-get could not install $(SLURM_PACKAGES)" >&2; exit 1; }; \
	missing=""; for b in $(SLURM_BINARIES); do command -v $$b >/dev/null || missing="$$missing $$b"; done; \
	[ -z "$$missing" ] || { echo "selfsup: still missing after installing $(SLURM_PACKAGES):$$missing" >&2; exit 1; }

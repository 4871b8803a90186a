# The two commands of the README. Each creates .venv (Python 3.11) and installs
# selfsup into it first, so a fresh machine needs nothing else.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install quickstart test test-unit lint slurm-deps docs

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed

quickstart: install
	$(BIN)/selfsup pretrain --config configs/quickstart.yaml

# One pytest worker per core (at most 4): most of the suite's time is subprocesses that
# import torch and its libraries on one core. --dist loadfile keeps each test file in one
# worker, so tests/slurm starts one cluster (two on one machine break each other's munge
# credentials). Not loadgroup: with pytest 9 its xdist_group mark is silently ignored
# (pytest-xdist 3.8 renames nodes through Item._nodeid, which pytest 9 no longer reads).
# --no-loadscope-reorder: files in collection order, the subprocess-heavy distributed
# and integration tests first (by default xdist starts with the files of most tests and
# leaves the two-test 2-minute files for a one-worker tail).
test: install
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder

# The documentation site (mkdocs.yml, docs/) into site/ (gitignored). --strict fails on a
# broken link or anchor, a missing include (configs/README.md, launch/README.md and the
# README's walk are included, not copied) or a page left out of the nav.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# The fast loop while editing: tests/unit mirrors the package and starts no process
# (about 2 minutes on 2 cores); `make test` runs everything.
test-unit: install
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadfile tests/unit

lint: install
	$(BIN)/ruff check ssl tests benchmarks
	$(BIN)/ruff format --check ssl tests benchmarks

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

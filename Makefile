# Set-up is idempotent: the virtual environment is rebuilt only when the pins change.
VENV   := .venv
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTHON ?= python3

.PHONY: run test lint system-packages clean

run: $(STAMP)
	$(VENV)/bin/snakemake --cores all

test: $(STAMP) system-packages
	$(VENV)/bin/pytest

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

# One formatter (ruff format, line length 120, pyproject.toml) and snakefmt; ruff and snakemake --lint
# on the embedded config, the .test config and every example config.
lint: $(STAMP)
	$(VENV)/bin/ruff format --check src tests workflow/scripts benchmarks
	$(VENV)/bin/ruff check src tests workflow/scripts benchmarks
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules
	for config in config.yaml .test/config.yaml configs/*.yaml; do \
	  $(VENV)/bin/snakemake --lint --configfile $$config --directory $$(mktemp -d) --snakefile Snakefile || exit 1; \
	done

# The SLURM test runs a real one-node cluster: Debian's slurm-wlm and munge.
system-packages:
	@command -v slurmctld >/dev/null && command -v munged >/dev/null || \
	  ( $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge )

clean:
	rm -rf results logs .snakemake

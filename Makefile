# Set-up is idempotent: the virtual environment is rebuilt only when the pins change.
VENV   := .venv
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTHON ?= python3

.PHONY: run test system-packages clean

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

# The SLURM test runs a real one-node cluster: Debian's slurm-wlm and munge.
system-packages:
	@command -v slurmctld >/dev/null && command -v munged >/dev/null || \
	  ( $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge )

clean:
	rm -rf results logs .snakemake

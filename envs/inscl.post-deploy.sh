#!/usr/bin/env bash
# Snakemake runs this inside the new conda environment: install this checkout's package.
set -euo pipefail
pip install --no-deps -e "$(dirname "$0")/.."

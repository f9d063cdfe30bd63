"""Glue for workflow/scripts/*.py: logging to the rule's log and one-line input errors.

Thread limits need no glue: Snakemake runs every script with OMP_NUM_THREADS (and the MKL/OpenBLAS
equivalents) set to the job's threads, and torch reads them when it is imported.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable

from inscl.core.config import ConfigError
from inscl.core.io import InputError

log = logging.getLogger("inscl")


def setup_logging(log_file: str | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        os.makedirs(os.path.dirname(log_file) or ".", exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", handlers=handlers, force=True
    )


def run_rule(smk, main: Callable) -> None:
    """Run `main(smk)` for a Snakemake `script:`; bad input exits 1 with a single line."""
    setup_logging(smk.log[0] if len(smk.log) else None)
    try:
        main(smk)
    except (InputError, ConfigError) as e:
        log.error("%s", e)
        print(f"inscl error: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception:
        log.exception("rule failed")
        raise

# inscl: continual instruction tuning (InsCL and baselines) from raw benchmark files to a report.
import sys

from snakemake.utils import min_version, validate

from inscl.config import ConfigError, validate_config

min_version("9.0")


configfile: "config.yaml"


try:
    config.update(validate_config(dict(config), source="config"))
except ConfigError as error:
    sys.exit(f"inscl: {error}")
validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/instructions.smk"
include: "workflow/rules/replay.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        "results/report/index.html",
    default_target: True

# inscl: continual instruction tuning (InsCL and baselines) from raw benchmark files to a report.
import os
import sys

from snakemake.utils import min_version

min_version("9.0")

# The package of this checkout, also when Snakemake runs outside the project's environment.
sys.path.insert(0, os.path.join(workflow.basedir, "src"))

from inscl.core.config import ConfigError, validate_config

# The embedded demo, unless --configfile names an experiment (which then replaces it).
if not workflow.configfiles:

    configfile: "config.yaml"


try:
    config.update(validate_config(dict(config), source=", ".join(map(str, workflow.configfiles)) or "config"))
except ConfigError as error:
    sys.exit(f"inscl: {error}")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/instructions.smk"
include: "workflow/rules/replay.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "results/report/index.html",

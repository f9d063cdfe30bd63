"""Rule base_model: the tiny LLaMA built locally, or a reference to a local Hugging Face model."""

from inscl.core import artifacts
from inscl.core.rule import run_rule
from inscl.core.stages import job_settings
from inscl.training.base_model import build_base_model


def main(smk):
    instances = artifacts.read(smk.input[0], "instances", ["split", "instruction", "input", "output"])
    build_base_model(job_settings(smk)["model"], instances, smk.output[0])


run_rule(snakemake, main)  # noqa: F821

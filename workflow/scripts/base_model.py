"""Snakemake adapter: rule base_model -> results/runs/base/model (tiny LLaMA, or a reference to a local HF model)."""
import pandas as pd

from inscl.modeling import build_base_model
from inscl.scripting import run_rule


def main(smk):
    instances = pd.read_parquet(smk.input[0], columns=["split", "instruction", "input", "output"])
    build_base_model(dict(smk.params.model), instances, smk.output[0])


run_rule(snakemake, main)  # noqa: F821

"""Rule distances: W1 between the instruction-embedding sets of every ordered pair of experiment tasks."""
import pandas as pd

from inscl.io import write_parquet
from inscl.scripting import run_rule
from inscl.transport import task_distances, task_point_sets


def main(smk):
    settings = smk.params.distance
    instances = pd.read_parquet(smk.input.instances, columns=["task", "split", "instruction_id"])
    embeddings = pd.read_parquet(smk.input.embeddings, columns=["instruction_id", "vector"])
    point_sets = task_point_sets(
        instances, embeddings, smk.params.tasks, settings["weights"], smk.input.embeddings, smk.input.instances
    )
    table = task_distances(
        point_sets, settings["solver"], settings["sinkhorn_reg"], settings["max_iter"], source=smk.input.embeddings
    )
    write_parquet(table, smk.output[0])


run_rule(snakemake, main)  # noqa: F821

"""Rule distances: W1 between the instruction-embedding sets of every ordered pair of experiment tasks."""

from inscl.core import artifacts
from inscl.core.rule import run_rule
from inscl.core.stages import job_settings
from inscl.replay.distances import task_distances, task_point_sets


def main(smk):
    distance = job_settings(smk)["distance"]
    instances = artifacts.read(smk.input.instances, "instances", ["task", "split", "instruction_id"])
    embeddings = artifacts.read(smk.input.embeddings, "embeddings", ["instruction_id", "vector"])
    point_sets = task_point_sets(
        instances, embeddings, list(smk.params.tasks), distance["weights"], smk.input.embeddings, smk.input.instances
    )
    table = task_distances(
        point_sets, distance["solver"], distance["sinkhorn_reg"], distance["max_iter"], source=smk.input.embeddings
    )
    artifacts.write(table, "distances", smk.output[0])


run_rule(snakemake, main)  # noqa: F821

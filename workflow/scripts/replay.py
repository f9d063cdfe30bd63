"""Rule replay: the replayed training examples of every stage of one (order, method, seed)."""
import pandas as pd
import pyarrow.parquet as pq

from inscl.replay import ReplayData, ReplaySettings, replay_order, write_replay
from inscl.scripting import run_rule

NEEDS = {
    "distances": {"inscl", "inscl_dynamic_only"},
    "insinfo": {"inscl", "inscl_insinfo_only"},
    "embeddings": {"prototype_instruction", "diverse_instruction"},
    "example_embeddings": {"prototype_data"},
}


def main(smk):
    order, method, seed = smk.wildcards.order, smk.wildcards.method, int(smk.wildcards.seed)
    paths = {name: str(getattr(smk.input, name)) for name in ("instances", *NEEDS) if getattr(smk.input, name)}
    frames = {name: pd.read_parquet(paths[name]) for name, methods in NEEDS.items() if method in methods}
    data = ReplayData.from_frames(
        pd.read_parquet(paths["instances"]), smk.params.tasks, **frames, sources=paths
    )
    stages = replay_order(data, ReplaySettings(**smk.params.settings), order, smk.params.tasks, method, seed)
    write_replay(stages, smk.output[0], pq.read_schema(paths["instances"]))


run_rule(snakemake, main)  # noqa: F821

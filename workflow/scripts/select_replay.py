"""Rule select_replay: the replayed examples of every stage of one (order, method, seed), and their composition."""

from inscl.core.rule import run_rule
from inscl.replay.select_replay import select_replay


def main(smk):
    inputs = {name: str(path) for name, path in smk.input.items()}
    select_replay(
        inputs,
        dict(smk.params.settings),
        smk.wildcards.order,
        list(smk.params.tasks),
        smk.wildcards.method,
        int(smk.wildcards.seed),
        smk.output[0],
    )


run_rule(snakemake, main)  # noqa: F821

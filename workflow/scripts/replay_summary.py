"""Rule replay_summary: replay composition table and figure, and the task-distance heat map, of one order."""
from pathlib import Path

import pandas as pd

from inscl.io import write_parquet
from inscl.replay_summary import composition, plot_composition, plot_distances
from inscl.scripting import run_rule


def main(smk):
    order, tasks = smk.wildcards.order, list(smk.params.tasks)
    runs = {}
    for folder in smk.input.replay:  # results/replay/{order}/{method}/seed{seed}
        folder = Path(folder)
        runs[(folder.parent.name, int(folder.name.removeprefix("seed")))] = folder
    table = composition(runs, order, tasks)
    methods = list(dict.fromkeys(method for method, _ in runs))
    plot_composition(table, tasks, methods, smk.output.composition, order)
    plot_distances(pd.read_parquet(smk.input.distances), tasks, smk.output.heatmap, order)
    write_parquet(table, smk.output.table)


run_rule(snakemake, main)  # noqa: F821

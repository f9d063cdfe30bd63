from inscl.report import load_inputs, write_report
from inscl.scripting import run_rule


def main(smk):
    inputs = load_inputs(
        matrix=smk.input.matrix,
        per_run=smk.input.per_run,
        summary=smk.input.summary,
        distances=smk.input.distances,
        composition=list(smk.input.composition),
        tags_raw=smk.input.tags_raw,
        judge=list(getattr(smk.input, "judge", [])),
        general=list(getattr(smk.input, "general", [])),
    )
    write_report(
        inputs,
        orders=dict(smk.params.orders),
        methods=list(smk.params.methods),
        tasks=list(smk.params.tasks),
        html_path=smk.output.html,
        plots_dir=smk.output.plots,
    )


run_rule(snakemake, main)  # noqa: F821

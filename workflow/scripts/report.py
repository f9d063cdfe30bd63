"""Rule report: the HTML report (tables and plots) from the metrics, replay sets and instruction analysis."""

from inscl.core.rule import run_rule


def main(smk):
    from inscl.report.report import load_inputs, write_report

    inputs = load_inputs({name: smk.input.get(name) for name in smk.input.keys()})
    write_report(
        inputs,
        orders=dict(smk.params.orders),
        methods=list(smk.params.methods),
        tasks=list(smk.params.tasks),
        html_path=smk.output.html,
        plots_dir=smk.output.plots,
    )


run_rule(snakemake, main)  # noqa: F821

rule report:
    input:
        unpack(get_report_inputs),
    output:
        html="results/report/index.html",
        plots=report(
            directory("results/report/plots"),
            patterns=["{section,[a-z_]+}--{name}.png"],
            caption="../report/report_plots.rst",
            category="Report",
            subcategory="{section}",
            labels={"figure": "{section}", "name": "{name}"},
        ),
    params:
        orders=stages.canonical(ORDERS),
        methods=METHODS,
        tasks=EXPERIMENT_TASKS,
        code=get_code("report.py"),
    log:
        "logs/report.log",
    resources:
        **get_resources("report"),
    conda:
        "../../envs/inscl.yaml"
    script:
        "../scripts/report.py"

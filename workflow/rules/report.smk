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
    log:
        "logs/report.log",
    conda:
        "../../envs/inscl.yaml"
    resources:
        **get_resources("report"),
    params:
        orders=stages.canonical(ORDERS),
        methods=config["methods"],
        tasks=EXPERIMENT_TASKS,
        code=get_code("report.py"),
    script:
        "../scripts/report.py"

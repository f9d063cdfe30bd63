rule report:
    input:
        unpack(optional_reports),
        matrix="results/metrics/score_matrix.parquet",
        per_run="results/metrics/cl_metrics.parquet",
        summary="results/metrics/summary.parquet",
        distances="results/replay/distances.parquet",
        composition=expand("results/replay/{order}/composition.parquet", order=ORDERS),
        tags_raw="results/instructions/tags_raw.parquet",
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
        orders=ORDERS,
        methods=METHODS,
        tasks=EXPERIMENT_TASKS,
    log:
        "logs/report.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/inscl.yaml"
    script:
        "../scripts/report.py"

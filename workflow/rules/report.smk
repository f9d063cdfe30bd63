def optional_reports(wildcards):
    files = {}
    if config["judge"]["enabled"]:
        files["judge"] = [f"results/judge/{run.removeprefix('results/runs/')}/verdicts.parquet" for run in final_runs()]
    if config["general"]["enabled"]:
        runs = ["base"] + [run.removeprefix("results/runs/") for run in final_runs()]
        files["general"] = [f"results/general/{run}/results.parquet" for run in runs]
    return files


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
    script:
        "../scripts/report.py"

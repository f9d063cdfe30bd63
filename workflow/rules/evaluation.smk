RUN_PATTERN = r"base|multitask/seed\d+|single_task/seed\d+/[^/]+|[^/]+/[^/]+/seed\d+/stage\d+"


def evaluated_tasks(wildcards):
    """A single-task reference is scored on its own task; every other model on all tasks."""
    if wildcards.run.startswith("single_task/"):
        return [wildcards.run.rsplit("/", 1)[1]]
    return EXPERIMENT_TASKS


rule predict:
    input:
        model="results/runs/{run}/model",
        base="results/runs/base/model",
        instances="results/data/instances.parquet",
    output:
        "results/runs/{run}/predictions.parquet",
    params:
        tasks=evaluated_tasks,
        evaluation=config["evaluation"],
        training=config["training"],
        model=config["model"],
    wildcard_constraints:
        run=RUN_PATTERN,
    log:
        "logs/predict/{run}.log",
    benchmark:
        "benchmarks/rules/predict/{run}.tsv"
    threads: config["training"]["threads"]
    resources:
        mem_mb=config["training"]["mem_mb"],
        runtime=120,
        gpu=config["evaluation"]["gpus"],
    script:
        "../scripts/predict.py"


rule score:
    input:
        "results/runs/{run}/predictions.parquet",
    output:
        "results/runs/{run}/scores.parquet",
    params:
        evaluation=config["evaluation"],
    wildcard_constraints:
        run=RUN_PATTERN,
    log:
        "logs/score/{run}.log",
    group:
        "scoring"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/score.py"


rule metrics:
    input:
        chain=[f"{run}/scores.parquet" for run in chain_runs()],
        references=[f"{run}/scores.parquet" for run in reference_runs()],
    output:
        matrix="results/metrics/score_matrix.parquet",
        per_run="results/metrics/cl_metrics.parquet",
        summary="results/metrics/summary.parquet",
    params:
        orders=ORDERS,
        methods=METHODS,
        seeds=SEEDS,
        references=REFERENCES,
    log:
        "logs/metrics.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/metrics.py"


def final_runs():
    return [
        chain_dir(order, method, seed, len(ORDERS[order])) for order in ORDERS for method in METHODS for seed in SEEDS
    ]


rule judge:
    input:
        model="results/runs/{run}/model",
        base="results/runs/base/model",
        prompts=list(config["judge"]["prompt_files"].values()),
    output:
        "results/judge/{run}/verdicts.parquet",
    params:
        judge=config["judge"],
        training=config["training"],
        model=config["model"],
        evaluation=config["evaluation"],
        cache_dir=CACHE,
    wildcard_constraints:
        run=RUN_PATTERN,
    log:
        "logs/judge/{run}.log",
    threads: config["training"]["threads"]
    resources:
        mem_mb=config["training"]["mem_mb"],
        runtime=240,
        gpu=config["evaluation"]["gpus"],
    script:
        "../scripts/judge.py"


rule general_ability:
    input:
        model="results/runs/{run}/model",
        base="results/runs/base/model",
    output:
        "results/general/{run}/results.parquet",
    params:
        general=config["general"],
        training=config["training"],
        model=config["model"],
    wildcard_constraints:
        run=RUN_PATTERN,
    log:
        "logs/general/{run}.log",
    threads: config["training"]["threads"]
    resources:
        mem_mb=config["training"]["mem_mb"],
        runtime=480,
        gpu=config["evaluation"]["gpus"],
    script:
        "../scripts/general_ability.py"

RUN_PATTERN = r"base|multitask/seed\d+|single_task/seed\d+/[^/]+|[^/]+/[^/]+/seed\d+/stage\d+"


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
    conda:
        "../../envs/inscl.yaml"
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
    conda:
        "../../envs/inscl.yaml"
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
    conda:
        "../../envs/inscl.yaml"
    script:
        "../scripts/metrics.py"


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
    benchmark:
        "benchmarks/rules/judge/{run}.tsv"
    threads: config["training"]["threads"]
    resources:
        mem_mb=config["training"]["mem_mb"],
        runtime=240,
        gpu=config["evaluation"]["gpus"],
    conda:
        "../../envs/inscl.yaml"
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
    benchmark:
        "benchmarks/rules/general/{run}.tsv"
    threads: config["training"]["threads"]
    resources:
        mem_mb=config["training"]["mem_mb"],
        runtime=480,
        gpu=config["evaluation"]["gpus"],
    conda:
        "../../envs/inscl.yaml"
    script:
        "../scripts/general_ability.py"

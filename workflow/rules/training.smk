TRAIN_RESOURCES = dict(
    mem_mb=config["training"]["mem_mb"],
    runtime=config["training"]["runtime"],
    gpu=config["training"]["gpus"],
)


rule base_model:
    input:
        "results/data/instances.parquet",
    output:
        directory("results/runs/base/model"),
    params:
        model=config["model"],
    log:
        "logs/base_model.log",
    threads: config["training"]["threads"]
    resources:
        mem_mb=config["training"]["mem_mb"],
        runtime=60,
    conda:
        "../../envs/inscl.yaml"
    script:
        "../scripts/base_model.py"


rule train_stage:
    input:
        previous=previous_model,
        base="results/runs/base/model",
        replay="results/replay/{order}/{method}/seed{seed}",
        instances="results/data/instances.parquet",
    output:
        model=directory("results/runs/{order}/{method}/seed{seed}/stage{stage}/model"),
        train_log="results/runs/{order}/{method}/seed{seed}/stage{stage}/train_log.parquet",
    params:
        tasks=lambda wildcards: [ORDERS[wildcards.order][int(wildcards.stage) - 1]],
        stage=lambda wildcards: int(wildcards.stage),
        epoch_slot=lambda wildcards: [int(wildcards.stage) - 1, len(ORDERS[wildcards.order])],
        checkpoints=lambda wildcards: f"results/runs/{wildcards.order}/{wildcards.method}/seed{wildcards.seed}/stage{wildcards.stage}/checkpoints",
        training=config["training"],
        model=config["model"],
    log:
        "logs/train/{order}/{method}/seed{seed}/stage{stage}.log",
    benchmark:
        "benchmarks/rules/train/{order}/{method}/seed{seed}/stage{stage}.tsv"
    threads: config["training"]["threads"]
    resources:
        **TRAIN_RESOURCES,
    conda:
        "../../envs/inscl.yaml"
    script:
        "../scripts/train.py"


rule train_multitask:
    input:
        previous="results/runs/base/model",
        base="results/runs/base/model",
        instances="results/data/instances.parquet",
    output:
        model=directory("results/runs/multitask/seed{seed}/model"),
        train_log="results/runs/multitask/seed{seed}/train_log.parquet",
    params:
        tasks=EXPERIMENT_TASKS,
        stage=1,
        epoch_slot=None,
        checkpoints="results/runs/multitask/seed{seed}/checkpoints",
        training=config["training"],
        model=config["model"],
    log:
        "logs/train/multitask/seed{seed}.log",
    benchmark:
        "benchmarks/rules/train/multitask/seed{seed}.tsv"
    threads: config["training"]["threads"]
    resources:
        **TRAIN_RESOURCES,
    conda:
        "../../envs/inscl.yaml"
    script:
        "../scripts/train.py"


rule train_single_task:
    input:
        previous="results/runs/base/model",
        base="results/runs/base/model",
        instances="results/data/instances.parquet",
    output:
        model=directory("results/runs/single_task/seed{seed}/{task}/model"),
        train_log="results/runs/single_task/seed{seed}/{task}/train_log.parquet",
    params:
        tasks=lambda wildcards: [wildcards.task],
        stage=1,
        epoch_slot=task_epoch_slot,
        checkpoints="results/runs/single_task/seed{seed}/{task}/checkpoints",
        training=config["training"],
        model=config["model"],
    log:
        "logs/train/single_task/seed{seed}/{task}.log",
    benchmark:
        "benchmarks/rules/train/single_task/seed{seed}/{task}.tsv"
    threads: config["training"]["threads"]
    resources:
        **TRAIN_RESOURCES,
    conda:
        "../../envs/inscl.yaml"
    script:
        "../scripts/train.py"

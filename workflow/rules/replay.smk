rule distances:
    input:
        embeddings="results/instructions/embeddings.parquet",
        instances="results/data/instances.parquet",
        code=module_file("inscl.transport"),
    output:
        "results/replay/distances.parquet",
    params:
        distance=config["distance"],
        tasks=EXPERIMENT_TASKS,
    log:
        "logs/distances.log",
    benchmark:
        "benchmarks/rules/distances.tsv"
    conda:
        "../../envs/inscl.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/distances.py"


rule replay:
    input:
        instances="results/data/instances.parquet",
        insinfo="results/instructions/insinfo.parquet",
        distances="results/replay/distances.parquet",
        embeddings="results/instructions/embeddings.parquet",
        example_embeddings=lambda wildcards: (
            ["results/instructions/example_embeddings.parquet"] if wildcards.method == "prototype_data" else []
        ),
        code=module_file("inscl.replay"),
    output:
        directory("results/replay/{order}/{method}/seed{seed}"),
    params:
        settings=lambda wildcards: replay_settings(wildcards.method),
        tasks=lambda wildcards: ORDERS[wildcards.order],
    log:
        "logs/replay/{order}/{method}/seed{seed}.log",
    conda:
        "../../envs/inscl.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/replay.py"


rule replay_summary:
    input:
        replay=lambda wildcards: expand(
            "results/replay/{order}/{method}/seed{seed}", order=wildcards.order, method=METHODS, seed=SEEDS
        ),
        distances="results/replay/distances.parquet",
        code=module_file("inscl.replay_summary"),
    output:
        table="results/replay/{order}/composition.parquet",
        composition=report(
            "results/replay/{order}/composition.png",
            caption="../report/composition.rst",
            category="Replay",
        ),
        heatmap=report(
            "results/replay/{order}/distances.png", caption="../report/distances.rst", category="Replay"
        ),
    params:
        tasks=lambda wildcards: ORDERS[wildcards.order],
    log:
        "logs/replay/{order}/summary.log",
    conda:
        "../../envs/inscl.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/replay_summary.py"

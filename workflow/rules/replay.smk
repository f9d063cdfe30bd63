rule distances:
    input:
        embeddings=ARTIFACT["embeddings"],
        instances=ARTIFACT["instances"],
    output:
        ARTIFACT["distances"],
    log:
        "logs/distances.log",
    benchmark:
        "logs/benchmarks/distances.tsv"
    conda:
        "../../envs/inscl.yaml"
    threads: 2
    resources:
        **get_resources("distances"),
    params:
        settings=get_settings("distances"),
        tasks=EXPERIMENT_TASKS,
        code=get_code("distances.py"),
    script:
        "../scripts/distances.py"


rule select_replay:
    input:
        unpack(get_replay_inputs),
    output:
        directory(runs.replay_folder("{order}", "{method}", "{seed}")),
    log:
        "logs/select_replay/{order}/{method}/seed{seed}.log",
    conda:
        "../../envs/inscl.yaml"
    resources:
        **get_resources("select_replay"),
    params:
        settings=get_replay_settings,
        tasks=lambda wildcards: ORDERS[wildcards.order],
        code=get_replay_code,
    script:
        "../scripts/select_replay.py"

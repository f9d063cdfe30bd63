rule evaluate:
    input:
        unpack(get_evaluate_inputs),
    output:
        predictions=f"{runs.RUNS}/{{run}}/predictions.parquet",
        scores=f"{runs.RUNS}/{{run}}/scores.parquet",
    log:
        "logs/evaluate/{run}.log",
    benchmark:
        "logs/benchmarks/evaluate/{run}.tsv"
    conda:
        "../../envs/inscl.yaml"
    threads: get_threads("evaluate")
    resources:
        **get_resources("evaluate"),
    params:
        settings=get_settings("evaluate"),
        tasks=get_evaluated_tasks,
        code=get_code("evaluate.py"),
    script:
        "../scripts/evaluate.py"


# Only with evaluation.shard_by: task or examples: one bounded piece of a run's predictions.
rule predict_shard:
    input:
        model=f"{runs.RUNS}/{{run}}/model",
        base=runs.BASE.model,
        instances=get_run_instances,
    output:
        shard=f"{runs.RUNS}/{{run}}/shards/{{shard}}.parquet",
    log:
        "logs/predict/{run}/{shard}.log",
    benchmark:
        "logs/benchmarks/predict/{run}/{shard}.tsv"
    wildcard_constraints:
        shard=r"[^/]+",
    conda:
        "../../envs/inscl.yaml"
    threads: get_threads("evaluate")
    resources:
        **get_resources("evaluate"),
    params:
        settings=get_settings("evaluate"),
        tasks=get_evaluated_tasks,
        code=get_code("evaluate.py"),
    script:
        "../scripts/evaluate.py"


rule metrics:
    input:
        unpack(get_score_files),
    output:
        **get_metrics_outputs(),
    log:
        "logs/metrics.log",
    conda:
        "../../envs/inscl.yaml"
    resources:
        **get_resources("metrics"),
    params:
        settings=get_settings("metrics"),
        orders=stages.canonical(ORDERS),
        methods=METHODS,
        seeds=SEEDS,
        code=get_code("metrics.py"),
    script:
        "../scripts/metrics.py"


rule judge:
    input:
        model=f"{runs.RUNS}/{{run}}/model",
        base=runs.BASE.model,
        prompts=list(config["judge"]["prompt_files"].values()),
    output:
        verdicts=f"{runs.JUDGE}/{{run}}/verdicts.parquet",
        summary=f"{runs.JUDGE}/{{run}}/summary.parquet",
    log:
        "logs/judge/{run}.log",
    benchmark:
        "logs/benchmarks/judge/{run}.tsv"
    conda:
        "../../envs/inscl.yaml"
    threads: get_threads("judge")
    resources:
        **get_resources("judge"),
    params:
        settings=get_settings("judge"),
        code=get_code("judge.py"),
    script:
        "../scripts/judge.py"


rule general_ability:
    input:
        model=f"{runs.RUNS}/{{run}}/model",
        base=runs.BASE.model,
    output:
        f"{runs.GENERAL}/{{run}}/results.parquet",
    log:
        "logs/general/{run}.log",
    benchmark:
        "logs/benchmarks/general/{run}.tsv"
    conda:
        "../../envs/inscl.yaml"
    threads: get_threads("general_ability")
    resources:
        **get_resources("general_ability"),
    params:
        settings=get_settings("general_ability"),
        code=get_code("general_ability.py"),
    script:
        "../scripts/general_ability.py"


# Method icl: the base model answers every task's test set after demonstrations from its training split.
rule icl:
    input:
        base=runs.BASE.model,
        instances=ARTIFACT["instances"],
    output:
        predictions=f"{runs.ICL}/seed{{seed}}/predictions.parquet",
        scores=f"{runs.ICL}/seed{{seed}}/scores.parquet",
        demonstrations=f"{runs.ICL}/seed{{seed}}/demonstrations.parquet",
        shots=f"{runs.ICL}/seed{{seed}}/shots.parquet",
    log:
        "logs/icl/seed{seed}.log",
    benchmark:
        "logs/benchmarks/icl/seed{seed}.tsv"
    conda:
        "../../envs/inscl.yaml"
    threads: get_threads("icl")
    resources:
        **get_resources("icl"),
    params:
        settings=get_settings("icl"),
        tasks=EXPERIMENT_TASKS,
        code=get_code("icl.py"),
    script:
        "../scripts/icl.py"


# InsCL's forgetting analysis of one chain: examples right after their stage and wrong at the end.
rule forgetting:
    input:
        unpack(get_forgetting_inputs),
    output:
        runs.forgetting_file("{order}", "{method}", "{seed}"),
    log:
        "logs/forgetting/{order}/{method}/seed{seed}.log",
    conda:
        "../../envs/inscl.yaml"
    resources:
        **get_resources("forgetting"),
    params:
        settings=get_settings("forgetting"),
        tasks=lambda wildcards: ORDERS[wildcards.order],
        code=get_code("forgetting.py"),
    script:
        "../scripts/forgetting.py"

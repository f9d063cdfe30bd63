rule base_model:
    input:
        ARTIFACT["instances"],
    output:
        directory(runs.BASE.model),
    log:
        "logs/base_model.log",
    conda:
        "../../envs/inscl.yaml"
    threads: get_threads("base_model")
    resources:
        **get_resources("base_model"),
    params:
        settings=get_settings("base_model"),
        code=get_code("base_model.py"),
    script:
        "../scripts/base_model.py"


# One training job: a chain stage; the references below reuse it with other outputs.
rule train:
    input:
        unpack(get_train_inputs),
    output:
        **get_train_outputs("chain"),
    log:
        "logs/train/{order}/{method}/seed{seed}/stage{stage}.log",
    benchmark:
        "logs/benchmarks/train/{order}/{method}/seed{seed}/stage{stage}.tsv"
    wildcard_constraints:
        method=methods_pattern(STATELESS),
    conda:
        "../../envs/inscl.yaml"
    threads: get_threads("train")
    resources:
        **get_resources("train"),
    params:
        settings=get_settings("train"),
        tasks=get_train_tasks,
        epochs=get_train_epochs,
        seed=get_train_seed,
        method=get_train_method,
        code=get_train_code,
    script:
        "../scripts/train.py"


use rule train as train_multitask with:
    output:
        **get_train_outputs("multitask"),
    log:
        "logs/train/multitask/seed{seed}.log",
    benchmark:
        "logs/benchmarks/train/multitask/seed{seed}.tsv"


use rule train as train_single_task with:
    output:
        **get_train_outputs("single_task"),
    log:
        "logs/train/single_task/seed{seed}/{task}.log",
    benchmark:
        "logs/benchmarks/train/single_task/seed{seed}/{task}.tsv"


# A chain stage of a method that leaves a stage state for the next stage (e.g. EWC's Fisher).
use rule train as train_with_state with:
    output:
        **get_train_outputs("chain", state=True),
    wildcard_constraints:
        method=methods_pattern(STATEFUL),

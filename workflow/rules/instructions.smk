rule embed_instructions:
    input:
        ARTIFACT["instances"],
    output:
        ARTIFACT["embeddings"],
    log:
        "logs/embed_instructions.log",
    benchmark:
        "logs/benchmarks/embed_instructions.tsv"
    conda:
        "../../envs/inscl.yaml"
    threads: 2
    resources:
        **get_resources("embed_instructions"),
    params:
        settings=get_settings("embed_instructions"),
        code=get_code("embed.py"),
    script:
        "../scripts/embed.py"


use rule embed_instructions as embed_examples with:
    output:
        ARTIFACT["example_embeddings"],
    log:
        "logs/embed_examples.log",
    benchmark:
        "logs/benchmarks/embed_examples.tsv"
    params:
        settings=get_settings("embed_examples"),
        code=get_code("embed.py"),


rule tag:
    input:
        instances=ARTIFACT["instances"],
        tag_file=get_tag_file,
    output:
        ARTIFACT["tags_raw"],
    log:
        "logs/tag.log",
    benchmark:
        "logs/benchmarks/tag.tsv"
    conda:
        "../../envs/inscl.yaml"
    threads: 2
    resources:
        **get_resources("tag"),
    params:
        settings=get_settings("tag"),
        code=get_code("tag.py"),
    script:
        "../scripts/tag.py"


rule normalize_tags:
    input:
        ARTIFACT["tags_raw"],
    output:
        tags=ARTIFACT["tags"],
        mapping=ARTIFACT["tag_map"],
    log:
        "logs/normalize_tags.log",
    conda:
        "../../envs/inscl.yaml"
    threads: 2
    resources:
        **get_resources("normalize_tags"),
    params:
        settings=get_settings("normalize_tags"),
        code=get_code("normalize_tags.py"),
    script:
        "../scripts/normalize_tags.py"


rule insinfo:
    input:
        tags=ARTIFACT["tags"],
        instances=ARTIFACT["instances"],
    output:
        ARTIFACT["insinfo"],
    log:
        "logs/insinfo.log",
    conda:
        "../../envs/inscl.yaml"
    resources:
        **get_resources("insinfo"),
    params:
        settings=get_settings("insinfo"),
        tasks=EXPERIMENT_TASKS,
        code=get_code("insinfo.py"),
    script:
        "../scripts/insinfo.py"


# RCL: a rationale for every training example, and the instances with rationale + answer targets.
rule rationales:
    input:
        ARTIFACT["instances"],
    output:
        rationales=ARTIFACT["rationales"],
        instances=ARTIFACT["rcl_instances"],
    log:
        "logs/rationales.log",
    benchmark:
        "logs/benchmarks/rationales.tsv"
    conda:
        "../../envs/inscl.yaml"
    resources:
        **get_resources("rationales"),
    params:
        settings=get_settings("rationales"),
        tasks=EXPERIMENT_TASKS,
        code=get_code("rationales.py"),
    script:
        "../scripts/rationales.py"

rule embed_instructions:
    input:
        ARTIFACT["instances"],
    output:
        ARTIFACT["embeddings"],
    params:
        settings=get_settings("embed_instructions"),
        code=get_code("embed.py"),
    log:
        "logs/embed_instructions.log",
    benchmark:
        "logs/benchmarks/embed_instructions.tsv"
    threads: 2
    resources:
        **get_resources("embed_instructions"),
    conda:
        "../../envs/inscl.yaml"
    script:
        "../scripts/embed.py"


use rule embed_instructions as embed_examples with:
    output:
        ARTIFACT["example_embeddings"],
    params:
        settings=get_settings("embed_examples"),
        code=get_code("embed.py"),
    log:
        "logs/embed_examples.log",
    benchmark:
        "logs/benchmarks/embed_examples.tsv"


rule tag:
    input:
        instances=ARTIFACT["instances"],
        tag_file=get_tag_file,
    output:
        ARTIFACT["tags_raw"],
    params:
        settings=get_settings("tag"),
        code=get_code("tag.py"),
    log:
        "logs/tag.log",
    benchmark:
        "logs/benchmarks/tag.tsv"
    threads: 2
    resources:
        **get_resources("tag"),
    conda:
        "../../envs/inscl.yaml"
    script:
        "../scripts/tag.py"


rule normalize_tags:
    input:
        ARTIFACT["tags_raw"],
    output:
        tags=ARTIFACT["tags"],
        mapping=ARTIFACT["tag_map"],
    params:
        settings=get_settings("normalize_tags"),
        code=get_code("normalize_tags.py"),
    log:
        "logs/normalize_tags.log",
    threads: 2
    resources:
        **get_resources("normalize_tags"),
    conda:
        "../../envs/inscl.yaml"
    script:
        "../scripts/normalize_tags.py"


rule insinfo:
    input:
        tags=ARTIFACT["tags"],
        instances=ARTIFACT["instances"],
    output:
        ARTIFACT["insinfo"],
    params:
        settings=get_settings("insinfo"),
        tasks=EXPERIMENT_TASKS,
        code=get_code("insinfo.py"),
    log:
        "logs/insinfo.log",
    resources:
        **get_resources("insinfo"),
    conda:
        "../../envs/inscl.yaml"
    script:
        "../scripts/insinfo.py"

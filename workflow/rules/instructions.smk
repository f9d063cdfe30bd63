rule embed_instructions:
    input:
        "results/data/instances.parquet",
    output:
        "results/instructions/embeddings.parquet",
    params:
        embedding=config["embedding"],
        cache_dir=CACHE,
    log:
        "logs/embed_instructions.log",
    benchmark:
        "benchmarks/rules/embed_instructions.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/inscl.yaml"
    script:
        "../scripts/embed.py"


rule embed_examples:
    input:
        "results/data/instances.parquet",
    output:
        "results/instructions/example_embeddings.parquet",
    params:
        embedding=config["embedding"],
        cache_dir=CACHE,
    log:
        "logs/embed_examples.log",
    benchmark:
        "benchmarks/rules/embed_examples.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../../envs/inscl.yaml"
    script:
        "../scripts/embed.py"


rule tag:
    input:
        instances="results/data/instances.parquet",
        embeddings="results/instructions/embeddings.parquet",
        tag_file=[config["tagging"]["file"]["path"]] if config["tagging"]["backend"] == "file" else [],
    output:
        "results/instructions/tags_raw.parquet",
    params:
        tagging=config["tagging"],
        embedding=config["embedding"],
        cache_dir=CACHE,
    log:
        "logs/tag.log",
    benchmark:
        "benchmarks/rules/tag.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=600,
    conda:
        "../../envs/inscl.yaml"
    script:
        "../scripts/tag.py"




rule normalize_tags:
    input:
        "results/instructions/tags_raw.parquet",
        code=module_file("inscl.tags"),
    output:
        tags="results/instructions/tags.parquet",
        mapping="results/instructions/tag_map.parquet",
    params:
        normalize=config["normalize"],
        embedding=config["embedding"],
        cache_dir=CACHE,
    log:
        "logs/normalize_tags.log",
    conda:
        "../../envs/inscl.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/normalize_tags.py"


rule insinfo:
    input:
        tags="results/instructions/tags.parquet",
        instances="results/data/instances.parquet",
        code=module_file("inscl.insinfo"),
    output:
        "results/instructions/insinfo.parquet",
    params:
        insinfo=config["insinfo"],
        orders=ORDERS,
    log:
        "logs/insinfo.log",
    conda:
        "../../envs/inscl.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/insinfo.py"

INGEST_CODE = [module_file(module) for module in ("inscl.data", "inscl.demo")]


rule ingest:
    input:
        source_files,
        # the loaders and the demo generator: editing them regenerates the data
        code=INGEST_CODE,
    output:
        instances="results/data/instances.parquet",
        tasks="results/data/tasks.parquet",
    params:
        data=config["data"],
        orders=ORDERS,
    log:
        "logs/ingest.log",
    conda:
        "../../envs/inscl.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/ingest.py"

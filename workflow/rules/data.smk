rule ingest:
    input:
        source_files,
    output:
        instances="results/data/instances.parquet",
        tasks="results/data/tasks.parquet",
    params:
        data=config["data"],
        orders=ORDERS,
    log:
        "logs/ingest.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/ingest.py"

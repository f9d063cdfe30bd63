rule ingest:
    input:
        source_files=get_source_files,
    output:
        instances=ARTIFACT["instances"],
        tasks=ARTIFACT["tasks"],
    params:
        settings=get_settings("ingest"),
        code=get_code("ingest.py"),
    log:
        "logs/ingest.log",
    resources:
        **get_resources("ingest"),
    conda:
        "../../envs/inscl.yaml"
    script:
        "../scripts/ingest.py"

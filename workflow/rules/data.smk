rule ingest:
    input:
        source_files=get_source_files,
    output:
        instances=ARTIFACT["instances"],
        tasks=ARTIFACT["tasks"],
        dropped=ARTIFACT["dropped"],
    log:
        "logs/ingest.log",
    conda:
        "../../envs/inscl.yaml"
    resources:
        **get_resources("ingest"),
    params:
        settings=get_settings("ingest"),
        code=get_code("ingest.py"),
    script:
        "../scripts/ingest.py"

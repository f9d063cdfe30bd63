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


# The general-data file of general_replay and trace_general_replay (replay.general).
rule general_data:
    input:
        get_general_file,
    output:
        ARTIFACT["general_data"],
    log:
        "logs/general_data.log",
    conda:
        "../../envs/inscl.yaml"
    resources:
        **get_resources("general_data"),
    params:
        settings=get_settings("general_data"),
        code=get_code("general_data.py"),
    script:
        "../scripts/general_data.py"

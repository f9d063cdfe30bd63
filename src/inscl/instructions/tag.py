"""Intention tags per unique instruction: InsTag-style prompting of an OpenAI-compatible model,
an offline keyphrase tagger (n-grams ranked by embedding similarity with MMR diversity), or tags
read from a file. Every backend produces the rows of `results/instructions/tags_raw.parquet`.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from inscl.core.config import ConfigError
from inscl.core.hashing import content_hash
from inscl.core.io import InputError, read_text_utf8
from inscl.core.llm import InvalidAnswer, run_chat_requests
from inscl.instructions.embed import embed_texts
from inscl.instructions.words import content_runs

log = logging.getLogger(__name__)

SYSTEM_PROMPT = "You are a helpful assistant that tags user queries."

PROMPTS = {
    "instag-v1": (
        "You are a tagging system that identifies the intentions behind a user query. Give coarse-grained "
        "tags for what the user wants done: the kind of task, and the main skills or knowledge it calls for. "
        "Prefer a few broad, reusable tags (one to four words each) over details specific to this query, "
        "and give a one-sentence explanation for each tag.\n"
        'Answer with only a JSON list in this format: [{{"tag": str, "explanation": str}}]\n\n'
        "Query:\n\n{instruction}"
    ),
}

OFFLINE_VERSION = "keyphrase-mmr-v2"  # v2: words in every script (inscl.instructions.words)
MAX_CANDIDATES = 60
MAX_TAG_CHARS = 100

# ---------------------------------------------------------------------------------------------
# instructions and the artifact


def _row(
    instruction_id,
    instruction,
    tags,
    backend,
    model,
    prompt_version,
    status="ok",
    error=None,
    raw=None,
    prompt_tokens=0,
    completion_tokens=0,
    cost_usd=0.0,
) -> dict:
    return {
        "instruction_id": instruction_id,
        "instruction": instruction,
        "tags": tags,
        "backend": backend,
        "model": model,
        "prompt_version": prompt_version,
        "prompt_tokens": int(prompt_tokens),
        "completion_tokens": int(completion_tokens),
        "cost_usd": float(cost_usd),
        "status": status,
        "error": error,
        "raw": raw,
    }


# ---------------------------------------------------------------------------------------------
# parsing model answers


def _closing_index(text: str, start: int) -> int | None:
    """Index of the bracket closing the one at `start`, skipping JSON strings; None if it never closes."""
    depth, in_string, escaped = 0, False, False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return index
    return None


def _as_tags(value) -> list[dict] | None:
    if isinstance(value, dict):
        lowered = {str(k).lower(): v for k, v in value.items()}
        if "tag" in lowered:
            value = [value]
        elif isinstance(lowered.get("tags"), list):
            value = lowered["tags"]
        else:
            return None
    if not isinstance(value, list):
        return None
    tags, seen = [], set()
    for item in value:
        if isinstance(item, str):
            tag, explanation = item, ""
        elif isinstance(item, dict):
            lowered = {str(k).lower(): v for k, v in item.items()}
            tag, explanation = lowered.get("tag"), lowered.get("explanation", "")
        else:
            return None
        if not isinstance(tag, str) or not tag.strip():
            return None
        tag = " ".join(tag.split())[:MAX_TAG_CHARS]
        if tag.lower() not in seen:
            seen.add(tag.lower())
            tags.append({"tag": tag, "explanation": "" if explanation is None else str(explanation).strip()})
    return tags


def parse_tags(text: str) -> list[dict]:
    """Tags from a model answer: tolerates code fences, prose around the JSON and a single object.

    Raises InvalidAnswer for no JSON, unterminated (truncated) JSON, the wrong shape or no tags.
    """
    fenced = re.search(r"```(?:json|JSON)?\s*(.*?)```", text, re.S)
    body = fenced.group(1) if fenced else text
    problem = "no JSON list of tags in the answer"
    for match in re.finditer(r"[\[{]", body):
        end = _closing_index(body, match.start())
        if end is None:
            raise InvalidAnswer("unterminated JSON (truncated answer)")
        try:
            value = json.loads(body[match.start() : end + 1])
        except json.JSONDecodeError:
            problem = "malformed JSON"
            continue
        tags = _as_tags(value)
        if tags is None:
            problem = 'JSON is not a list of {"tag", "explanation"} objects'
            continue
        if not tags:
            raise InvalidAnswer("empty tag list")
        return tags
    raise InvalidAnswer(problem)


# ---------------------------------------------------------------------------------------------
# openai backend


def build_messages(instruction: str, prompt_version: str) -> list[dict]:
    if prompt_version not in PROMPTS:
        raise ConfigError(
            f"tagging.prompt_version: unknown prompt version {prompt_version!r}; known: {sorted(PROMPTS)}"
        )
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": PROMPTS[prompt_version].format(instruction=instruction)},
    ]


def tag_openai(instructions: pd.DataFrame, tagging: dict, cache_dir) -> list[dict]:
    endpoint, version = tagging["openai"], tagging["prompt_version"]
    requests = [(text, build_messages(text, version)) for text in instructions["instruction"]]
    results = run_chat_requests(requests, endpoint, cache_dir, version, validate=parse_tags, desc="tagging")
    return [
        _row(
            instruction_id,
            text,
            result.parsed if result.status == "ok" else [],
            "openai",
            result.model,
            version,
            status=result.status,
            error=result.error,
            raw=result.raw,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            cost_usd=result.cost_usd,
        )
        for instruction_id, text, result in zip(instructions["instruction_id"], instructions["instruction"], results)
    ]


# ---------------------------------------------------------------------------------------------
# offline backend: keyphrases with maximal marginal relevance


def keyphrase_candidates(text: str, ngram_max: int, limit: int = MAX_CANDIDATES) -> list[str]:
    """Word n-grams (1..ngram_max) inside runs of content words; the most frequent, then earliest, first."""
    counts: dict[str, int] = {}
    for run in content_runs(text):
        for n in range(1, ngram_max + 1):
            for start in range(len(run) - n + 1):
                phrase = " ".join(run[start : start + n])
                counts[phrase] = counts.get(phrase, 0) + 1
    ranked = sorted(counts, key=lambda phrase: -counts[phrase])  # stable: ties keep first appearance
    return ranked[:limit]


def mmr_select(
    doc: np.ndarray, candidates: np.ndarray, k: int, diversity: float, overlaps: np.ndarray | None = None
) -> list[int]:
    """Indices of up to k candidates by maximal marginal relevance to `doc` (unit vectors).

    `overlaps[i, j]` True means candidate i may not join once j is chosen (e.g. "order" after "reverse order").
    """
    if len(candidates) == 0:
        return []
    relevance = candidates @ doc
    similarity = candidates @ candidates.T
    allowed = np.ones(len(candidates), dtype=bool)
    chosen: list[int] = []
    while len(chosen) < k and allowed.any():
        if chosen:
            score = (1 - diversity) * relevance - diversity * similarity[:, chosen].max(axis=1)
        else:
            score = relevance.copy()
        score[~allowed] = -np.inf
        best = int(np.argmax(score))
        chosen.append(best)
        allowed[best] = False
        if overlaps is not None:
            allowed &= ~overlaps[:, best]
    return chosen


def phrase_overlaps(phrases: list[str]) -> np.ndarray:
    """overlaps[i, j]: phrase i is contained in phrase j as whole words, or contains it."""
    padded = [f" {p} " for p in phrases]
    return np.array([[a in b or b in a for b in padded] for a in padded], dtype=bool)


def tag_offline(instructions: pd.DataFrame, offline: dict, embedding: dict, cache_dir) -> list[dict]:
    texts = list(instructions["instruction"])
    candidates = [keyphrase_candidates(text, int(offline["ngram_max"])) for text in texts]
    phrases = sorted({phrase for per_text in candidates for phrase in per_text})
    matrix = embed_texts(
        texts + phrases,
        embedding["model"],
        cache_dir,
        int(embedding.get("batch_size", 64)),
        embedding.get("device", "auto"),
    )
    docs, phrase_vectors = matrix[: len(texts)], dict(zip(phrases, matrix[len(texts) :]))
    rows = []
    for instruction_id, text, doc, per_text in zip(instructions["instruction_id"], texts, docs, candidates):
        if not per_text:
            rows.append(
                _row(
                    instruction_id,
                    text,
                    [],
                    "offline",
                    embedding["model"],
                    OFFLINE_VERSION,
                    status="failed",
                    error="no content words to tag",
                )
            )
            continue
        vectors = np.stack([phrase_vectors[p] for p in per_text])
        picked = mmr_select(
            doc, vectors, int(offline["max_tags"]), float(offline["diversity"]), phrase_overlaps(per_text)
        )
        tags = [
            {
                "tag": per_text[i],
                "explanation": f"key phrase of the instruction (cosine {float(vectors[i] @ doc):.2f} to the whole instruction)",
            }
            for i in picked
        ]
        rows.append(_row(instruction_id, text, tags, "offline", embedding["model"], OFFLINE_VERSION))
    untagged = [repr(text[:60]) for text, per_text in zip(texts, candidates) if not per_text]
    if untagged:
        log.warning(
            "offline tagger: %d instructions have no content words, so no tags and InsInfo 0: %s",
            len(untagged),
            ", ".join(untagged[:10]),
        )
    return rows


# ---------------------------------------------------------------------------------------------
# file backend


def _file_tags(value, path, record) -> list[dict]:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    tags = _as_tags(value) if isinstance(value, list) else None
    if tags is None:
        raise InputError(
            path, 'expected a list of tags (strings or {"tag", "explanation"})', record=record, field="tags"
        )
    return tags


def read_tag_file(path) -> dict[str, dict]:
    """instruction_id -> {tags, model, prompt_version} from a tags_raw parquet or a JSONL of {instruction, tags}."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "tag file not found", field="tagging.file.path")
    entries: dict[str, dict] = {}
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        if "tags" not in frame.columns or not {"instruction_id", "instruction"} & set(frame.columns):
            raise InputError(path, "needs a 'tags' column and 'instruction_id' or 'instruction'", field="tags")
        for index, record in enumerate(frame.to_dict("records")):
            if record.get("status", "ok") != "ok":
                continue
            instruction_id = record.get("instruction_id") or content_hash(record["instruction"])
            entries[instruction_id] = {
                "tags": _file_tags(record["tags"], path, index),
                "model": record.get("model"),
                "prompt_version": record.get("prompt_version"),
            }
        return entries
    for number, line in enumerate(read_text_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(path, f"malformed JSON: {e.msg}", record=f"line {number}") from None
        if not isinstance(record, dict):
            raise InputError(path, "expected a JSON object", record=f"line {number}")
        instruction = record.get("instruction")
        if not isinstance(instruction, str) or not instruction:
            raise InputError(path, "missing or empty", record=f"line {number}", field="instruction")
        if "tags" not in record:
            raise InputError(path, "missing", record=f"line {number}", field="tags")
        entries[content_hash(instruction)] = {
            "tags": _file_tags(record["tags"], path, f"line {number}"),
            "model": record.get("model"),
            "prompt_version": record.get("prompt_version"),
        }
    return entries


def tag_from_file(instructions: pd.DataFrame, path) -> list[dict]:
    entries = read_tag_file(path)
    rows = []
    for instruction_id, text in zip(instructions["instruction_id"], instructions["instruction"]):
        entry = entries.get(instruction_id) or entries.get(content_hash(text))
        if entry is None:
            rows.append(
                _row(
                    instruction_id,
                    text,
                    [],
                    "file",
                    None,
                    None,
                    status="failed",
                    error=f"no tags for this instruction in {path}",
                )
            )
        else:
            rows.append(_row(instruction_id, text, entry["tags"], "file", entry["model"], entry["prompt_version"]))
    missing = sum(row["status"] != "ok" for row in rows)
    if missing:
        log.warning("%d of %d instructions have no tags in %s", missing, len(rows), path)
    return rows


# ---------------------------------------------------------------------------------------------


def tag_instructions(instructions: pd.DataFrame, tagging: dict, embedding: dict, cache_dir) -> list[dict]:
    """tags_raw rows for the unique instructions (instruction_id, instruction) with the configured backend."""
    backend = tagging["backend"]
    if backend == "openai":
        rows = tag_openai(instructions, tagging, cache_dir)
    elif backend == "offline":
        rows = tag_offline(instructions, tagging["offline"], embedding, cache_dir)
    elif backend == "file":
        if not tagging["file"].get("path"):
            raise ConfigError("tagging.file.path: required when tagging.backend is 'file'")
        rows = tag_from_file(instructions, tagging["file"]["path"])
    else:
        raise ConfigError(f"tagging.backend: unknown backend {backend!r}")
    counts = pd.Series([row["status"] for row in rows]).value_counts().to_dict() if rows else {}
    log.info("tagged %d instructions with the %s backend: %s", len(rows), backend, counts)
    return rows

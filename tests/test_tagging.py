"""inscl.instructions.tag: answer parsing, the offline keyphrase tagger, the file backend, the openai backend
against the real local server, and a tagging process killed mid-run."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from openai_server import OpenAIServer
from trace_examples import trace_examples

from inscl.core import artifacts
from inscl.core.config import ConfigError
from inscl.core.hashing import content_hash
from inscl.core.io import STALE_TEMP_S, InputError
from inscl.core.llm import InvalidAnswer, response_cache_path
from inscl.data.trace import split_instruction
from inscl.instructions import embed as embedding
from inscl.instructions.insinfo import insinfo_scores
from inscl.instructions.tag import (
    OFFLINE_VERSION,
    build_messages,
    keyphrase_candidates,
    mmr_select,
    parse_tags,
    phrase_overlaps,
    read_tag_file,
    tag_instructions,
)

pytestmark = pytest.mark.timeout(120)

FIXTURE = Path(__file__).parent / "fixtures" / "instructions" / "superni_sample.json"
TAGGING = {
    "backend": "offline",
    "prompt_version": "instag-v1",
    "offline": {"max_tags": 4, "ngram_max": 2, "diversity": 0.5},
    "file": {"path": None},
}
EMBEDDING = {"model": "bundled:all-MiniLM-L6-v2", "batch_size": 64, "device": "cpu"}


def frame(texts):
    return pd.DataFrame({"instruction_id": [content_hash(t) for t in texts], "instruction": texts})


def superni_definitions():
    return [task["definition"] for task in json.loads(FIXTURE.read_text())]


# ---- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        '[{"tag": "sentiment analysis", "explanation": "classify polarity"}, {"tag": "text classification", "explanation": "labels"}]',
        '```json\n[{"tag": "sentiment analysis", "explanation": "classify polarity"}, {"tag": "text classification", "explanation": "labels"}]\n```',
        'Sure [see below]! Tags:\n[{"tag": "sentiment analysis", "explanation": "classify polarity"},\n {"tag": "text classification", "explanation": "labels"}]\nHope it helps.',
        '{"tags": [{"Tag": "sentiment analysis", "Explanation": "classify polarity"}, {"tag": "text classification", "explanation": "labels"}]}',
    ],
)
def test_parse_tags_tolerates_fences_prose_and_wrappers(answer):
    assert parse_tags(answer) == [
        {"tag": "sentiment analysis", "explanation": "classify polarity"},
        {"tag": "text classification", "explanation": "labels"},
    ]


def test_parse_tags_single_object_strings_and_duplicates():
    assert parse_tags('Here: {"tag": "math", "explanation": "adds numbers"}') == [
        {"tag": "math", "explanation": "adds numbers"}
    ]
    assert parse_tags('["math", "Math", "  word   problems "]') == [
        {"tag": "math", "explanation": ""},
        {"tag": "word problems", "explanation": ""},
    ]


@pytest.mark.parametrize(
    "answer, problem",
    [
        ('[{"tag": "math", "explanation": "adds"}, {"tag": "arith', "truncated"),
        ("I think this is about math and writing.", "no JSON"),
        ("[]", "empty tag list"),
        ('[{"name": "math"}]', "not a list of"),
        ('[{"tag": "", "explanation": "x"}]', "not a list of"),
        ("[{'tag': 'math'}]", "malformed JSON"),
    ],
)
def test_parse_tags_rejects_unusable_answers(answer, problem):
    with pytest.raises(InvalidAnswer, match=problem):
        parse_tags(answer)


def test_prompt_is_versioned_and_carries_the_instruction():
    messages = build_messages("Add the two numbers.", "instag-v1")
    assert messages[-1]["content"].endswith("Add the two numbers.")
    assert '[{"tag": str, "explanation": str}]' in messages[-1]["content"]
    with pytest.raises(ConfigError, match="unknown prompt version 'nope'"):
        build_messages("x", "nope")


# ---- offline keyphrase tagger -------------------------------------------------------------------


def test_keyphrase_candidates_are_content_word_ngrams():
    candidates = keyphrase_candidates("Classify the sentiment of the movie review as positive or negative.", 2)
    assert {"classify", "sentiment", "movie review", "movie", "review", "positive", "negative"} == set(candidates)
    assert all(len(c.split()) <= 2 for c in candidates)
    repeated = keyphrase_candidates("Translate the sentence. The sentence is in French. French sentence.", 3)
    assert repeated[0] == "sentence"  # the most frequent first


def test_mmr_trades_relevance_for_diversity():
    doc = np.array([1.0, 0.0, 0.0])
    near_a = np.array([0.95, 0.31, 0.0])
    near_b = np.array([0.94, 0.34, 0.0])  # almost a duplicate of near_a
    other = np.array([0.8, 0.0, 0.6])
    vectors = np.stack([v / np.linalg.norm(v) for v in (near_a, near_b, other)])
    assert mmr_select(doc, vectors, 2, 0.0) == [0, 1]
    assert mmr_select(doc, vectors, 2, 0.7) == [0, 2]
    assert mmr_select(doc, vectors[:0], 2, 0.5) == []


def test_overlapping_phrases_are_not_both_chosen():
    phrases = ["reverse order", "order", "letters", "reverse", "disorder"]
    overlaps = phrase_overlaps(phrases)
    assert overlaps[1, 0] and overlaps[3, 0] and overlaps[0, 1]
    assert not overlaps[4, 1] and not overlaps[2, 0]  # whole words only
    vectors = np.eye(5, dtype=np.float32)
    doc = np.array([0.8, 0.7, 0.3, 0.6, 0.1], dtype=np.float32)
    assert mmr_select(doc, vectors, 5, 0.0, overlaps) == [0, 2, 4]


def test_offline_backend_tags_real_instructions_deterministically_and_cached(tmp_path):
    texts = superni_definitions()[:2] + [
        "Classify the sentiment of the movie review as positive or negative.",
        "!!! ???",
    ]
    instructions = frame(texts)
    rows = tag_instructions(instructions, TAGGING, EMBEDDING, tmp_path)
    assert [r["instruction_id"] for r in rows] == list(instructions["instruction_id"])
    assert {r["backend"] for r in rows} == {"offline"} and {r["prompt_version"] for r in rows} == {OFFLINE_VERSION}
    assert rows[-1]["status"] == "failed" and rows[-1]["tags"] == []
    for row, text in zip(rows[:-1], texts):
        assert row["status"] == "ok" and 1 <= len(row["tags"]) <= 4
        lowered = " ".join(text.lower().split())
        assert all(tag["tag"] in lowered for tag in row["tags"])
        assert len({t["tag"] for t in row["tags"]}) == len(row["tags"])
    assert {"sentiment", "movie review"} & {t["tag"] for t in rows[-2]["tags"]}

    embedding.reset_cache_stats()
    again = tag_instructions(instructions, TAGGING, EMBEDDING, tmp_path)
    assert again == rows
    assert embedding.cache_stats()["encoded_texts"] == 0


def c_stance_instruction() -> str:
    """The instruction of TRACE's real C-STANCE prompt (dataset_examples.txt), as ingestion splits it."""
    prompt, _ = trace_examples()["C-STANCE"]
    return split_instruction(prompt)[0]


# written for these tests: TRACE's prompts are Chinese or English, SuperNI's instructions English
JAPANESE = "次の文章を読んで、その感情を「肯定的」か「否定的」に分類してください。"
GERMAN = "Übersetzen Sie den folgenden Satz ins Französische und geben Sie nur die Übersetzung aus."
FRENCH = "Classez le sentiment de l'avis suivant comme positif ou négatif."


def test_keyphrase_candidates_of_chinese_japanese_german_and_french_instructions():
    assert c_stance_instruction() == "判断以下文本对指定对象的态度。输出支持、反对或中立。"
    # stop words (以下, 的, 输出, 或) and the preposition 对 cut the Han runs into words
    assert keyphrase_candidates(c_stance_instruction(), 3) == [
        "判断",
        "文本",
        "指定对象",
        "态度",
        "支持",
        "反对",
        "中立",
    ]
    # hiragana (の, を, ...) separates Japanese words; 的 is cut off
    assert keyphrase_candidates(JAPANESE, 3) == ["文章", "感情", "肯定", "否定", "分類"]
    assert keyphrase_candidates("テキストのカテゴリを分類してください。", 2) == ["テキスト", "カテゴリ", "分類"]
    # letters outside ASCII stay in their words; the language's own stop words apply
    assert keyphrase_candidates(GERMAN, 3) == ["übersetzen", "satz", "französische", "geben", "übersetzung"]
    assert keyphrase_candidates(FRENCH, 3) == ["classez", "sentiment", "avis", "positif", "négatif"]
    # German and French stop words are not applied to English text
    assert keyphrase_candidates("Roll a die and add plus one to the hat size.", 1) == [
        "roll", "die", "add", "plus", "hat", "size"
    ]  # fmt: skip
    # a long Han run without a stop word or preposition falls back to character bigrams
    assert keyphrase_candidates("自然语言处理", 1) == ["自然", "然语", "语言", "言处", "处理"]


def test_offline_backend_tags_non_english_instructions(tmp_path, caplog):
    texts = [c_stance_instruction(), JAPANESE, GERMAN, FRENCH, "!!! ？？？"]
    with caplog.at_level("WARNING", logger="inscl.instructions.tag"):
        rows = tag_instructions(frame(texts), TAGGING, EMBEDDING, tmp_path)
    for row, text in zip(rows[:-1], texts):
        assert row["status"] == "ok" and 1 <= len(row["tags"]) <= 4, text
        assert all(tag["tag"] in text.lower() for tag in row["tags"]), row["tags"]
    assert {t["tag"] for t in rows[0]["tags"]} <= {"判断", "文本", "指定对象", "态度", "支持", "反对", "中立"}
    assert rows[-1]["status"] == "failed"
    assert "1 instructions have no content words, so no tags and InsInfo 0: '!!! ？？？'" in caplog.text
    raw_tags = pd.Series([[t["tag"] for t in row["tags"]] for row in rows], index=[r["instruction_id"] for r in rows])
    assert insinfo_scores(raw_tags)["insinfo"].iloc[0] > 0  # the C-STANCE instruction now informs replay


# ---- file backend -------------------------------------------------------------------------------


def test_file_backend_reads_jsonl_and_our_parquet(tmp_path):
    texts = ["Add the two numbers.", "Summarize the article.", "Not in the file."]
    jsonl = tmp_path / "tags.jsonl"
    jsonl.write_text(
        json.dumps({"instruction": texts[0], "tags": ["math", "arithmetic"]})
        + "\n\n"
        + json.dumps(
            {"instruction": texts[1], "tags": [{"tag": "summarization", "explanation": "shorten"}], "model": "gpt-4"}
        )
        + "\n"
    )
    config = {**TAGGING, "backend": "file", "file": {"path": str(jsonl)}}
    rows = tag_instructions(frame(texts), config, EMBEDDING, tmp_path)
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"]
    assert rows[0]["tags"] == [{"tag": "math", "explanation": ""}, {"tag": "arithmetic", "explanation": ""}]
    assert rows[1]["model"] == "gpt-4" and {r["backend"] for r in rows} == {"file"}

    parquet = tmp_path / "tags_raw.parquet"
    artifacts.write(rows, "tags_raw", parquet)
    reread = tag_instructions(frame(texts), {**config, "file": {"path": str(parquet)}}, EMBEDDING, tmp_path)
    assert [r["tags"] for r in reread[:2]] == [r["tags"] for r in rows[:2]]


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"instruction": "a", "tags": ["x"]}\n{"instruction": "b", "tags": ', "record line 2: malformed JSON"),
        ('{"instruction": "a"}\n', "record line 1: field 'tags': missing"),
        ('{"tags": ["x"]}\n', "record line 1: field 'instruction'"),
        ('{"instruction": "a", "tags": "x"}\n', "record line 1: field 'tags': expected a list"),
    ],
)
def test_malformed_tag_file_is_a_one_line_error(tmp_path, content, expected):
    path = tmp_path / "tags.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=expected) as error:
        read_tag_file(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_file_backend_needs_a_path():
    with pytest.raises(ConfigError, match="tagging.file.path"):
        tag_instructions(frame(["x"]), {**TAGGING, "backend": "file"}, EMBEDDING, None)


# ---- openai backend and the artifact ----------------------------------------------------------------


def test_openai_backend_rows_and_artifact(openai_server, endpoint, tmp_path):
    texts = superni_definitions()
    openai_server.inject("invalid_json", times=2, match=texts[1][:40])
    openai_server.inject("prose", match=texts[2][:40])
    config = {**TAGGING, "backend": "openai", "openai": endpoint}
    rows = tag_instructions(frame(texts), config, EMBEDDING, tmp_path / "cache")
    assert [r["status"] for r in rows] == ["ok", "failed", "ok", "ok", "ok"]
    assert all(r["backend"] == "openai" and r["model"] == "gpt-4" and r["prompt_version"] == "instag-v1" for r in rows)
    assert rows[1]["tags"] == [] and "I would describe" in rows[1]["raw"] and rows[1]["error"]
    assert all(r["prompt_tokens"] > 0 and r["cost_usd"] > 0 for r in rows)

    path = tmp_path / "tags_raw.parquet"
    artifacts.write(rows, "tags_raw", path)
    table = pq.read_table(path)
    assert table.schema.equals(artifacts.arrow_schema("tags_raw"))
    back = table.to_pandas()
    assert list(back["tags"].iloc[0][0].keys()) == ["tag", "explanation"]


def test_artifact_keeps_its_schema_when_every_row_failed(tmp_path):
    rows = tag_instructions(frame(["!!!"]), TAGGING, EMBEDDING, tmp_path)
    artifacts.write(rows, "tags_raw", tmp_path / "tags_raw.parquet")
    assert pq.read_schema(tmp_path / "tags_raw.parquet").equals(artifacts.arrow_schema("tags_raw"))


KILLED_RUN = textwrap.dedent(
    """
    import json, sys
    import pandas as pd
    from inscl.core.hashing import content_hash
    from inscl.instructions.tag import tag_instructions
    texts, endpoint, cache = json.loads(sys.argv[1])
    frame = pd.DataFrame({"instruction_id": [content_hash(t) for t in texts], "instruction": texts})
    tagging = {"backend": "openai", "prompt_version": "instag-v1", "openai": endpoint}
    tag_instructions(frame, tagging, {}, cache)
    """
)

KILLED_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    from inscl.core.io import atomic_path
    with atomic_path(sys.argv[1], ".json") as tmp:
        tmp.write_text('{"model": "gpt-4", "prompt')
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def stored_keys(cache) -> set[str]:
    return {json.loads(p.read_text())["key"] for p in (cache / "api").rglob("*.json")}


def killed_write(target: Path, age_s: float) -> Path:
    """What a process killed while writing `target` leaves behind, `age_s` seconds old."""
    before = set(target.parent.iterdir()) if target.parent.exists() else set()
    subprocess.run([sys.executable, "-c", KILLED_WRITE, str(target)], check=False)
    [leftover] = set(target.parent.iterdir()) - before
    os.utime(leftover, (time.time() - age_s,) * 2)
    return leftover


def test_killed_tagging_process_keeps_what_it_paid_for(openai_server, endpoint, api_key, tmp_path):
    texts = [f"Instruction number {i}: rewrite the sentence about topic{i:02d}." for i in range(24)]
    cache = tmp_path / "cache"
    openai_server.hold_after(8)  # the process gets 8 answers; its later requests wait, unanswered
    args = json.dumps([texts, {**endpoint, "max_concurrency": 2, "timeout_s": 60}, str(cache)])
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, args], env=os.environ.copy(), stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while len(list((cache / "api").rglob("*.json"))) < 8 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    saved = stored_keys(cache)
    assert len(saved) == 8

    missing = sorted(set(texts) - saved)
    stale = killed_write(response_cache_path(cache, "gpt-4", "instag-v1", missing[0]), age_s=2 * STALE_TEMP_S)
    recent = killed_write(response_cache_path(cache, "gpt-4", "instag-v1", missing[1]), age_s=0)
    assert stored_keys(cache) == saved  # unfinished writes never look like answers

    with OpenAIServer(api_key=api_key) as rerun_server:  # the killed process's held requests stay on the first
        rerun_endpoint = {**endpoint, "base_url": rerun_server.base_url}
        rows = tag_instructions(
            frame(texts), {**TAGGING, "backend": "openai", "openai": rerun_endpoint}, EMBEDDING, cache
        )
        assert all(r["status"] == "ok" for r in rows)
        rerun_texts = {messages[-1]["content"].split("\n\n")[-1] for messages in rerun_server.chat_messages()}
        assert rerun_server.count() == len(texts) - len(saved)  # only the missing calls
    assert rerun_texts == set(missing)
    assert not stale.exists() and recent.exists()  # a recent one may belong to a live writer

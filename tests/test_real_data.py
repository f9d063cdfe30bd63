"""Ingestion of real files as a new user meets them (issue 11): a UTF-8 BOM, non-English SuperNI
tasks under english_only, the older SuperNI format, truncated JSON, TRACE's eval.json, how records
are numbered, and what caps remove. The files are real upstream files (tests/fixtures/data/
superni_languages, the TRACE examples) or upstream-format files written from them here."""

import json
import re
import shutil
from pathlib import Path

import pytest
from trace_examples import trace_examples, write_trace_folder

from inscl.core import artifacts
from inscl.core.io import InputError
from inscl.data.ingest import ingest

FIXTURES = Path(__file__).parent / "fixtures" / "data"
LANGUAGES = FIXTURES / "superni_languages"
SST2 = "task363_sst2_polarity_classification"
CSQA = "task073_commonsenseqa_answer_generation"
JAPANESE = "task1145_xcsr_jap_commonsense_mc_classification"
GERMAN = "task1138_xcsr_de_commonsense_mc_classification"
TRANSLATION = "task256_spl_translation_de_en"
BOM = b"\xef\xbb\xbf"


def data(*sources, **extra):
    return {"sources": list(sources), "test_fraction": 0.2, "split_seed": 0, **extra}


def superni(path, groups, **extra):
    return {"name": "sni", "type": "superni", "path": str(path), "groups": groups, "english_only": True, **extra}


def trace(path, **extra):
    return {"name": "trace", "type": "trace", "path": str(path), **extra}


def error_of(config) -> str:
    with pytest.raises(InputError) as info:
        ingest(config)
    assert "\n" not in str(info.value)
    return str(info.value)


def task_folder(tmp_path, *names) -> Path:
    """A SuperNI task folder holding copies of the named real files."""
    folder = tmp_path / "tasks"
    folder.mkdir(exist_ok=True)
    for name in names:
        source = LANGUAGES / f"{name}.json"
        shutil.copy(source if source.exists() else FIXTURES / "superni" / f"{name}.json", folder)
    return folder


def trace_records(*datasets) -> dict[str, list[dict]]:
    """Every real TRACE example of each dataset, three times over (three records per file)."""
    examples = trace_examples()
    return {name: [{"prompt": examples[name][0], "answer": examples[name][1]}] * 3 for name in datasets}


# ---------------------------------------------------------------- BOM


def test_a_utf8_bom_is_accepted_in_every_format(tmp_path):
    plain_trace = write_trace_folder(tmp_path / "plain", trace_records("C-STANCE", "FOMC"))
    bom_trace = write_trace_folder(tmp_path / "bom", trace_records("C-STANCE", "FOMC"))
    for file in bom_trace.rglob("*.json"):
        file.write_bytes(BOM + file.read_bytes())
    assert (bom_trace / "C-STANCE" / "train.json").read_bytes().startswith(BOM)
    expected = ingest(data(trace(plain_trace))).instances.drop(columns="source_file")
    assert ingest(data(trace(bom_trace))).instances.drop(columns="source_file").equals(expected)

    folder = task_folder(tmp_path, SST2, CSQA)
    file = folder / f"{SST2}.json"
    file.write_bytes(BOM + file.read_bytes())
    task_list = tmp_path / "train_tasks.txt"
    task_list.write_bytes(BOM + f"{SST2}\n{CSQA}\n".encode())
    groups = {"sentiment": {"categories": ["Sentiment Analysis"]}, "qa": {"tasks": [CSQA]}}
    instances = ingest(data(superni(folder, groups, task_list=str(task_list)))).instances
    assert set(instances["source_task"]) == {SST2, CSQA}

    jsonl = tmp_path / "own.jsonl"
    jsonl.write_bytes(
        BOM + b'{"instruction": "Say hi.", "output": "hi"}\n{"instruction": "Say hi.", "output": "hey"}\n'
    )
    assert len(ingest(data({"name": "own", "type": "jsonl", "path": str(jsonl)})).instances) == 2


# ---------------------------------------------------------------- english_only


def test_non_english_tasks_matched_by_category_are_reported_and_logged(tmp_path, caplog):
    folder = task_folder(tmp_path, CSQA, JAPANESE, GERMAN, SST2)
    groups = {"open_qa": {"categories": ["Question Answering"]}, "sentiment": {"tasks": [SST2]}}
    with caplog.at_level("WARNING", logger="inscl.data"):
        instances, tasks, dropped = ingest(data(superni(folder, groups)))
    assert set(instances["source_task"]) == {CSQA, SST2}
    assert list(dropped.columns) == artifacts.columns("dropped")
    assert dropped[["source_task", "task", "filter", "n_dropped", "n_kept"]].to_dict("records") == [
        {"source_task": GERMAN, "task": "open_qa", "filter": "english_only", "n_dropped": 4, "n_kept": 0},
        {"source_task": JAPANESE, "task": "open_qa", "filter": "english_only", "n_dropped": 4, "n_kept": 0},
    ]
    assert list(dropped["reason"]) == ["not English: Input_language German", "not English: Input_language Japanese"]
    assert dropped["source_file"].iloc[0] == str(folder / f"{GERMAN}.json")
    assert (
        f"english_only dropped 2 source tasks matched by category (8 instances): {GERMAN} from group open_qa "
        f"(not English: Input_language German), {JAPANESE} from group open_qa" in caplog.text
    )
    everything = ingest(data(superni(folder, groups, english_only=False)))
    assert set(everything.instances["source_task"]) == {CSQA, SST2, JAPANESE, GERMAN} and everything.dropped.empty


def test_a_group_that_english_only_empties_fails_naming_the_filter(tmp_path):
    folder = task_folder(tmp_path, CSQA, TRANSLATION)
    groups = {"open_qa": {"categories": ["Question Answering"]}, "misc": {"categories": ["Translation"]}}
    assert error_of(data(superni(folder, groups))) == (
        "config: field 'data.sources[0].groups.misc': english_only removed every source task of this group: "
        f"{TRANSLATION} (not English: Input_language German); set english_only: false to keep them"
    )
    instances = ingest(data(superni(folder, groups, english_only=False))).instances
    assert set(instances[instances["task"] == "misc"]["source_task"]) == {TRANSLATION}


# ---------------------------------------------------------------- older SuperNI format


def test_older_format_language_fields_codes_and_missing_ids(tmp_path):
    folder = tmp_path / "tasks"
    shutil.copytree(LANGUAGES / "old_format", folder)
    old = json.loads((folder / f"{JAPANESE}.json").read_text())
    assert old["Input_language"] == ["jap"] and old["Output_language"] == ["en"] and "id" not in old["Instances"][0]
    # a real current-format file rewritten with plain-string language fields
    doc = json.loads((FIXTURES / "superni" / f"{SST2}.json").read_text())
    doc.update(Input_language="English", Output_language="English", Categories="Sentiment Analysis")
    (folder / f"{SST2}.json").write_text(json.dumps(doc))
    groups = {"sentiment": {"categories": ["Sentiment Analysis"]}, "mc": {"categories": ["Multiple-Choice Question"]}}
    message = error_of(data(superni(folder, groups)))
    assert message.endswith(f"every source task of this group: {JAPANESE} (not English: Input_language jap); "
                            "set english_only: false to keep them")  # fmt: skip
    kept = ingest(data(superni(folder, {"sentiment": groups["sentiment"]}))).instances
    assert len(kept) == len(doc["Instances"])  # "English" as a string is English
    both = ingest(data(superni(folder, groups, english_only=False))).instances
    japanese = both[both["source_task"] == JAPANESE]
    assert sorted(japanese["instance_id"]) == [f"sni:{JAPANESE}/{i}" for i in range(4)]  # ids from positions
    assert set(japanese["instruction"]) == {old["Definition"]}
    doc["Input_language"] = 3
    (folder / f"{SST2}.json").write_text(json.dumps(doc))
    assert error_of(data(superni(folder, groups))) == (
        f"{folder / f'{SST2}.json'}: field 'Input_language': expected a string or a list of strings"
    )


# ---------------------------------------------------------------- truncated JSON


def test_truncated_trace_file_names_the_byte_offset_and_the_last_complete_record(tmp_path):
    root = write_trace_folder(tmp_path, trace_records("C-STANCE"))
    path = root / "C-STANCE" / "train.json"
    raw = path.read_bytes()
    second = raw.index(b'{"prompt"', raw.index(b'{"prompt"') + 1)  # record 1 starts here
    cut = second + 40  # inside record 1's Chinese prompt, and inside one of its 3-byte characters
    with pytest.raises(UnicodeDecodeError):
        raw[:cut].decode("utf-8")
    path.write_bytes(raw[:cut])
    message = error_of(data(trace(root)))
    match = re.fullmatch(
        rf"{re.escape(str(path))}: malformed JSON: Unterminated string starting at byte (\d+) \(line 1 column \d+\); "
        r"the text ends inside the JSON \(truncated\?\); the last complete record is 0 \(0-based index in the list\)",
        message,
    )
    assert match, message
    byte = int(match.group(1))
    assert raw[byte : byte + 1] == b'"' and second < byte < cut  # a byte offset, not a character count
    path.write_bytes(raw + raw[second + 39 : second + 41])  # complete JSON, then a cut-off character
    assert error_of(data(trace(root))) == f"{path}: not valid UTF-8 (byte {len(raw)}, line 1)"


def test_truncated_superni_and_jsonl_files(tmp_path):
    folder = task_folder(tmp_path, CSQA)
    path = folder / f"{CSQA}.json"
    text = path.read_text()
    instances = json.loads(text)["Instances"]
    cut = text.index(instances[5]["id"])  # inside Instances[5]
    path.write_text(text[:cut])
    message = error_of(data(superni(folder, {"qa": {"tasks": [CSQA]}})))
    assert re.fullmatch(
        rf"{re.escape(str(path))}: malformed JSON: Unterminated string starting at byte \d+ \(line \d+ column \d+\); "
        r"the text ends inside the JSON \(truncated\?\); the last complete record is 4 \(0-based index in Instances\)",
        message,
    ), message
    path.write_text(text[: text.index('"Definition"') + 20])
    assert error_of(data(superni(folder, {"qa": {"tasks": [CSQA]}}))).endswith("; it breaks before Instances")

    jsonl = tmp_path / "own.jsonl"
    jsonl.write_text('{"instruction": "Say hi.", "output": "hi"}\n\n{"instruction": "Say hi.", "out')
    assert error_of(data({"name": "own", "type": "jsonl", "path": str(jsonl)})) == (
        f"{jsonl}: record 3 (1-based line): malformed JSON: Unterminated string starting at column 28 "
        "(byte 71 of the file); the text ends inside the JSON (truncated?); the last complete record is 1 (1-based line)"
    )
    assert jsonl.read_bytes()[71:75] == b'"out'


# ---------------------------------------------------------------- eval.json


def test_trace_eval_json_is_kept_counted_and_its_absence_logged(tmp_path, caplog):
    root = write_trace_folder(tmp_path, trace_records("C-STANCE", "FOMC"))
    instances, tasks, _ = ingest(data(trace(root)))
    assert list(tasks["n_eval"]) == [3, 3] and list(tasks["n_train"]) == [3, 3] and list(tasks["n_test"]) == [3, 3]
    assert set(instances[instances["split"] == "eval"]["instance_id"]) >= {"trace:FOMC/eval/0", "trace:FOMC/eval/2"}
    (root / "FOMC" / "eval.json").unlink()
    with caplog.at_level("WARNING", logger="inscl.data"):
        tasks = ingest(data(trace(root))).tasks
    assert list(tasks["n_eval"]) == [3, 0]
    assert f"trace: {root / 'FOMC'} has no eval.json, so dataset FOMC has no eval split" in caplog.text
    jsonl = tmp_path / "own.jsonl"
    lines = [{"instruction": "Say hi.", "output": "hi", "split": split} for split in ("train", "eval", "test")]
    jsonl.write_text("\n".join(json.dumps(line) for line in lines))
    own = ingest(data({"name": "own", "type": "jsonl", "path": str(jsonl)})).tasks
    assert own[["n_train", "n_eval", "n_test"]].values.tolist() == [[1, 1, 1]]


# ---------------------------------------------------------------- record numbers


def test_messages_say_how_records_are_numbered(tmp_path):
    """The same bad record, third in its file: index 2 of a JSON list, line 3 of a JSONL file."""
    records = trace_records("FOMC")["FOMC"]
    records[2] = {"prompt": records[2]["prompt"]}
    root = write_trace_folder(tmp_path / "trace", {"FOMC": records})
    assert error_of(data(trace(root))) == (
        f"{root / 'FOMC' / 'train.json'}: record 2 (0-based index in the list): field 'answer': missing field"
    )
    jsonl = tmp_path / "own.jsonl"
    jsonl.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": "c"}\n{"instruction": "a"}\n')
    assert error_of(data({"name": "own", "type": "jsonl", "path": str(jsonl)})) == (
        f"{jsonl}: record 3 (1-based line): field 'output': missing field"
    )


# ---------------------------------------------------------------- caps


def test_caps_report_the_examples_and_instructions_they_remove(tmp_path, caplog):
    folder = task_folder(tmp_path, CSQA, SST2)
    groups = {"mixed": {"categories": ["Question Answering", "Sentiment Analysis"]}}
    with caplog.at_level("INFO", logger="inscl.data"):
        instances, tasks, dropped = ingest(data(superni(folder, groups), max_train_per_task=1))
    assert tasks["n_train"].tolist() == [1]
    train = dropped[dropped["split"] == "train"]
    assert set(train["filter"]) == {"max_train_per_task"} and train["n_dropped"].sum() == 16 - 1
    gone = train[train["n_kept"] == 0]
    assert len(gone) == 1 and gone["instruction_id"].iloc[0] not in set(
        instances[instances["split"] == "train"]["instruction_id"]
    )
    assert gone["reason"].iloc[0].endswith("; the instruction is gone from the train split")
    assert "max_train_per_task removed every train example of 1 instructions: mixed/" in caplog.text
    assert error_of(data(superni(folder, groups), max_train_per_task=0)) == (
        "config: field 'data.max_train_per_task': task 'mixed' has no training examples left after max_train_per_task 0"
    )

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from trace_examples import trace_examples, write_trace_folder

from inscl.core import artifacts
from inscl.core.config import validate_config
from inscl.core.hashing import content_hash
from inscl.core.io import InputError
from inscl.core.prompts import build_prompt
from inscl.data.ingest import ingest
from inscl.data.trace import split_instruction

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "data"
SUPERNI = FIXTURES / "superni"
SST2 = "task363_sst2_polarity_classification"
AGNEWS = "task379_agnews_topic_classification"
ADDSUB = "task085_unnatural_addsub_arithmetic"
PARAPHRASE = "task045_miscellaneous_sentence_paraphrasing"


def superni(path=SUPERNI, groups=None, **extra):
    groups = groups or {"sentiment": {"tasks": [SST2]}, "topics": {"categories": ["Text Categorization"]}}
    return {"name": "sni", "type": "superni", "path": str(path), "groups": groups, "english_only": True, **extra}


def data(*sources, **extra):
    return {
        "sources": list(sources),
        "test_fraction": 0.2,
        "split_seed": 0,
        "max_train_per_task": None,
        "max_test_per_task": None,
        **extra,
    }


def error_of(config, orders=None) -> str:
    with pytest.raises(InputError) as info:
        ingest(config, orders)
    message = str(info.value)
    assert "\n" not in message
    return message


def superni_copy(tmp_path) -> Path:
    target = tmp_path / "superni"
    shutil.copytree(SUPERNI, target)
    return target


def edit_json(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


# ---------------------------------------------------------------- SuperNI


def test_columns_match_the_artifact_contract():
    instances, tasks, _ = ingest(data(superni()))
    assert list(instances.columns) == artifacts.columns("instances")
    assert list(tasks.columns) == artifacts.columns("tasks")


def test_superni_groups_by_names_and_categories():
    instances, tasks, _ = ingest(data(superni()))
    assert list(tasks["task"]) == ["sentiment", "topics"]
    assert set(instances["source_task"]) == {SST2, AGNEWS}
    upstream = json.loads((SUPERNI / f"{SST2}.json").read_text())
    sst2 = instances[instances["source_task"] == SST2]
    assert len(sst2) == len(upstream["Instances"])
    assert set(sst2["instruction"]) == {upstream["Definition"][0]}
    first = sst2.set_index("instance_id").loc[f"sni:{upstream['Instances'][0]['id']}"]
    assert first["input"] == upstream["Instances"][0]["input"]
    assert list(first["output"]) == upstream["Instances"][0]["output"]
    assert first["source"] == "sni" and first["source_file"].endswith(f"{SST2}.json")
    assert (instances["instruction_id"] == instances["instruction"].map(content_hash)).all()
    assert instances["instance_id"].is_unique


def test_superni_accepts_nan_in_url_and_a_string_definition(tmp_path):
    assert "NaN" in (SUPERNI / f"{ADDSUB}.json").read_text()
    root = superni_copy(tmp_path)
    edit_json(root / f"{ADDSUB}.json", lambda d: d.update(Definition="Add up the numbers."))
    instances, _, _ = ingest(
        data(superni(root, {"math": {"categories": ["Mathematics"]}, "para": {"tasks": [PARAPHRASE]}}))
    )
    assert set(instances[instances["task"] == "math"]["instruction"]) == {"Add up the numbers."}
    assert instances[instances["task"] == "para"]["output"].map(len).min() >= 1


def test_superni_split_is_deterministic_exact_and_order_free(tmp_path):
    config = data(
        superni(
            groups={"all": {"categories": ["Sentiment Analysis", "Text Categorization", "Mathematics", "Paraphrasing"]}}
        )
    )
    instances, tasks, _ = ingest(config)
    sizes = instances.groupby(["source_task", "split"]).size().unstack()
    # round(n * 0.2), and at least one test example: 10 -> 2, 7 -> 1, 4 -> 1
    assert sizes.loc[SST2, "test"] == 2 and sizes.loc[AGNEWS, "test"] == 1 and sizes.loc[PARAPHRASE, "test"] == 1
    assert tasks.loc[0, "n_train"] + tasks.loc[0, "n_test"] == 31
    root = superni_copy(tmp_path)
    for file in root.glob("*.json"):
        edit_json(file, lambda d: d["Instances"].reverse())
    shuffled, _, _ = ingest(data(superni(root, config["sources"][0]["groups"])))
    assert dict(zip(instances["instance_id"], instances["split"])) == dict(
        zip(shuffled["instance_id"], shuffled["split"])
    )
    other_seed, _, _ = ingest({**config, "split_seed": 1})
    assert list(other_seed.sort_values("instance_id")["split"]) != list(instances.sort_values("instance_id")["split"])


def test_caps_are_deterministic_and_nested():
    groups = {"all": {"categories": ["Sentiment Analysis", "Text Categorization", "Mathematics"]}}
    small, tasks, _ = ingest(data(superni(groups=groups), max_train_per_task=5, max_test_per_task=2))
    large, _, _ = ingest(data(superni(groups=groups), max_train_per_task=9, max_test_per_task=4))
    assert list(tasks[["n_train", "n_test"]].iloc[0]) == [5, 2]
    for split in ("train", "test"):
        assert set(small[small["split"] == split]["instance_id"]) < set(large[large["split"] == split]["instance_id"])
    again, _, _ = ingest(data(superni(groups=groups), max_train_per_task=5, max_test_per_task=2))
    assert list(again["instance_id"]) == list(small["instance_id"])


def test_superni_task_list_and_english_only(tmp_path):
    root = superni_copy(tmp_path)
    edit_json(root / f"{PARAPHRASE}.json", lambda d: d.update(Input_language=["Spanish"]))
    groups = {"g": {"categories": ["Paraphrasing", "Mathematics"]}}
    english, _, _ = ingest(data(superni(root, groups)))
    assert set(english["source_task"]) == {ADDSUB}
    everything, _, _ = ingest(data(superni(root, groups, english_only=False)))
    assert set(everything["source_task"]) == {ADDSUB, PARAPHRASE}
    message = error_of(data(superni(root, {"g": {"tasks": [PARAPHRASE]}})))
    assert (
        message
        == f"config: field 'data.sources[0].groups.g.tasks': source task '{PARAPHRASE}' is not English (Input_language Spanish; set english_only: false to keep it)"
    )

    listed = superni(
        groups={"g": {"categories": ["Sentiment Analysis", "Text Categorization", "Mathematics"]}},
        task_list=str(FIXTURES / "superni_task_list.txt"),
    )
    instances, _, _ = ingest(data(listed))
    assert set(instances["source_task"]) == {SST2, AGNEWS, ADDSUB}
    listed["groups"] = {"g": {"categories": ["Paraphrasing"]}}
    assert (
        error_of(data(listed)) == "config: field 'data.sources[0].groups.g.categories': "
        f"no source task in task_list {FIXTURES / 'superni_task_list.txt'} has category 'Paraphrasing'"
    )


def test_explicit_task_names_win_over_categories():
    groups = {"qa": {"tasks": [SST2]}, "rest": {"categories": ["Sentiment Analysis", "Mathematics"]}}
    instances, tasks, _ = ingest(data(superni(groups=groups)))
    assert set(instances[instances["task"] == "qa"]["source_task"]) == {SST2}
    assert set(instances[instances["task"] == "rest"]["source_task"]) == {ADDSUB}


def test_superni_16_config_ingests_all_27_shared_files():
    config = validate_config(yaml.safe_load((ROOT / "configs" / "superni_16.yaml").read_text()))
    source = config["data"]["sources"][0]
    files = sorted((ROOT / source["path"]).glob("*.json"))
    assert len(files) == 27
    instances, tasks, _ = ingest(config["data"], config["orders"], base_dir=ROOT)
    assert set(instances["source_task"]) == {f.stem for f in files}
    expected = sum(len(json.loads(f.read_text())["Instances"]) for f in files)
    assert len(instances) == expected
    assert len(tasks) == 16 and list(tasks["task"]) == list(source["groups"])
    assert (tasks["n_test"] >= 1).all() and (tasks["n_train"] >= 1).all()
    for order in config["orders"].values():
        assert sorted(order) == sorted(tasks["task"])


# ---------------------------------------------------------------- TRACE


EXPECTED_INSTRUCTIONS = {
    "C-STANCE": ("判断以下文本对指定对象的态度。输出支持、反对或中立。", "文本：\n"),
    "FOMC": (
        "What is the monetary policy stance for the following text? Please answer 'dovish', 'hawkish' or 'neutral'.",
        "Text:\n",
    ),
    "MeetingBank": ("Write a summary of the following meeting transcripts.", "Meeting transcripts:\n"),
    "Papyrus-f": (
        "Extract the key words of the following paper according to its title and abstract. Give your answer in French.",
        "Title:\n",
    ),
    "Py150": ("Complete the next line of the following Python code.", "<s> import msgpack <EOL>"),
    "ScienceQA": (
        "Choose an answer for the following question and give your reasons. Your output should follow this format:\n"
        "Answer: \nBecause \nNow let's begin!",
        "Question:\n",
    ),
}


@pytest.fixture
def trace_examples_folder(tmp_path):
    examples = trace_examples()
    write_trace_folder(tmp_path, {name: [{"prompt": p, "answer": a}] for name, (p, a) in examples.items()})
    return tmp_path, examples


def test_trace_examples_first_paragraph_rule(trace_examples_folder):
    folder, examples = trace_examples_folder
    assert len(examples) == 7
    instances, tasks, _ = ingest(data({"name": "trace", "type": "trace", "path": str(folder)}))
    assert sorted(tasks["task"]) == sorted(examples)
    assert set(instances["split"]) == {"train", "eval", "test"}
    test = instances[instances["split"] == "test"].set_index("task")
    for name, (instruction, input_start) in EXPECTED_INSTRUCTIONS.items():
        assert test.loc[name, "instruction"] == instruction, name
        assert test.loc[name, "input"].lstrip("\n").startswith(input_start), name
        assert list(test.loc[name, "output"]) == [examples[name][1]]
    tool = test.loc["ToolBench"]
    assert tool["instruction"].startswith("system: You are AutoGPT") and tool["instruction"].endswith(
        "Thought:\nAction\nAction Input:"
    )
    assert tool["input"].lstrip("\n").startswith("After the call, you will get the call result")
    # the raw template gives TRACE's prompt back exactly, blank lines included (ScienceQA, ToolBench)
    assert "\n\n" in examples["ScienceQA"][0]
    for name, (prompt, _) in examples.items():
        assert build_prompt(test.loc[name, "instruction"], test.loc[name, "input"], "raw") == prompt, name


def test_trace_folder_fixture():
    instances, tasks, _ = ingest(data({"name": "trace", "type": "trace", "path": str(FIXTURES / "trace")}))
    assert list(tasks["task"]) == ["C-STANCE", "FOMC"]
    assert (
        list(tasks["n_train"]) == [3, 3] and list(tasks["n_test"]) == [2, 2] and list(tasks["n_instructions"]) == [1, 1]
    )
    fomc = instances[instances["task"] == "FOMC"]
    assert fomc["split"].value_counts().to_dict() == {"train": 3, "eval": 1, "test": 2}
    assert set(fomc["instance_id"]) >= {"trace:FOMC/train/0", "trace:FOMC/eval/0", "trace:FOMC/test/1"}
    assert fomc.iloc[0]["input"].startswith("Text:\n") and fomc.iloc[0]["input"].endswith("Stance:")
    assert list(fomc[fomc["split"] == "test"]["output"].map(list)) == [["hawkish"], ["neutral"]]


def test_trace_first_line_and_regex_rules():
    prompt = "Summarise the text.\nKeep it short.\nText:\nabc"
    assert split_instruction(prompt, "first_line") == ("Summarise the text.", "Keep it short.\nText:\nabc")
    assert split_instruction(prompt) == ("Summarise the text.\nKeep it short.", "Text:\nabc")
    assert split_instruction("Do it.\n\nText:\nabc\n") == ("Do it.", "\nText:\nabc\n")  # lossless
    assert split_instruction(prompt, "regex", r"(?s)^(.*?)\nText:") == (
        "Summarise the text.\nKeep it short.",
        "Text:\nabc",
    )
    assert split_instruction(prompt, "regex", r"Question: (.*)") is None
    source = {
        "name": "trace",
        "type": "trace",
        "path": str(FIXTURES / "trace"),
        "datasets": ["FOMC"],
        "instruction": {"rule": "regex", "pattern": r"^(.*?)\nStance:"},
    }
    message = error_of(data(source))
    assert (
        message
        == f"{FIXTURES / 'trace' / 'FOMC' / 'train.json'}: record 0 (0-based index in the list): field 'prompt': the 'regex' rule finds no instruction in the prompt"
    )
    source["instruction"]["pattern"] = r"(?s)^(.*?)\nText:"
    instances, _, _ = ingest(data(source))
    assert instances["instruction"].nunique() == 1


# ---------------------------------------------------------------- JSONL


def test_jsonl_directory_one_task_per_file():
    instances, tasks, _ = ingest(data({"name": "mine", "type": "jsonl", "path": str(FIXTURES / "jsonl")}))
    assert list(tasks["task"]) == ["capitals", "plurals"]
    assert list(tasks["n_train"] + tasks["n_test"]) == [5, 4] and (tasks["n_test"] == 1).all()
    tokyo = instances.set_index("instance_id").loc["mine:capitals-1"]
    assert list(tokyo["output"]) == ["Tokyo"] and tokyo["input"] == "Japan" and tokyo["source_task"] == "capitals"
    assert tasks.loc[0, "n_instructions"] == 2


def test_jsonl_single_file_task_and_split_fields(tmp_path):
    file = tmp_path / "own.jsonl"
    records = [
        {"instruction": "Say hi.", "output": "hi", "split": "test"},
        {"instruction": "Say hi.", "input": "loud", "output": ["HI", "Hi!"]},
        {"instruction": "Say hi.", "output": "hi"},
        {"task": "bye", "instruction": "Say bye.", "output": "bye", "split": "train"},
        {"task": "bye", "instruction": "Say bye.", "output": "bye", "split": "test"},
    ]
    file.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    instances, tasks, _ = ingest(data({"name": "own", "type": "jsonl", "path": str(file), "task": "greet"}))
    assert list(tasks["task"]) == ["greet", "bye"]
    assert list(tasks["n_test"]) == [2, 1] and list(tasks["n_train"]) == [1, 1]
    assert list(instances.set_index("instance_id").loc["own:greet/own/2", "output"]) == ["HI", "Hi!"]


# ---------------------------------------------------------------- bad input


def test_malformed_json(tmp_path):
    root = superni_copy(tmp_path)
    path = root / f"{SST2}.json"
    path.write_text(path.read_text()[:1500])
    assert re.fullmatch(
        rf"{re.escape(str(path))}: malformed JSON: .+ at byte \d+ \(line \d+ column \d+\); .+",
        error_of(data(superni(root))),
    )


def test_malformed_jsonl_line(tmp_path):
    file = tmp_path / "t.jsonl"
    file.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": \n')
    assert error_of(data({"name": "j", "type": "jsonl", "path": str(file)})) == (
        f"{file}: record 2 (1-based line): malformed JSON: Expecting value at column 32 (byte 67 of the file); "
        "the text ends inside the JSON (truncated?); the last complete record is 1 (1-based line)"
    )


def test_missing_field(tmp_path):
    root = superni_copy(tmp_path)
    path = root / f"{SST2}.json"
    edit_json(path, lambda d: d["Instances"][3].pop("output"))
    assert (
        error_of(data(superni(root))) == f"{path}: record 3 (0-based index in Instances): field 'output': missing field"
    )
    edit_json(path, lambda d: d.pop("Definition"))
    assert error_of(data(superni(root))) == f"{path}: field 'Definition': missing field"
    trace = tmp_path / "trace" / "T"
    trace.mkdir(parents=True)
    (trace / "train.json").write_text(
        json.dumps([{"prompt": "Do it.\nText:\nx", "answer": "y"}, {"prompt": "Do it.\nText:\nz"}])
    )
    (trace / "test.json").write_text(json.dumps([{"prompt": "Do it.\nText:\nx", "answer": "y"}]))
    assert (
        error_of(data({"name": "t", "type": "trace", "path": str(trace.parent)}))
        == f"{trace / 'train.json'}: record 1 (0-based index in the list): field 'answer': missing field"
    )


def test_empty_instance_list(tmp_path):
    root = superni_copy(tmp_path)
    path = root / f"{SST2}.json"
    edit_json(path, lambda d: d.update(Instances=[]))
    assert error_of(data(superni(root))) == f"{path}: field 'Instances': empty instance list"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert error_of(data({"name": "j", "type": "jsonl", "path": str(empty)})) == f"{empty}: empty instance list"


def test_duplicate_ids(tmp_path):
    root = superni_copy(tmp_path)
    path = root / f"{SST2}.json"
    doc = json.loads(path.read_text())
    duplicate = doc["Instances"][1]["id"]
    edit_json(path, lambda d: d["Instances"][4].update(id=duplicate))
    assert (
        error_of(data(superni(root)))
        == f"{path}: record 4 (0-based index in Instances): field 'id': duplicate id '{duplicate}' "
        f"(first at {path} record 1 (0-based index in Instances))"
    )


def test_non_utf8_bytes_name_the_record_and_field(tmp_path):
    root = superni_copy(tmp_path)
    path = root / f"{SST2}.json"
    doc = json.loads(path.read_text())
    raw = path.read_bytes()
    target = doc["Instances"][2]["input"][:20].encode()
    path.write_bytes(raw.replace(target, target[:5] + b"\xff\xfe" + target[5:], 1))
    message = error_of(data(superni(root)))
    assert re.fullmatch(
        rf"{re.escape(str(path))}: record 2 \(0-based index in Instances\): field 'input': not valid UTF-8 \(byte \d+, line \d+\)",
        message,
    ), message
    file = tmp_path / "t.jsonl"
    file.write_bytes(b'{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": "caf\xe9"}\n')
    assert (
        error_of(data({"name": "j", "type": "jsonl", "path": str(file)}))
        == f"{file}: record 2 (1-based line): field 'output': not valid UTF-8 (byte 35 of the line, byte 71 of the file)"
    )


def test_group_naming_a_missing_source_task():
    groups = {"sentiment": {"tasks": [SST2, "task999_does_not_exist"]}}
    message = error_of(data(superni(groups=groups)))
    assert (
        message
        == f"config: record 1: field 'data.sources[0].groups.sentiment.tasks': source task 'task999_does_not_exist' not found in {SUPERNI}"
    )
    message = error_of(data(superni(groups={"g": {"categories": ["Sentiment Analysis", "Poetry"]}})))
    assert message == "config: field 'data.sources[0].groups.g.categories': no source task has category 'Poetry'"


def test_order_naming_a_missing_task():
    message = error_of(data(superni()), orders={"main": ["sentiment", "topics", "poetry"]})
    assert (
        message
        == "config: record 2: field 'orders.main': task 'poetry' is not produced by any data source (ingested tasks: sentiment, topics)"
    )


def test_conflicting_sources():
    demo = {"name": "sni", "type": "demo", "n_train": 5, "n_test": 2, "tasks": ["sentiment"]}
    assert error_of(data(superni(), demo)) == "config: field 'data.sources[1].name': duplicate source name 'sni'"
    demo["name"] = "demo"
    assert (
        error_of(data(superni(), demo))
        == "config: field 'data.sources[1]': task 'sentiment' is produced by both sources 'sni' and 'demo'"
    )


def test_a_task_without_test_examples():
    message = error_of(data(superni(), max_test_per_task=0))
    assert (
        message
        == "config: field 'data.max_test_per_task': task 'sentiment' has no test examples left after max_test_per_task 0"
    )

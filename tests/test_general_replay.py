"""General-data replay: the general-data file (real Self-Instruct prompts answered by hand), the
general_replay method, and the data side of TRACE's replay recipe (trace_general_replay's extra pass)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_replay import make_instances

from inscl.core import artifacts
from inscl.core.config import ConfigError, validate_config
from inscl.core.io import InputError
from inscl.data.general import load_general
from inscl.replay.select_replay import ReplayData, extra_pass_order, load_strategy, replay_order, select_replay
from inscl.replay.strategies import ReplaySettings

FIXTURE = Path(__file__).parent / "fixtures" / "data" / "general" / "self_instruct_answered.json"
HHH = Path("/work/shared/data/trace/hhh/helpful/self-instruct/test.json")
ORDER = ["a", "b", "c", "d"]
GENERAL = {"path": str(FIXTURE), "name": "lima_like", "count": None, "fraction": None}


@pytest.fixture(scope="module")
def general():
    return load_general(GENERAL)


def replay_data(general_rows, spec=None):
    instances = make_instances(spec or {"a": [30, 20], "b": [25], "c": [10, 10, 10], "d": [40]})
    return ReplayData.from_frames(instances, ORDER, general_data=general_rows)


# ---- the general-data file


def test_trace_format_file_becomes_training_rows_in_file_order(general, tmp_path):
    records = json.loads(FIXTURE.read_text())
    assert len(general) == len(records) == 12
    assert general["instruction"].tolist() == [r["prompt"] for r in records]
    assert [list(o) for o in general["output"]] == [[r["answer"]] for r in records]
    assert set(general["split"]) == {"train"} and set(general["task"]) == {"lima_like"}
    assert set(general["input"]) == {""} and general["instance_id"].is_unique
    artifacts.write(general, "general_data", tmp_path / "general.parquet")  # the declared schema fits


def test_jsonl_in_both_record_shapes_and_a_trace_folder(tmp_path):
    lines = [
        {"instruction": "Name a colour.", "input": "", "output": "Blue."},
        {"prompt": "Say hello in French.", "answer": "Bonjour."},
        {"instruction": "Add.", "input": "2 and 3", "output": ["5", "five"]},
    ]
    (tmp_path / "mix.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    rows = load_general({**GENERAL, "path": str(tmp_path / "mix.jsonl")})
    assert rows["instruction"].tolist() == ["Name a colour.", "Say hello in French.", "Add."]
    assert rows["input"].tolist() == ["", "", "2 and 3"]
    assert [list(o) for o in rows["output"]] == [["Blue."], ["Bonjour."], ["5", "five"]]
    folder = tmp_path / "Lima"
    folder.mkdir()
    (folder / "train.json").write_text(FIXTURE.read_text())
    assert len(load_general({**GENERAL, "path": str(folder)})) == 12


@pytest.mark.skipif(not HHH.exists(), reason="the shared TRACE HHH prompts are not on this machine")
def test_prompts_without_answers_are_refused_naming_file_record_and_field():
    with pytest.raises(InputError) as info:
        load_general({**GENERAL, "path": str(HHH)})
    assert str(info.value).startswith(f"{HHH}: record 0 (0-based index in the list): field 'answer': empty answer")


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"prompt": "x", "answer": "y"}', "expected a list of {prompt, answer}"),
        ('[{"prompt": "x"}]', "field 'answer': missing field"),
        ('[{"prompt": "x", "answer": "y"}, 3]', "record 1 (0-based index in the list): expected an object"),
        ("[]", "no records"),
    ],
)
def test_malformed_general_files_are_one_line_errors(tmp_path, content, expected):
    path = tmp_path / "general.json"
    path.write_text(content)
    with pytest.raises(InputError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")):
        load_general({**GENERAL, "path": str(path)})
    with pytest.raises(InputError, match="general-data file not found"):
        load_general({**GENERAL, "path": str(tmp_path / "missing.json")})


# ---- general_replay


@pytest.mark.parametrize("count, fraction, expected", [(None, None, 12), (5, None, 5), (50, None, 12), (None, 0.25, 3)])
def test_general_replay_adds_the_general_rows_to_random_replay(general, count, fraction, expected):
    data = replay_data(general)
    settings = ReplaySettings(replay_per_task=7, general_count=count, general_fraction=fraction)
    frames = replay_order(data, load_strategy("general_replay"), settings, "o", ORDER, "general_replay", 3)
    random = replay_order(data, load_strategy("random"), settings, "o", ORDER, "random", 3)
    for stage, (frame, plain) in enumerate(zip(frames, random), start=1):
        mixed = frame[frame["task"] == "lima_like"]
        assert len(mixed) == expected  # stage 1 too: general data does not depend on earlier tasks
        assert (frame["task"] != "lima_like").sum() == 7 * (stage - 1) == len(plain)
        assert set(mixed["instance_id"]) <= set(general["instance_id"])
        assert mixed["reason"].str.startswith(f"general data lima_like: {expected} of 12 rows").all()
    again = replay_order(data, load_strategy("general_replay"), settings, "o", ORDER, "general_replay", 3)
    assert all(f["instance_id"].tolist() == g["instance_id"].tolist() for f, g in zip(frames, again))
    if expected < 12:  # each stage draws its own sample
        assert len({tuple(f.loc[f["task"] == "lima_like", "instance_id"]) for f in frames}) > 1


def test_select_replay_writes_general_rows_and_counts_them_in_the_composition(general, tmp_path):
    instances = make_instances({"a": [30], "b": [20], "c": [10], "d": [10]})
    artifacts.write(instances, "instances", tmp_path / "i.parquet")
    artifacts.write(general, "general_data", tmp_path / "g.parquet")
    inputs = {"instances": str(tmp_path / "i.parquet"), "general_data": str(tmp_path / "g.parquet")}
    settings = {"replay": {"replay_per_task": 4, "general": {**GENERAL, "count": 2}}}
    select_replay(inputs, settings, "o", ORDER, "general_replay", 0, tmp_path / "out")
    composition = artifacts.read(tmp_path / "out" / "composition.parquet", "composition")
    general_rows = composition[composition["source_task"] == "lima_like"]
    assert general_rows["n_examples"].tolist() == [2, 2, 2, 2]
    stage3 = artifacts.read(tmp_path / "out" / "stage3.parquet", "replay_stage")
    assert stage3["task"].value_counts().to_dict() == {"a": 4, "b": 4, "lima_like": 2}


# ---- TRACE's recipe: the extra pass


def test_trace_extra_pass_is_the_first_tenth_of_each_earlier_task_plus_all_general_data(general):
    data = replay_data(general)
    strategy = load_strategy("trace_general_replay")
    settings = ReplaySettings(trace_fraction=0.1)
    mixed = replay_order(data, strategy, settings, "o", ORDER, "trace_general_replay", 0)
    assert [len(frame) for frame in mixed] == [0, 0, 0, 0]  # nothing is mixed into a stage
    extra = extra_pass_order(data, strategy, settings, "o", ORDER, "trace_general_replay", 0)
    train = data.instances[data.instances["split"] == "train"]
    first = {task: train.loc[train["task"] == task, "instance_id"].tolist() for task in ORDER}  # file order
    for stage, frame in enumerate(extra, start=1):
        counts = frame["task"].value_counts().to_dict()
        expected = {task: len(first[task]) // 10 for task in ORDER[: stage - 1]}  # floor, as TRACE's int()
        assert counts == {**expected, "lima_like": 12}  # after stage 1: the general data alone
        for task in ORDER[: stage - 1]:
            assert set(frame.loc[frame["task"] == task, "instance_id"]) == set(first[task][: expected[task]])
        assert ORDER[stage - 1] not in counts  # never the current task
        assert frame["position"].tolist() == list(range(len(frame)))
        assert (frame["stage"] == stage).all() and (frame["current_task"] == ORDER[stage - 1]).all()
    again = extra_pass_order(data, strategy, settings, "o", ORDER, "trace_general_replay", 0)
    other_seed = extra_pass_order(data, strategy, settings, "o", ORDER, "trace_general_replay", 1)
    assert [f["instance_id"].tolist() for f in again] == [f["instance_id"].tolist() for f in extra]
    assert [f["instance_id"].tolist() for f in other_seed] != [f["instance_id"].tolist() for f in extra]
    assert sorted(other_seed[3]["instance_id"]) == sorted(extra[3]["instance_id"])  # same rows, another order


def test_select_replay_writes_the_extra_pass_files(general, tmp_path):
    instances = make_instances({"a": [30], "b": [20], "c": [10], "d": [10]})
    artifacts.write(instances, "instances", tmp_path / "i.parquet")
    artifacts.write(general, "general_data", tmp_path / "g.parquet")
    inputs = {"instances": str(tmp_path / "i.parquet"), "general_data": str(tmp_path / "g.parquet")}
    settings = {"replay": {"trace_fraction": 0.1, "general": GENERAL}}
    select_replay(inputs, settings, "o", ORDER, "trace_general_replay", 0, tmp_path / "out")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["composition.parquet"] + [f"extra{k}.parquet" for k in range(1, 5)] + [
        f"stage{k}.parquet" for k in range(1, 5)
    ]
    extra4 = artifacts.read(tmp_path / "out" / "extra4.parquet", "extra_pass")
    assert extra4["task"].value_counts().to_dict() == {"lima_like": 12, "a": 3, "b": 2, "c": 1}
    composition = artifacts.read(tmp_path / "out" / "composition.parquet", "composition")
    assert composition.loc[composition["stage"] == 4, "n_examples"].tolist() == [3, 2, 1, 12]


# ---- configuration


def config(**extra):
    base = {"data": {"sources": [{"name": "d", "type": "demo"}]}, "orders": {"o": ["sentiment", "addition"]}}
    return {**base, **extra}


def test_general_methods_need_the_file():
    with pytest.raises(ConfigError, match="'replay.general.path': method 'general_replay' needs a general-data file"):
        validate_config(config(methods=["general_replay"]))
    validate_config(config(methods=["general_replay"], replay={"general": {"path": str(FIXTURE)}}))
    validate_config(config(methods=["trace_general_replay"], replay={"general": {"path": str(FIXTURE)}}))
    with pytest.raises(ConfigError, match="give count or fraction, not both"):
        validate_config(config(replay={"general": {"path": "x", "count": 3, "fraction": 0.5}}))
    with pytest.raises(ConfigError, match="'sentiment' is also an experiment task"):
        validate_config(config(replay={"general": {"path": "x", "name": "sentiment"}}))


def test_general_rows_never_enter_a_task_pool(general):
    data = replay_data(general)
    assert "lima_like" not in data.pools
    assert np.array_equal(data.general, np.arange(len(data.instances) - 12, len(data.instances)))
    assert isinstance(data.instances, pd.DataFrame) and data.general_name == "lima_like"

import math

import pandas as pd
import pytest

from inscl.core.io import InputError
from inscl.instructions.insinfo import compute_insinfo, insinfo_scores

LN2, LN3 = math.log(2), math.log(3)


def instances(pairs):
    """instances frame from (task, instruction_id, split) triples."""
    return pd.DataFrame(
        {
            "task": [p[0] for p in pairs],
            "instruction_id": [p[1] for p in pairs],
            "split": [p[2] if len(p) > 2 else "train" for p in pairs],
        }
    )


TAGS = pd.DataFrame(
    {
        "instruction_id": ["i1", "i2", "i3", "i4", "i5"],
        "tags": [["a", "b"], ["a", "a"], ["b", "c"], [], ["z"]],
    }
)
# t1: i1, i2 (twice); t2: i2 (shared), i3, i4; i5 only in a test split; t3 is not in any order.
INSTANCES = instances(
    [
        ("t1", "i1"),
        ("t1", "i2"),
        ("t1", "i2"),
        ("t2", "i2"),
        ("t2", "i3"),
        ("t2", "i4"),
        ("t2", "i5", "test"),
        ("t3", "i5"),
    ]
)


def test_scores_by_hand():
    scores = insinfo_scores(pd.Series([["a", "b"], ["a"], ["b", "c"], []], index=["i1", "i2", "i3", "i4"]))
    # N = 4; f_a = 2, f_b = 2, f_c = 1
    assert scores.loc["i1", "insinfo"] == pytest.approx(math.log(4 / 2) + math.log(4 / 2))
    assert scores.loc["i2", "insinfo"] == pytest.approx(LN2)
    assert scores.loc["i3", "insinfo"] == pytest.approx(LN2 + math.log(4))
    assert scores.loc["i4", "insinfo"] == 0.0
    assert scores["n_tags"].tolist() == [2, 1, 2, 0]


def test_rarer_and_more_tags_both_raise_insinfo():
    scores = insinfo_scores(pd.Series([["x"], ["x", "y"], ["x", "rare"], ["x", "y"]], index=list("abcd")))
    assert scores.loc["b", "insinfo"] > scores.loc["a", "insinfo"]
    assert scores.loc["c", "insinfo"] > scores.loc["b", "insinfo"]
    assert scores.loc["a", "insinfo"] == 0.0  # a tag every instruction carries is worth nothing


def test_experiment_pool_counts_distinct_training_instructions_of_the_order_tasks():
    result = compute_insinfo(TAGS, INSTANCES, ["t1", "t2"], {}, pool="experiment")
    # pool = {i1, i2, i3, i4} (i5 is test-only in t2 and t3 is not in an order): N = 4
    # f_a = 2 (i1, i2; i2's duplicate tag counts once), f_b = 2, f_c = 1
    got = {(r.task, r.instruction_id): (r.n_tags, r.insinfo) for r in result.itertuples()}
    assert got == {
        ("t1", "i1"): (2, pytest.approx(2 * LN2)),
        ("t1", "i2"): (1, pytest.approx(LN2)),
        ("t2", "i2"): (1, pytest.approx(LN2)),
        ("t2", "i3"): (2, pytest.approx(LN2 + math.log(4))),
        ("t2", "i4"): (0, 0.0),
    }
    assert result["order"].isna().all() and result["stage"].isna().all()
    assert list(result.columns) == ["order", "stage", "task", "instruction_id", "n_tags", "insinfo"]


def test_cumulative_pool_per_order_and_stage(tmp_path):
    result = compute_insinfo(
        TAGS, INSTANCES, ["t1", "t2"], {"fwd": ["t1", "t2"], "rev": ["t2", "t1"]}, pool="cumulative"
    )
    key = {(r.order, r.stage, r.task, r.instruction_id): r.insinfo for r in result.itertuples()}
    # fwd stage 1: pool {i1, i2}, N = 2, f_a = 2, f_b = 1
    assert key[("fwd", 1, "t1", "i1")] == pytest.approx(LN2)
    assert key[("fwd", 1, "t1", "i2")] == 0.0
    assert ("fwd", 1, "t2", "i3") not in key
    # rev stage 1: pool {i2, i3, i4}, N = 3, f_a = 1, f_b = 1, f_c = 1
    assert key[("rev", 1, "t2", "i3")] == pytest.approx(2 * LN3)
    assert key[("rev", 1, "t2", "i2")] == pytest.approx(LN3)
    # stage 2 of both orders is the whole experiment pool
    assert key[("fwd", 2, "t2", "i3")] == pytest.approx(LN2 + math.log(4))
    assert key[("rev", 2, "t1", "i1")] == pytest.approx(2 * LN2)
    assert len(result) == 2 + 5 + 3 + 5
    result.to_parquet(tmp_path / "insinfo.parquet")
    back = pd.read_parquet(tmp_path / "insinfo.parquet")
    assert back["stage"].dropna().astype(int).tolist() == result["stage"].astype(int).tolist()


def test_missing_tags_row_and_missing_task_are_input_errors():
    with pytest.raises(InputError, match=r"tags.parquet: record i3: instruction has no tags row"):
        compute_insinfo(TAGS[TAGS["instruction_id"] != "i3"], INSTANCES, ["t1", "t2"], {})
    with pytest.raises(InputError, match=r"instances.parquet: record t9: field 'task': task has no training examples"):
        compute_insinfo(TAGS, INSTANCES, ["t1", "t9"], {})

"""Replay composition: the table the select_replay rule writes next to the stage files
(inscl.replay.select_replay.composition), and the report's figures of it and of the task distances
(inscl.report.plots), on replay folders selected from real parquet inputs."""

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from inscl.core import artifacts, runs
from inscl.replay.select_replay import composition, select_replay
from inscl.report import plots

pytestmark = pytest.mark.timeout(120)

# examples per instruction of each task's training split
SPEC = {"a": [30, 20, 10], "b": [15, 15], "c": [40, 5, 5, 5], "d": [12, 12, 12]}
ORDER = ["a", "b", "c", "d"]
DISTANCES = {("a", "b"): 0.2, ("a", "c"): 0.4, ("a", "d"): 0.9, ("b", "c"): 0.1, ("b", "d"): 0.3, ("c", "d"): 0.6}
METHODS = ["random", "inscl"]
SEEDS = [0, 1]
SETTINGS = {"replay": {"replay_per_task": 6}, "insinfo": {"pool": "experiment"}}


def instances() -> pd.DataFrame:
    rows = []
    for task, counts in SPEC.items():
        for k, count in enumerate(counts):
            rows += [(task, "train", f"{task}-{k}-{m:03d}", f"{task}-i{k}") for m in range(count)]
        rows += [(task, "test", f"{task}-test-{m}", f"{task}-i0") for m in range(2)]
    frame = pd.DataFrame(rows, columns=["task", "split", "instance_id", "instruction_id"])
    return frame.assign(
        instruction="Do " + frame["instruction_id"],
        input="x " + frame["instance_id"],
        output=[["y"]] * len(frame),
        source="test",
        source_task=frame["task"],
        source_file="memory",
    )


def distances(not_converged=()) -> pd.DataFrame:
    rows = []
    for (a, b), d in DISTANCES.items():
        for x, y in [(a, b), (b, a)]:
            rows.append(
                dict(
                    task_a=x,
                    task_b=y,
                    distance=d,
                    solver="emd",
                    converged=(a, b) not in not_converged,
                    n_iter=10,
                    max_iter=100,
                    seconds=0.01,
                    n_a=3,
                    n_b=3,
                )
            )
    return pd.DataFrame(rows)


def insinfo(frame: pd.DataFrame) -> pd.DataFrame:
    """The experiment pool (no order, no stage), every instruction equally informative."""
    pairs = frame[frame["split"] == "train"][["task", "instruction_id"]].drop_duplicates()
    return pairs.assign(order=None, stage=pd.array([pd.NA] * len(pairs), dtype="Int64"), n_tags=1, insinfo=1.0)


@pytest.fixture(scope="module")
def replay_folders(tmp_path_factory):
    """results/replay/o/{method}/seed{seed}/ selected by the select_replay rule's function from written inputs."""
    root = tmp_path_factory.mktemp("replay")
    frame = instances()
    inputs = {}
    for name, table in [("instances", frame), ("distances", distances()), ("insinfo", insinfo(frame))]:
        inputs[name] = str(root / artifacts.path(name))
        artifacts.write(table, name, inputs[name])
    folders = {}
    for method in METHODS:
        for seed in SEEDS:
            folders[(method, seed)] = root / runs.replay_folder("o", method, seed)
            select_replay(inputs, SETTINGS, "o", ORDER, method, seed, folders[(method, seed)])
    return folders


def read_compositions(folders) -> pd.DataFrame:
    frames = [artifacts.read(folder / "composition.parquet", "composition") for folder in folders.values()]
    return pd.concat(frames, ignore_index=True)


def test_composition_counts_every_earlier_task_of_every_stage(replay_folders):
    table = read_compositions(replay_folders)
    assert list(table.columns) == artifacts.columns("composition")
    # stages 2..4 have 1 + 2 + 3 earlier tasks (stage 1 none); 2 methods x 2 seeds
    assert len(table) == 6 * 4
    assert set(table["order"]) == {"o"} and set(table["stage"]) == {2, 3, 4}
    inscl = table[(table["method"] == "inscl") & (table["seed"] == 0)].set_index(["stage", "source_task"])
    # stage 4: budget 3 x 6 = 18 over the distances to d, W = (0.9, 0.3, 0.6) -> (9, 3, 6)
    assert inscl.loc[4, "n_examples"].to_dict() == {"a": 9, "b": 3, "c": 6}
    assert inscl.loc[2, "n_examples"].to_dict() == {"a": 6}
    assert set(inscl.loc[3, "current_task"]) == {"c"}
    totals = table.groupby(["method", "seed", "stage"])["n_examples"].sum()
    assert (totals == totals.index.get_level_values("stage").map(lambda stage: 6 * (stage - 1))).all()


def test_composition_matches_the_stage_files(replay_folders):
    for (method, seed), folder in replay_folders.items():
        table = artifacts.read(folder / "composition.parquet", "composition")
        assert (table["method"] == method).all() and (table["seed"] == seed).all()
        for stage in range(1, len(ORDER) + 1):
            replayed = artifacts.read(folder / f"stage{stage}.parquet", "replay_stage", ["task"])["task"]
            counts = table[table["stage"] == stage].set_index("source_task")["n_examples"]
            assert counts.to_dict() == {task: int((replayed == task).sum()) for task in ORDER[: stage - 1]}


def test_composition_lists_earlier_tasks_that_replay_nothing():
    empty = pd.DataFrame({"task": pd.Series(dtype=str)})
    stages = [empty, empty, pd.DataFrame({"task": ["b", "b"]})]
    table = composition(stages, "o", ["a", "b", "c"], "random", 3)
    assert table[["stage", "current_task", "source_task", "n_examples"]].values.tolist() == [
        [2, "b", "a", 0],
        [3, "c", "a", 0],
        [3, "c", "b", 2],
    ]
    assert (table["seed"] == 3).all() and (table["method"] == "random").all()


def test_composition_means_average_over_the_seeds_of_each_method():
    rows = pd.DataFrame(
        [
            dict(method="m", seed=0, stage=2, source_task="a", n_examples=10),
            dict(method="m", seed=1, stage=2, source_task="a", n_examples=4),
            dict(method="m", seed=1, stage=3, source_task="b", n_examples=8),  # seed 0 has no row: counts as 0
            dict(method="n", seed=5, stage=2, source_task="a", n_examples=3),
        ]
    )
    means = plots.composition_means(rows).set_index(["method", "stage", "source_task"])["n_examples"]
    assert means.to_dict() == {("m", 2, "a"): 7.0, ("m", 3, "b"): 4.0, ("n", 2, "a"): 3.0}


def test_distance_matrix_is_square_with_a_zero_diagonal_and_marks_failed_solves():
    table, failed = plots.distance_matrix(distances(not_converged=[("b", "d")]), ORDER)
    assert list(table.index) == ORDER and list(table.columns) == ORDER
    assert np.diag(table.to_numpy()).tolist() == [0.0] * 4
    assert table.loc["a", "d"] == 0.9 and table.loc["d", "a"] == 0.9
    assert failed.to_numpy().sum() == 2 and failed.loc["b", "d"] and failed.loc["d", "b"]
    table, _ = plots.distance_matrix(distances(), ORDER + ["e"])
    assert table.loc["e", "e"] == 0.0 and table.loc["a", "e"] != table.loc["a", "e"]  # NaN: not measured


def picture(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    image.verify()
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"))


def test_figures_are_drawn(replay_folders):
    table = read_compositions(replay_folders)
    drawn = plots.replay_composition(table, ["no_replay", *METHODS], ORDER, "Replayed examples per stage · order o")
    heatmap = plots.distance_heatmap(distances(not_converged=[("b", "d")]), ORDER, "Task distances")
    for png in (drawn, heatmap):
        pixels = picture(png)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300
        assert pixels.std() > 10 and len(np.unique(pixels)) > 20  # drawn, not blank

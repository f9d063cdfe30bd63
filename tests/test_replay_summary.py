import pytest
from matplotlib.image import imread

from inscl.io import InputError
from inscl.replay import ReplayData, ReplaySettings, replay_order, write_replay
from inscl.replay_summary import composition, plot_composition, plot_distances
from test_replay import DISTANCES, INSTANCE_SCHEMA, ORDER, distance_table, make_instances, uniform_insinfo

SPEC = {"a": [30, 20, 10], "b": [15, 15], "c": [40, 5, 5, 5], "d": [12, 12, 12]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay")
    instances = make_instances(SPEC)
    data = ReplayData.from_frames(instances, ORDER, distance_table(DISTANCES), uniform_insinfo(instances))
    folders = {}
    for method in ("no_replay", "random", "inscl"):
        for seed in (0, 1):
            folder = root / method / f"seed{seed}"
            write_replay(replay_order(data, ReplaySettings(replay_per_task=6), "o", ORDER, method, seed), folder, INSTANCE_SCHEMA)
            folders[(method, seed)] = folder
    return folders


def test_composition_counts_every_earlier_task_of_every_stage(runs):
    table = composition(runs, "o", ORDER)
    assert list(table.columns) == ["order", "method", "seed", "stage", "current_task", "source_task", "n_examples"]
    # stages 2..4 have 1 + 2 + 3 earlier tasks; 3 methods x 2 seeds
    assert len(table) == 6 * 6
    inscl = table[(table["method"] == "inscl") & (table["seed"] == 0)].set_index(["stage", "source_task"])["n_examples"]
    # stage 4: budget 18 over W = (0.9, 0.3, 0.6) -> (9, 3, 6)
    assert inscl.loc[4].to_dict() == {"a": 9, "b": 3, "c": 6}
    assert inscl.loc[2].to_dict() == {"a": 6}
    assert (table[table["method"] == "no_replay"]["n_examples"] == 0).all()
    assert (table.groupby(["method", "seed", "stage"])["n_examples"].sum().loc["random"] == [6, 12, 18] * 2).all()
    assert set(table["current_task"][table["stage"] == 3]) == {"c"}


def test_composition_rejects_missing_stages_and_foreign_tasks(runs, tmp_path):
    with pytest.raises(InputError, match=r"seed0: missing stage5.parquet"):
        composition({("inscl", 0): runs[("inscl", 0)]}, "o", ORDER + ["e"])
    with pytest.raises(InputError, match=r"record c: field 'task': replays a task that is not earlier in order o"):
        composition({("inscl", 0): runs[("inscl", 0)]}, "o", ["a", "b", "d", "c"])


def test_figures_are_written(runs, tmp_path):
    table = composition(runs, "o", ORDER)
    plot_composition(table, ORDER, ["no_replay", "random", "inscl"], tmp_path / "composition.png", "o")
    plot_distances(distance_table(DISTANCES), ORDER, tmp_path / "distances.png", "o")
    for name in ("composition.png", "distances.png"):
        image = imread(tmp_path / name)
        assert image.shape[0] > 200 and image.shape[1] > 200
        assert image.std() > 0.05  # not a blank canvas
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind

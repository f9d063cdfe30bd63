import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inscl.core.io import InputError
from inscl.core.methods import METHODS
from inscl.replay import select_replay
from inscl.replay.sampling import TaskPool, allocate, apportion, build_pools, sample_insinfo
from inscl.replay.select_replay import ReplayData, composition, load_strategy, write_replay
from inscl.replay.strategies import ReplaySettings

REPLAYING = [name for name, method in METHODS.items() if method.strategy]


def replay_stage(data, settings, order, tasks, method, seed, stage):
    return select_replay.replay_stage(data, load_strategy(method), settings, order, tasks, method, seed, stage)


def replay_order(data, settings, order, tasks, method, seed):
    return select_replay.replay_order(data, load_strategy(method), settings, order, tasks, method, seed)


def make_instances(spec: dict[str, list[int]], n_test: int = 2) -> pd.DataFrame:
    """Examples per instruction for each task; instances are listed in a scrambled order."""
    rows = []
    for task, counts in spec.items():
        for k, count in enumerate(counts):
            for m in range(count):
                rows.append((task, "train", f"{task}-{k}-{m:03d}", f"{task}-i{k}"))
        rows += [(task, "test", f"{task}-test-{m}", f"{task}-i0") for m in range(n_test)]
    frame = pd.DataFrame(rows, columns=["task", "split", "instance_id", "instruction_id"])
    frame["instruction"] = "Do " + frame["instruction_id"]
    frame["input"] = "x " + frame["instance_id"]
    frame["output"] = [["y"] for _ in range(len(frame))]
    frame["source"], frame["source_task"], frame["source_file"] = "test", frame["task"], "memory"
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)


def pool_of(counts) -> TaskPool:
    counts = np.asarray(counts)
    return TaskPool("t", np.arange(counts.sum()), np.array([f"i{k}" for k in range(len(counts))]), counts)


def uniform_insinfo(instances, score=1.0):
    pairs = instances[instances["split"] == "train"][["task", "instruction_id"]].drop_duplicates()
    return pairs.assign(order=None, stage=pd.array([pd.NA] * len(pairs), dtype="Int64"), n_tags=1, insinfo=score)


def distance_table(values: dict[tuple[str, str], float]) -> pd.DataFrame:
    rows = [(a, b, d) for (a, b), d in values.items()] + [(b, a, d) for (a, b), d in values.items()]
    return pd.DataFrame(rows, columns=["task_a", "task_b", "distance"])


# --------------------------------------------------------------------------- quotas by hand


def test_apportion_floors_then_gives_the_remainder_to_the_largest_weights():
    assert apportion(10, [0.5, 0.3, 0.2]).tolist() == [5, 3, 2]
    # 7 * (0.2, 0.5, 0.3) = (1.4, 3.5, 2.1) -> (1, 3, 2), remainder 1 to the largest weight
    assert apportion(7, [0.2, 0.5, 0.3]).tolist() == [1, 4, 2]
    # 11 * (0.1, 0.4, 0.4, 0.1) = (1.1, 4.4, 4.4, 1.1) -> (1, 4, 4, 1), remainder 1: tie -> earlier task
    assert apportion(11, [0.1, 0.4, 0.4, 0.1]).tolist() == [1, 5, 4, 1]
    assert apportion(10, [1, 1, 1]).tolist() == [4, 3, 3]
    assert apportion(10, [0, 0]).tolist() == [5, 5]
    # 0.29 * 100 = 28.999999999999996 in floating point: still 29
    assert apportion(100, [0.29, 0.71]).tolist() == [29, 71]


def test_allocate_caps_and_redistributes_by_weight():
    # initial (5, 10, 15); task 1 holds 4, its excess 6 goes to tasks 0 and 2 by weight 1:3 -> (1, 4) + 1 to task 2
    allocation = allocate(30, [1, 2, 3], [100, 4, 100])
    assert allocation.initial.tolist() == [5, 10, 15]
    assert allocation.quotas.tolist() == [6, 4, 20]
    assert allocation.capped.tolist() == [False, True, False]
    assert allocation.received.tolist() == [1, 0, 5]


def test_allocate_cascades_and_stops_when_every_pool_is_full():
    # (5, 10, 15) -> task 1 capped at 4 -> (6, 4, 20) -> task 2 capped at 16 -> (10, 4, 16)
    assert allocate(30, [1, 2, 3], [100, 4, 16]).quotas.tolist() == [10, 4, 16]
    assert allocate(30, [1, 2, 3], [2, 3, 4]).quotas.tolist() == [2, 3, 4]
    assert allocate(0, [1, 2], [5, 5]).quotas.tolist() == [0, 0]


# --------------------------------------------------------------------------- InsInfo-guided sampling


def counts_per_instruction(pool, positions):
    return np.bincount(pool.codes[positions], minlength=len(pool.counts)).tolist()


def test_quota_below_the_instruction_count_takes_the_top_instructions_once_each():
    pool = pool_of([3, 3, 3, 3, 3])
    scores = np.array([0.5, 2.0, 1.0, 3.0, 0.1])
    pick = sample_insinfo(pool, scores, 3, np.random.default_rng(0))
    assert counts_per_instruction(pool, pick.positions) == [0, 1, 1, 1, 0]
    assert sorted(pick.scores.tolist()) == [1.0, 2.0, 3.0]
    assert "top 3 of 5" in pick.note


def test_quota_above_the_instruction_count_trims_but_keeps_every_instruction():
    pool = pool_of([10, 10, 10, 2])
    # p = (0.75, 0.25, 0, 0): max(1, floor(12 p)) = (9, 3, 1, 1) = 14 -> trim 2 from the first two
    for seed in range(20):
        pick = sample_insinfo(pool, np.array([3.0, 1, 0, 0]), 12, np.random.default_rng(seed))
        got = counts_per_instruction(pool, pick.positions)
        assert sum(got) == 12 and got[2:] == [1, 1] and got[0] + got[1] == 10 and got[0] >= 7 and got[1] >= 1


def test_quota_above_the_instruction_count_tops_up_at_random():
    pool = pool_of([10, 10, 10])
    got = counts_per_instruction(pool, sample_insinfo(pool, np.ones(3), 10, np.random.default_rng(1)).positions)
    assert sum(got) == 10 and min(got) >= 3  # floor(10 / 3) = 3 each, then 1 at random
    # an instruction cannot give more than it has: (9 -> 2, 1), then 7 more from the rest
    pool = pool_of([2, 20])
    pick = sample_insinfo(pool, np.array([9.0, 1.0]), 10, np.random.default_rng(2))
    assert counts_per_instruction(pool, pick.positions) == [2, 8]
    assert "top-up of 7" in pick.note


def test_zero_insinfo_everywhere_spreads_evenly():
    pool = pool_of([5, 5])
    assert counts_per_instruction(pool, sample_insinfo(pool, np.zeros(2), 6, np.random.default_rng(0)).positions) == [
        3,
        3,
    ]


@pytest.mark.parametrize("seed", range(30))
def test_insinfo_sampling_is_exact_distinct_and_never_empties_an_instruction(seed):
    rng = np.random.default_rng(seed)
    pool = pool_of(rng.integers(1, 30, size=rng.integers(1, 12)))
    scores = rng.exponential(size=len(pool.counts)) * (rng.random(len(pool.counts)) > 0.3)
    quota = int(rng.integers(0, pool.size + 1))
    positions = sample_insinfo(pool, scores, quota, np.random.default_rng(seed)).positions
    assert len(positions) == quota == len(np.unique(positions))
    if quota >= len(pool.counts):
        assert min(counts_per_instruction(pool, positions)) >= 1


# --------------------------------------------------------------------------- methods over an order

SPEC = {"a": [30, 20, 10], "b": [15, 15], "c": [40, 5, 5, 5], "d": [12, 12, 12]}
ORDER = ["a", "b", "c", "d"]
DISTANCES = {("a", "b"): 0.2, ("a", "c"): 0.4, ("a", "d"): 0.9, ("b", "c"): 0.1, ("b", "d"): 0.3, ("c", "d"): 0.6}


def make_data(spec=SPEC, distances=DISTANCES, **frames):
    instances = make_instances(spec)
    return ReplayData.from_frames(
        instances, list(spec), distance_table(distances), frames.pop("insinfo", uniform_insinfo(instances)), **frames
    )


def instruction_embeddings(spec, vectors):
    ids = [f"{task}-i{k}" for task, counts in spec.items() for k in range(len(counts))]
    return pd.DataFrame({"instruction_id": ids, "vector": [list(v) for v in vectors]})


def test_pools_hold_the_training_rows_grouped_by_instruction():
    instances = make_instances(SPEC)
    pool = build_pools(instances, ["c"])["c"]
    assert pool.counts.tolist() == [40, 5, 5, 5]
    taken = instances.iloc[pool.rows]
    assert (taken["split"] == "train").all() and (taken["task"] == "c").all()
    assert taken["instance_id"].tolist() == sorted(taken["instance_id"])
    with pytest.raises(InputError, match=r"record z: field 'task': task has no training examples"):
        build_pools(instances, ["z"])
    doubled = pd.concat([instances, instances.iloc[[0]]])
    with pytest.raises(InputError, match=r"field 'instance_id': duplicate instance_id"):
        build_pools(doubled, ["a"])


def test_more_distant_tasks_get_more_replay():
    data = make_data()
    frame = replay_stage(data, ReplaySettings(replay_per_task=8), "o", ORDER, "inscl", 0, 4)
    counts = frame.groupby("task").size()
    # budget 24 over W = (0.9, 0.3, 0.6) / 1.8 -> (12, 4, 8)
    assert counts.to_dict() == {"a": 12, "b": 4, "c": 8}
    assert frame.groupby("task")["quota"].first().to_dict() == {"a": 12, "b": 4, "c": 8}
    assert frame.groupby("task")["distance"].first().to_dict() == {"a": 0.9, "b": 0.3, "c": 0.6}
    assert (frame["current_task"] == "d").all() and (frame["stage"] == 4).all() and (frame["split"] == "train").all()
    # every quota here is at least the task's number of instructions: the proportional branch
    assert frame["reason"].str.contains("InsInfo-proportional").all()
    below = replay_stage(data, ReplaySettings(replay_per_task=1), "o", ORDER, "inscl", 0, 4)
    # budget 3 over W = (0.9, 0.3, 0.6): (1.5, 0.5, 1.0) -> (1, 0, 1), remainder 1 to a -> (2, 0, 1): top-n branch
    assert below.groupby("task").size().to_dict() == {"a": 2, "c": 1}
    assert below["reason"].str.contains("InsInfo top").all()
    assert below.groupby("task")["instruction_id"].nunique().to_dict() == {"a": 2, "c": 1}


def test_capped_quota_is_redistributed_and_the_reason_says_so():
    spec = {"a": [3, 3], "b": [50, 50], "c": [20]}
    data = make_data(spec, {("a", "b"): 0.5, ("a", "c"): 0.9, ("b", "c"): 0.1})
    frame = replay_stage(data, ReplaySettings(replay_per_task=10), "o", ["a", "b", "c"], "inscl", 0, 3)
    # budget 20 over W = (0.9, 0.1) -> (18, 2); a holds 6, its 12 go to b
    assert frame.groupby("task").size().to_dict() == {"a": 6, "b": 14}
    reasons = frame.groupby("task")["reason"].first()
    assert "quota 18 capped at the pool size 6, 12 redistributed" in reasons["a"]
    assert "quota 2 + 12 redistributed from capped tasks = 14" in reasons["b"]


@pytest.mark.parametrize("method", [m for m in REPLAYING if m != "trace_replay" and not METHODS[m].extra_pass])
def test_every_fair_method_spends_exactly_the_same_budget(method):
    spec = {"a": [30, 20, 10], "b": [15, 15], "c": [40, 5, 5, 5], "d": [12, 12, 12]}
    rng = np.random.default_rng(0)
    n_instructions = sum(len(c) for c in spec.values())
    instances = make_instances(spec)
    examples = instances[["instance_id", "task"]].assign(vector=[list(v) for v in rng.normal(size=(len(instances), 6))])
    data = ReplayData.from_frames(
        instances,
        ORDER,
        distance_table(DISTANCES),
        uniform_insinfo(instances),
        instruction_embeddings(spec, rng.normal(size=(n_instructions, 6))),
        examples,
    )
    frames = replay_order(data, ReplaySettings(replay_per_task=7), "o", ORDER, method, 3)
    assert [len(f) for f in frames] == [0, 7, 14, 21]
    for frame in frames:
        assert not frame["instance_id"].duplicated().any()
        assert (frame["method"] == method).all()


def test_no_replay_has_no_strategy_and_trace_replay_takes_a_fraction():
    assert METHODS["no_replay"].strategy is None
    data = make_data()
    settings = ReplaySettings(replay_per_task=7, trace_fraction=0.1)
    frames = replay_order(data, settings, "o", ORDER, "trace_replay", 0)
    # 10% of 60, 30, 55 training examples, rounded half up: 6, 3, 6 (55 * 0.1 = 5.5 -> 6)
    assert frames[3].groupby("task").size().to_dict() == {"a": 6, "b": 3, "c": 6}
    assert frames[1].groupby("task").size().to_dict() == {"a": 6}


def test_cumulative_insinfo_reads_the_rows_of_the_order_and_stage():
    spec = {"a": [5, 5, 5], "b": [5, 5]}
    rows = []
    for stage, favourite in ((1, "a-i0"), (2, "a-i2")):
        for k in range(3):
            rows.append(("o", stage, "a", f"a-i{k}", 1, 5.0 if f"a-i{k}" == favourite else 1.0))
        rows += [("o", stage, "b", "b-i0", 1, 1.0), ("o", stage, "b", "b-i1", 1, 1.0)]
    insinfo = pd.DataFrame(rows, columns=["order", "stage", "task", "instruction_id", "n_tags", "insinfo"])
    data = make_data(spec, {("a", "b"): 0.5}, insinfo=insinfo)
    frame = replay_stage(
        data, ReplaySettings(replay_per_task=1, insinfo_pool="cumulative"), "o", ["a", "b"], "inscl", 0, 2
    )
    assert frame["instruction_id"].tolist() == ["a-i2"] and frame["score"].tolist() == [5.0]
    with pytest.raises(InputError, match=r"insinfo.parquet: record a/a-i0: no InsInfo in the experiment pool"):
        replay_stage(data, ReplaySettings(replay_per_task=1), "o", ["a", "b"], "inscl", 0, 2)


def test_missing_distance_is_an_input_error():
    data = make_data(distances={("a", "b"): 0.5})
    with pytest.raises(InputError, match=r"distances.parquet: field 'task_a': no distance from a to c"):
        replay_stage(data, ReplaySettings(), "o", ["a", "c"], "inscl", 0, 2)


def test_prototype_data_takes_the_examples_nearest_the_centroids():
    spec = {"a": [9], "b": [3]}
    instances = make_instances(spec)
    centres = {0: [1, 0, 0], 1: [0, 1, 0], 2: [0, 0, 1]}
    vectors = {}
    for m in range(9):  # three tight clusters of three; member 0 of each is its exact centre
        offset = [0.0, 0.05, -0.05][m % 3]
        vectors[f"a-0-{m:03d}"] = np.array(centres[m // 3]) + offset * np.array([1, 1, 1])
    examples = pd.DataFrame({"instance_id": list(vectors), "task": "a", "vector": [list(v) for v in vectors.values()]})
    data = ReplayData.from_frames(instances, ["a", "b"], distance_table({("a", "b"): 1.0}), example_embeddings=examples)
    frame = replay_stage(data, ReplaySettings(replay_per_task=3), "o", ["a", "b"], "prototype_data", 0, 2)
    assert sorted(frame["instance_id"]) == ["a-0-000", "a-0-003", "a-0-006"]
    assert np.allclose(frame["score"], 1.0)


def test_prototype_instruction_and_diverse_instruction_rank_instructions_by_embedding():
    spec = {"a": [4, 4, 4], "b": [4, 4]}
    vectors = [[1, 0.1, 0], [1, -0.1, 0], [0, 1, 0], [1, 0, 0], [0.9, 0.1, 0]]  # a-i0..2, b-i0..1
    data = make_data(spec, {("a", "b"): 1.0}, embeddings=instruction_embeddings(spec, np.array(vectors, float)))
    settings = ReplaySettings(replay_per_task=2)
    # a's centroid leans to e1: a-i0 and a-i1 are nearest, a-i2 (on e2) farthest
    near = replay_stage(data, settings, "o", ["a", "b"], "prototype_instruction", 0, 2)
    assert sorted(near["instruction_id"]) == ["a-i0", "a-i1"]
    # b's instructions lie along e1: the least similar of a's is a-i2, then a-i1 (angled away from b-i1)
    diverse = replay_stage(data, settings, "o", ["a", "b"], "diverse_instruction", 0, 2)
    assert sorted(diverse["instruction_id"]) == ["a-i1", "a-i2"]
    assert diverse["score"].max() < 1.0


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    data = make_data()
    settings = ReplaySettings(replay_per_task=5)
    for name, seed in (("one", 0), ("two", 0), ("other", 1)):
        frames = replay_order(data, settings, "o", ORDER, "inscl", seed)
        write_replay(frames, composition(frames, "o", ORDER, "inscl", seed), tmp_path / name)
    for stage in range(1, 5):
        one, two, other = ((tmp_path / n / f"stage{stage}.parquet").read_bytes() for n in ("one", "two", "other"))
        assert one == two
        if stage > 1:
            assert one != other
    back = pd.read_parquet(tmp_path / "one" / "stage3.parquet")
    assert len(back) == 10 and list(back["output"][0]) == ["y"]
    empty = pd.read_parquet(tmp_path / "one" / "stage1.parquet")
    assert empty.empty and list(empty.columns) == list(back.columns)
    assert pq.read_schema(tmp_path / "one" / "stage1.parquet").field("output").type == pa.list_(pa.string())


def test_replay_does_not_depend_on_the_row_order_of_the_instances():
    data = make_data()
    shuffled = ReplayData.from_frames(
        data.instances.sample(frac=1.0, random_state=5).reset_index(drop=True),
        ORDER,
        distance_table(DISTANCES),
        uniform_insinfo(data.instances),
    )
    settings = ReplaySettings(replay_per_task=5)
    for method in ("inscl", "random"):
        a = replay_stage(data, settings, "o", ORDER, method, 0, 4)["instance_id"].tolist()
        b = replay_stage(shuffled, settings, "o", ORDER, method, 0, 4)["instance_id"].tolist()
        assert a == b

import numpy as np
import pandas as pd
import pytest

from inscl.core.io import InputError
from inscl.replay.distances import ConvergenceError, task_distances, task_point_sets, wasserstein

E1, E2, E3 = np.eye(3)


def random_unit(n, d, seed, shift=0.0):
    x = np.random.default_rng(seed).normal(size=(n, d)) + shift
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_single_points_cost_one_minus_cosine():
    b = np.array([[1.0, 1.0, 0.0]])
    result = wasserstein(E1[None], b)
    assert result.distance == pytest.approx(1 - 1 / np.sqrt(2))
    assert result.converged and result.solver == "emd" and result.n_iter is None


def test_identical_sets_are_at_distance_zero():
    x = random_unit(20, 8, 0)
    assert wasserstein(x, x[::-1]).distance == pytest.approx(0.0, abs=1e-12)


def test_weights_by_hand():
    # all of a's mass on e2 must travel to e1 at cost 1 (orthogonal)
    assert wasserstein(np.stack([E1, E2]), E1[None], [3, 1]).distance == pytest.approx(0.25)
    assert wasserstein(np.stack([E1, E2]), E1[None]).distance == pytest.approx(0.5)
    # a = (1/2, 1/2), b = (3/4, 1/4) on the same points: only 1/4 moves from e2 to e1
    assert wasserstein(np.stack([E1, E2]), np.stack([E1, E2]), None, [3, 1]).distance == pytest.approx(0.25)
    # e1 -> e3 costs 1, e2 -> (e2 + e3)/sqrt2 costs 1 - 1/sqrt2: the optimum pairs them that way
    b = np.stack([E3, (E2 + E3) / np.sqrt(2)])
    assert wasserstein(np.stack([E1, E2]), b).distance == pytest.approx((1 + 1 - 1 / np.sqrt(2)) / 2)


def test_low_cap_is_escalated_to_the_exact_value():
    x, y = random_unit(100, 8, 1), random_unit(120, 8, 2)
    exact = wasserstein(x, y)
    escalated = wasserstein(x, y, max_iter=10)
    assert escalated.converged and escalated.max_iter > 10
    assert escalated.distance == pytest.approx(exact.distance, rel=1e-12)


def test_no_silent_wrong_number_when_the_cap_stays_too_low():
    x, y = random_unit(100, 8, 1), random_unit(120, 8, 2)
    with pytest.raises(ConvergenceError, match=r"emd did not converge within 100 iterations \(100 x 120 points\)"):
        wasserstein(x, y, max_iter=10, escalations=1)


def test_sinkhorn_is_close_to_exact():
    x, y = random_unit(60, 8, 3), random_unit(50, 8, 4, shift=0.5)
    exact = wasserstein(x, y).distance
    entropic = wasserstein(x, y, solver="sinkhorn", reg=0.01)
    assert entropic.solver == "sinkhorn" and entropic.converged and entropic.n_iter > 0
    assert entropic.distance == pytest.approx(exact, abs=0.02)


def test_sinkhorn_switches_to_log_domain_when_the_kernel_underflows():
    noise = np.random.default_rng(0).normal(scale=0.05, size=(7, 4))
    x, y = E1[None, :] + noise[:3, :3], E2[None, :] + noise[3:, :3]  # every pair nearly orthogonal
    exact = wasserstein(x, y).distance
    tiny = wasserstein(x, y, solver="sinkhorn", reg=1e-3)  # exp(-0.95 / 1e-3) underflows
    assert tiny.solver == "sinkhorn_log" and tiny.converged
    assert tiny.distance == pytest.approx(exact, abs=1e-3)


def test_sinkhorn_that_cannot_converge_is_an_error():
    x, y = random_unit(60, 8, 3), random_unit(50, 8, 4, shift=0.5)
    with pytest.raises(ConvergenceError, match="sinkhorn did not converge"):
        wasserstein(x, y, solver="sinkhorn", reg=0.01, max_iter=2, escalations=0)


def frames():
    instances = pd.DataFrame(
        {
            "task": ["a", "a", "a", "b", "b", "c", "c"],
            "instruction_id": ["x1", "x1", "x2", "y1", "y1", "z1", "z1"],
            "split": ["train", "train", "train", "train", "test", "train", "train"],
        }
    )
    embeddings = pd.DataFrame(
        {"instruction_id": ["x1", "x2", "y1", "z1"], "vector": [list(E1), list(E2), list(E1), list(E3)]}
    )
    return instances, embeddings


def test_point_sets_weight_instructions_by_training_examples():
    instances, embeddings = frames()
    sets = task_point_sets(instances, embeddings, ["a", "b", "c"])
    np.testing.assert_array_equal(sets["a"][1], [2, 1])
    np.testing.assert_array_equal(sets["b"][1], [1])  # the test example does not count
    assert task_point_sets(instances, embeddings, ["a"], weights="uniform")["a"][1].tolist() == [1, 1]
    with pytest.raises(InputError, match=r"embeddings.parquet: record x2: no embedding for instruction"):
        task_point_sets(instances, embeddings[embeddings["instruction_id"] != "x2"], ["a"])


def test_task_distances_cover_every_ordered_pair_symmetrically():
    instances, embeddings = frames()
    table = task_distances(task_point_sets(instances, embeddings, ["a", "b", "c"]))
    assert list(zip(table["task_a"], table["task_b"])) == [
        ("a", "b"),
        ("a", "c"),
        ("b", "a"),
        ("b", "c"),
        ("c", "a"),
        ("c", "b"),
    ]
    d = {(r.task_a, r.task_b): r.distance for r in table.itertuples()}
    assert d[("a", "b")] == d[("b", "a")] == pytest.approx(1 / 3)  # a: 2/3 on e1, 1/3 on e2
    assert d[("a", "c")] == pytest.approx(1.0) and d[("b", "c")] == pytest.approx(1.0)
    assert table["converged"].all() and (table["solver"] == "emd").all()
    assert table.set_index(["task_a", "task_b"]).loc[("a", "b"), ["n_a", "n_b"]].tolist() == [2, 1]
    assert table.set_index(["task_a", "task_b"]).loc[("b", "a"), ["n_a", "n_b"]].tolist() == [1, 2]


def test_task_distance_convergence_failure_names_the_pair():
    x, y = random_unit(100, 8, 1), random_unit(120, 8, 2)
    sets = {"p": (x, np.ones(100)), "q": (y, np.ones(120))}
    with pytest.raises(InputError, match=r"record p / q: emd did not converge"):
        task_distances(sets, max_iter=1, escalations=0)

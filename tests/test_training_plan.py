"""The step plan reproduces the papers' optimizer steps per task.

TRACE (BeyonderXX/TRACE @462e39f, /work/notes/trace_facts.md §1-2): 5,000 training examples per
task (the LLM-CL-Benchmark_5000 data), a global batch of 256 examples (scripts/train_seq_naive.sh:
4/GPU x 8 GPUs x GA 8 at :3,7,14; 2/GPU x 8 x GA 16 at :29,33,40), epochs 5,3,7,5,3,5,5,7
(:13), prompt <= 1024 and answer <= 512 tokens (:35-36; data_collator.py:69). DeepSpeed counts
micro-batches across task boundaries, so TRACE's own steps per task are 97,59,137,98,58,98,98,137
(slurm variant) or 98,59,137,98,59,98,98,138 (local variant).

InsCL (OPPO-Mente-Lab/InsCL @3ad357c, /work/notes/inscl_facts.md A1): batch 2/GPU x 8 GPUs x GA 8
= 128 (run_train.sh:8,9,27), 2 epochs (:11). transformers' Trainer takes floor(micro-batches per
epoch / 8) steps per epoch: floor(ceil(5000 / 8 / 2) / 8) x 2 = 39 x 2 = 78 for 5,000 examples.

Ours: round(epochs x examples / batch) steps, the last partial batch a step of its own when it is at
least half a batch, else part of the step before (docs/training.md). That is TRACE's count within
one step per task (its steps straddle tasks, ours cannot) and InsCL's exactly.
"""

from pathlib import Path

import numpy as np
import pytest
import yaml

from inscl.training.batching import plan_training
from inscl.training.examples import Example, Lengths, assemble

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_PER_TASK = 5000

TRACE_BATCH = 256
TRACE_EPOCHS = [5, 3, 7, 5, 3, 5, 5, 7]
TRACE_STEPS_SLURM = [97, 59, 137, 98, 58, 98, 98, 137]
TRACE_STEPS_LOCAL = [98, 59, 137, 98, 59, 98, 98, 138]
TRACE_LENGTHS = Lengths(total=1536, prompt=1024, answer=512)
INSCL_BATCH, INSCL_EPOCHS, INSCL_STEPS = 128, 2, 78
OURS_TRACE = [98, 59, 137, 98, 59, 98, 98, 137]


def trace_sized_task(seed: int) -> list[Example]:
    """5,000 examples of TRACE-like lengths (prompts up to 3,000 tokens, answers up to 700), cut to
    TRACE's limits."""
    rng = np.random.default_rng(seed)
    prompts, answers = rng.integers(20, 3000, EXAMPLES_PER_TASK), rng.integers(1, 700, EXAMPLES_PER_TASK)
    return [
        assemble([1] + [5] * int(p), [7] * int(a), eos_id=2, lengths=TRACE_LENGTHS, bos_id=1)
        for p, a in zip(prompts, answers)
    ]


@pytest.fixture(scope="module")
def trace_tasks():
    return [trace_sized_task(seed) for seed in range(len(TRACE_EPOCHS))]


def test_trace_steps_per_task(trace_tasks):
    assert max(len(e) for task in trace_tasks for e in task) == 1536
    ours = [
        len(plan_training(task, TRACE_BATCH, epochs, seed=1234).steps)
        for task, epochs in zip(trace_tasks, TRACE_EPOCHS)
    ]
    assert ours == OURS_TRACE
    for upstream in (TRACE_STEPS_SLURM, TRACE_STEPS_LOCAL):
        assert all(abs(a - b) <= 1 for a, b in zip(ours, upstream))
        assert abs(sum(ours) - sum(upstream)) <= 2


def test_inscl_steps_per_task(trace_tasks):
    assert len(plan_training(trace_tasks[0], INSCL_BATCH, INSCL_EPOCHS, seed=42).steps) == INSCL_STEPS
    upstream = (-(-(-(-EXAMPLES_PER_TASK // 8)) // 2) // 8) * INSCL_EPOCHS  # floor(ceil(ceil(N/8)/2)/8) per epoch
    assert upstream == INSCL_STEPS


def test_every_trace_step_holds_256_examples_but_the_last(trace_tasks):
    plan = plan_training(trace_tasks[0], TRACE_BATCH, 5, seed=1234)
    sizes = [len(step) for step in plan.steps]
    assert sizes[:-1] == [256] * 97 and sizes[-1] == 5 * 5000 - 97 * 256 == 168


@pytest.mark.parametrize(
    "config, batch, epochs", [("trace.yaml", TRACE_BATCH, TRACE_EPOCHS), ("inscl_grid.yaml", INSCL_BATCH, INSCL_EPOCHS)]
)
def test_the_recipe_configs_use_these_batches(config, batch, epochs):
    training = yaml.safe_load((ROOT / "configs" / config).read_text())["training"]
    assert training["batch_size"] == batch and training["epochs"] == epochs

"""General-data replay (LIMA-style, `replay.general`) and TRACE's replay recipe.

- `general_rows`: the general-data rows of one stage: all of them, or a sample of `replay.general.count`
  rows, or of round(fraction x n) rows (at least one), drawn with the stage's generator and kept in
  file order.
- `GeneralReplay` (method general_replay): the `random` method's replay (replay_per_task random
  examples of each earlier task) plus the stage's general rows, mixed into the stage's training data at
  every stage, stage 1 included (general data does not depend on earlier tasks).
- `TraceExtraPass` (method trace_general_replay): TRACE's replay (BeyonderXX/TRACE@462e39f
  training/replay.py:261-274, 413-462, 480-483). Nothing is mixed into a stage. After the stage's own
  epochs comes one extra epoch over the first floor(trace_fraction x n) training examples of each
  earlier task in file order (TRACE's get_prompt_dataset with sample_ratio 0.1,
  utils/data/data_utils.py:246-253; the current task is not in it), then the general rows (TRACE: all
  of Lima). After stage 1 the pass holds the general data alone. Its order is a permutation drawn
  with the stage's generator (TRACE iterates a RandomSampler, replay.py:417); the `position` column of
  extra{k}.parquet is the order to train in.
"""

from __future__ import annotations

import numpy as np

from inscl.replay.sampling import exact_floor
from inscl.replay.strategies import RandomSampling, StageContext, Strategy, TaskReplay


def general_rows(ctx: StageContext) -> list[TaskReplay]:
    """The stage's general-data rows as one TaskReplay (none without general data)."""
    positions = ctx.data.general
    n = len(positions)
    if n == 0:
        return []
    count, fraction = ctx.settings.general_count, ctx.settings.general_fraction
    if count is not None:
        size, how = min(count, n), f"replay.general.count {count}"
    elif fraction is not None:
        size, how = max(1, int(exact_floor(np.array([fraction * n + 0.5]))[0])), f"replay.general.fraction {fraction}"
    else:
        size, how = n, "all of it"
    picked = positions if size == n else np.sort(ctx.rng("general").choice(positions, size=size, replace=False))
    reason = f"general data {ctx.data.general_name}: {size} of {n} rows ({how})"
    return [TaskReplay(ctx.data.general_name, picked, size, np.full(size, np.nan), np.nan, reason)]


class GeneralReplay(RandomSampling):
    def select(self, ctx):
        return super().select(ctx) + general_rows(ctx)


class TraceExtraPass(Strategy):
    """Nothing mixed into the stage; `extra_pass` gives the set of the epoch after it."""

    def select(self, ctx):
        return []

    def extra_pass(self, ctx: StageContext) -> list[TaskReplay]:
        fraction = ctx.settings.trace_fraction
        replays = []
        for task in ctx.earlier:
            rows = np.sort(ctx.data.pools[task].rows)  # positions in the instances = file order
            size = int(exact_floor(np.array([fraction * len(rows)]))[0])
            reason = f"the first {size} of {len(rows)} training examples (trace_fraction {fraction}, file order)"
            replays.append(TaskReplay(task, rows[:size], size, np.full(size, np.nan), np.nan, reason))
        return replays + general_rows(ctx)

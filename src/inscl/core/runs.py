"""Run paths: where every model, replay set and evaluation of the DAG lives, built and parsed here only.

A run is one trained (or base) model:

- ``base``: the base model, stage 0 of every chain;
- ``{order}/{method}/seed{seed}/stage{k}``: the model after stage k of a chain;
- ``multitask/seed{seed}``: joint training on every task (a reference);
- ``single_task/seed{seed}/{task}``: one model per task (the reference relative gain needs).

Its folder is ``results/runs/<run>``. Stdlib only: the Snakefile imports this at start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from inscl.core.hashing import stable_seed

RESULTS = "results"
RUNS = f"{RESULTS}/runs"
REPLAY = f"{RESULTS}/replay"
JUDGE = f"{RESULTS}/judge"  # JUDGE/<run>/verdicts.parquet, summary.parquet
GENERAL = f"{RESULTS}/general"  # GENERAL/<run>/results.parquet
ICL = f"{RESULTS}/icl"  # ICL/seed<seed>/{predictions,scores,demonstrations,shots}.parquet (method icl)
FORGETTING = f"{RESULTS}/analysis/forgetting"  # FORGETTING/<order>/<method>/seed<seed>.parquet
REFERENCES = ("multitask", "single_task")

_SEED, _STAGE, _NAME = r"seed(?P<seed>\d+)", r"stage(?P<stage>\d+)", r"[^/]+"
_GRAMMAR = {
    "base": re.compile(r"base"),
    "chain": re.compile(rf"(?P<order>{_NAME})/(?P<method>{_NAME})/{_SEED}/{_STAGE}"),
    "multitask": re.compile(rf"multitask/{_SEED}"),
    "single_task": re.compile(rf"single_task/{_SEED}/(?P<task>{_NAME})"),
}
# The `run` wildcard of the evaluation rules: any of the four forms.
RUN_PATTERN = "|".join([r"base", r"multitask/seed\d+", r"single_task/seed\d+/[^/]+", r"[^/]+/[^/]+/seed\d+/stage\d+"])


@dataclass(frozen=True)
class Run:
    kind: str  # base, chain, multitask, single_task
    order: str | None = None
    method: str | None = None
    seed: int | None = None
    stage: int = 0
    task: str | None = None

    @property
    def name(self) -> str:
        if self.kind == "base":
            return "base"
        if self.kind == "chain":
            return f"{self.order}/{self.method}/seed{self.seed}/stage{self.stage}"
        if self.kind == "multitask":
            return f"multitask/seed{self.seed}"
        return f"single_task/seed{self.seed}/{self.task}"

    @property
    def folder(self) -> str:
        return f"{RUNS}/{self.name}"

    @property
    def model(self) -> str:
        return f"{self.folder}/model"

    def file(self, name: str) -> str:
        return f"{self.folder}/{name}"

    @property
    def state(self) -> str:
        """What a chain stage's method leaves for the next stage (methods with state, inscl.core.methods)."""
        return f"{self.folder}/stage_state.safetensors"

    @property
    def previous(self) -> "Run":
        """The run this one starts from: stage k-1 of its chain, or the base model."""
        if self.kind == "chain" and self.stage > 1:
            return chain(self.order, self.method, self.seed, self.stage - 1)
        return BASE


BASE = Run("base")


def chain(order: str, method: str, seed, stage) -> Run:
    """Stage `stage` of a chain; stage 0 is the base model."""
    if int(stage) == 0:
        return BASE
    return Run("chain", order, method, int(seed), int(stage))


def multitask(seed) -> Run:
    return Run("multitask", seed=int(seed), stage=1)


def single_task(seed, task: str) -> Run:
    return Run("single_task", seed=int(seed), stage=1, task=task)


def template(kind: str) -> Run:
    """A run whose parts are Snakemake wildcards, for rule outputs: template("chain").model ==
    "results/runs/{order}/{method}/seed{seed}/stage{stage}/model"."""
    return Run(kind, "{order}", "{method}", "{seed}", "{stage}", "{task}")  # type: ignore[arg-type]


def parse(name: str) -> Run:
    """A run name (see the module docstring) -> Run; ValueError for anything else."""
    for kind, pattern in _GRAMMAR.items():
        match = pattern.fullmatch(name)
        if match:
            fields = match.groupdict()
            if kind == "base":
                return BASE
            if kind == "chain":
                return chain(fields["order"], fields["method"], fields["seed"], fields["stage"])
            if kind == "multitask":
                return multitask(fields["seed"])
            return single_task(fields["seed"], fields["task"])
    raise ValueError(f"not a run name: {name!r}")


def of_path(path, root: str = RUNS) -> Run:
    """The run of any file or folder under `<root>/<run>/` (root: RUNS, JUDGE or GENERAL)."""
    parts, folder = Path(path).parts, Path(root).name
    if folder not in parts:
        raise ValueError(f"{path} is not under a '{folder}' folder")
    start = len(parts) - 1 - parts[::-1].index(folder)
    for end in range(len(parts), start + 1, -1):  # the longest prefix that names a run
        try:
            return parse("/".join(parts[start + 1 : end]))
        except ValueError:
            continue
    raise ValueError(f"{path} is not in a run folder")


def experiment_tasks(orders: dict) -> list[str]:
    """Every task named by some order, sorted."""
    return sorted({task for order in orders.values() for task in order})


def training_tasks(run: Run, orders: dict) -> list[str]:
    """The tasks a run trains on: its stage's task, every task (multitask) or its own task."""
    if run.kind == "chain":
        return [orders[run.order][run.stage - 1]]
    if run.kind == "multitask":
        return experiment_tasks(orders)
    if run.kind == "single_task":
        return [run.task]
    return []


def training_epochs(run: Run, epochs, orders: dict) -> float:
    """Epochs of a training run: the scalar, or the entry of the task's position in its order
    (a single-task reference uses the first order naming its task; multitask the mean)."""
    if not isinstance(epochs, (list, tuple)):
        return float(epochs)
    if run.kind == "multitask":
        return sum(epochs) / len(epochs)
    if run.kind == "chain":
        order = orders[run.order]
        position = run.stage - 1
    else:
        order = next(tasks for tasks in orders.values() if run.task in tasks)
        position = order.index(run.task)
    if len(epochs) < len(order):
        raise ValueError(f"training.epochs: {len(epochs)} values for an order of {len(order)} tasks")
    return float(epochs[position])


def training_seed(run: Run) -> int:
    """The seed of everything random in a training run: batches, dropout, initialisation of adapters."""
    if run.kind == "chain":
        return stable_seed(run.seed, run.order, run.method, run.stage)
    if run.kind == "single_task":
        return stable_seed(run.seed, "single_task", run.task)
    return stable_seed(run.seed, "multitask")


def replay_folder(order: str, method: str, seed) -> str:
    return f"{REPLAY}/{order}/{method}/seed{seed}"


def replay_stage_file(order: str, method: str, seed, stage) -> str:
    return f"{replay_folder(order, method, seed)}/stage{int(stage)}.parquet"


def extra_pass_file(order: str, method: str, seed, stage) -> str:
    """The set of the extra epoch after a stage (methods with extra_pass, inscl.core.methods)."""
    return f"{replay_folder(order, method, seed)}/extra{int(stage)}.parquet"


def icl_folder(seed) -> str:
    return f"{ICL}/seed{int(seed)}"


def icl_seed(path) -> int:
    """The seed of a file under `results/icl/seed<seed>/`."""
    match = re.search(r"(?:^|/)seed(\d+)/[^/]+$", Path(path).as_posix())
    if match is None:
        raise ValueError(f"{path} is not in an ICL seed folder")
    return int(match.group(1))


def forgetting_file(order: str, method: str, seed) -> str:
    return f"{FORGETTING}/{order}/{method}/seed{seed}.parquet"

"""A training method's stage state in the DAG: EWC's Fisher is an output of each stage's training and an
input of the next stage's, and reruns when, and only when, what it is computed from changes. A training
method's settings rerun its training only, and those that stage 1 never reads rerun stages 2 and later."""

import shutil

import pytest
from workflow import copy_checkout, planned_jobs, read_config, snakemake, write_config

EWC_STAGE = "results/runs/demo/ewc/seed0/stage{}"


@pytest.fixture(scope="module")
def ewc_run(tmp_path_factory):
    """The .test demo with sequential fine-tuning, EWC and A-GEM, run to the end in a copy of the checkout."""
    workdir = tmp_path_factory.mktemp("ewc_run")
    snakefile = copy_checkout(workdir)
    config = {**read_config(), "methods": ["no_replay", "ewc", "agem"], "references": [], "ewc": {"fisher_examples": 8}}
    write_config(workdir, config)
    snakemake(workdir, snakefile=snakefile)
    return workdir, snakefile, config


def trained(jobs) -> set[tuple[str, str]]:
    """(rule, method and stage) of the planned training jobs."""
    return {(rule, wildcards) for rule, wildcards, _ in jobs if rule.startswith("train")}


def ewc_stages(*stages) -> set[tuple[str, str]]:
    return {("train_with_state", f"order=demo, method=ewc, seed=0, stage={k}") for k in stages}


def agem_stages(*stages) -> set[tuple[str, str]]:
    return {("train", f"order=demo, method=agem, seed=0, stage={k}") for k in stages}


def test_each_stage_leaves_its_fisher_for_the_next(ewc_run):
    workdir, snakefile, _ = ewc_run
    for k in (1, 2, 3):
        assert (workdir / EWC_STAGE.format(k) / "stage_state.safetensors").stat().st_size > 0
    assert not (workdir / "results/runs/demo/no_replay/seed0/stage1/stage_state.safetensors").exists()
    assert planned_jobs(workdir, snakefile=snakefile) == []


@pytest.mark.parametrize(
    ("section", "value", "reruns"),
    [
        ("ewc", {"fisher_examples": 5}, ewc_stages(1, 2, 3)),
        ("ewc", {"fisher_examples": 8, "lambda": 100}, ewc_stages(2, 3)),  # stage 1 has no penalty
        ("agem", {"memory_batch": 4}, agem_stages(2, 3)),  # nor a memory; and the replay set stays
        ("lwf", {"weight": 0.5}, set()),
    ],
)
def test_a_method_setting_reruns_that_method_only(ewc_run, tmp_path, section, value, reruns):
    workdir, snakefile, config = ewc_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy, symlinks=True)
    write_config(copy, {**config, section: value})
    jobs = planned_jobs(copy, snakefile=copy / "Snakefile")
    assert trained(jobs) == reruns
    assert {rule for rule, _, _ in jobs} <= {"train", "train_with_state", "evaluate", "metrics", "report"}


def test_a_lost_stage_state_is_rebuilt_by_its_own_stage_alone(ewc_run, tmp_path):
    # Like a deleted stage model: the later stages are up to date, and asking for it reruns its stage only.
    workdir, _, _ = ewc_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy, symlinks=True)
    state = EWC_STAGE.format(2) + "/stage_state.safetensors"
    (copy / state).unlink()
    assert planned_jobs(copy, snakefile=copy / "Snakefile") == []
    assert trained(planned_jobs(copy, state, snakefile=copy / "Snakefile")) == ewc_stages(2)


@pytest.mark.parametrize(
    ("module", "old", "new", "reruns"),
    [
        ("ewc", "0.5 * self.strength *", "self.strength / 2 *", ewc_stages(1, 2, 3)),
        ("lwf", "self.weight * kl", "kl * self.weight", set()),
    ],
)
def test_a_method_code_edit_reruns_that_method_only(ewc_run, tmp_path, module, old, new, reruns):
    workdir, _, _ = ewc_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy, symlinks=True)
    source = copy / "src/inscl/training/methods" / f"{module}.py"
    assert old in source.read_text()
    source.write_text(source.read_text().replace(old, new))
    assert trained(planned_jobs(copy, snakefile=copy / "Snakefile")) == reruns

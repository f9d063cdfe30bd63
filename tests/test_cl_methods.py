"""Training-side continual-learning methods (inscl.training.methods) on the tiny model: EWC, LwF, A-GEM, O-LoRA."""

from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from test_example_configs import commented_lines
from training_support import MODEL, build_tiny_base, superni_instances, tiny_job, training_settings, write_instances

from inscl.core.config import ConfigError, load_config, load_schema, validate_config
from inscl.core.methods import METHODS
from inscl.training import distributed
from inscl.training.methods.base import trainable
from inscl.training.models import load_for_inference
from inscl.training.train import StageTrainer, TrainJob, train

DEFAULTS = validate_config({"data": {"sources": [{"name": "demo", "type": "demo"}]}, "orders": {"o": ["a", "b"]}})


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cl_methods")
    return {"folder": folder, "base": build_tiny_base(folder), "instances": write_instances(folder)}


def settings_of(method: str, **overrides) -> dict:
    """The method's settings as the workflow passes them (schema defaults), with overrides of its section."""
    keys = [key for key in METHODS[method].training_settings]
    found = {}
    for key in keys:
        section, _, leaf = key.partition(".")
        value = DEFAULTS[section][leaf] if leaf else dict(DEFAULTS[section])
        found.setdefault(section, {} if leaf else value)
        if leaf:
            found[section][leaf] = value
    for key, value in overrides.items():
        found[METHODS[method].name.split("+")[-1]][key] = value
    return found


def make_job(workspace, name, tasks, previous=None, method=None, settings=None, **extra) -> TrainJob:
    training = training_settings(mode="full", epochs=2, learning_rate=3e-3, batch_size=4, checkpoint_every=1000)
    return tiny_job(
        workspace, name, tasks, training, 11, previous, method=method, method_settings=settings or {}, **extra
    )


def weights(model_dir) -> dict:
    return load_file(str(model_dir / "model.safetensors"))


def identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def stage1(workspace):
    """Stage 1 of an EWC chain on `copy`: its model and its Fisher (the stage state)."""
    folder = workspace["folder"] / "ewc1"
    job = make_job(workspace, "ewc1", ["copy"], method="ewc", settings=settings_of("ewc", fisher_examples=10))
    job.output_state = str(folder / "stage_state.safetensors")
    train(job)
    return folder


def test_ewc_writes_an_accumulated_fisher_per_trained_weight(workspace, stage1):
    fisher = load_file(str(stage1 / "stage_state.safetensors"))
    assert set(fisher) == set(weights(stage1 / "model"))  # one tensor per trained weight, named like it
    assert all((f >= 0).all() for f in fisher.values()) and sum(float(f.sum()) for f in fisher.values()) > 0
    # stage 2 adds its own Fisher to stage 1's (gamma 1): it only grows
    job = make_job(workspace, "ewc2", ["arithmetic"], stage1 / "model", "ewc", settings_of("ewc", fisher_examples=4))
    job.previous_state = str(stage1 / "stage_state.safetensors")
    job.output_state = str(workspace["folder"] / "ewc2" / "stage_state.safetensors")
    train(job)
    grown = load_file(job.output_state)
    assert all((grown[k] >= fisher[k]).all() for k in fisher) and any((grown[k] > fisher[k]).any() for k in fisher)


@pytest.mark.parametrize(("method", "off", "on"), [("ewc", {"lambda": 0}, {"lambda": 1e4}), ("lwf", {"weight": 0}, {})])
def test_a_method_switched_off_equals_sequential_fine_tuning_bit_for_bit(workspace, stage1, method, off, on):
    state = {"previous_state": str(stage1 / "stage_state.safetensors")} if method == "ewc" else {}
    seqft = make_job(workspace, f"seqft2-{method}", ["arithmetic"], stage1 / "model")
    zero = make_job(
        workspace, f"{method}0", ["arithmetic"], stage1 / "model", method, settings_of(method, **off), **state
    )
    full = make_job(
        workspace, f"{method}1", ["arithmetic"], stage1 / "model", method, settings_of(method, **on), **state
    )
    for job in (seqft, zero, full):
        train(job)
    plain, switched_off, switched_on = (weights(workspace["folder"] / j.label / "model") for j in (seqft, zero, full))
    assert identical(plain, switched_off)
    assert not identical(plain, switched_on)  # the term is live when switched on


def test_agem_steps_never_point_against_the_memory_gradient(workspace, tmp_path):
    memory = superni_instances().query("task == 'sst2' and split == 'train'")
    memory.to_parquet(tmp_path / "stage2.parquet")
    job = make_job(workspace, "agem2", ["copy"], method="agem", settings=settings_of("agem", memory_batch=4))
    job.replay = str(tmp_path / "stage2.parquet")
    trainer = StageTrainer(job, distributed.Ranks())
    trainer.setup()
    trainer.resume()
    assert len(trainer.examples) == 27 and not trainer.rows["replayed"].any()  # the memory is not trained on
    for step in range(len(trainer.plan.steps)):
        trainer.train_step(step)
        trainer.add_penalty()
        trainer.method.after_backward(trainer, step)
        applied = trainable(trainer.model)
        dot = sum(float((p.grad.double() * trainer.method.reference[n].double()).sum()) for n, p in applied.items())
        scale = sum(
            float(p.grad.double().norm() * trainer.method.reference[n].double().norm()) for n, p in applied.items()
        )
        assert dot >= -1e-6 * scale, f"step {step}: g.g_ref = {dot}"
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
    before = [b for b, _ in trainer.method.dots]
    assert any(b < 0 for b in before), "no step needed a projection: the test would prove nothing"


def test_olora_keeps_earlier_adapters_and_pushes_the_new_one_orthogonal(workspace):
    settings = settings_of("olora", lambda1=5.0)
    first = make_job(workspace, "olora1", ["copy"], method="olora", settings=settings)
    train(first)
    one = load_file(f"{first.output_model}/adapter_model.safetensors")
    job = make_job(workspace, "olora2", ["arithmetic"], first.output_model, "olora", settings)
    trainer = StageTrainer(job, distributed.Ranks())
    trainer.setup()
    trainer.resume()
    trainer.train()
    trainer.finish()
    two = load_file(f"{job.output_model}/adapter_model.safetensors")
    r = settings["olora"]["r"]
    assert one.keys() == two.keys() and all("q_proj" in k or "v_proj" in k for k in one)
    for key, earlier in one.items():  # A's stack along the rank (dim 0), B's along dim 1
        kept = two[key][:r] if "lora_A" in key else two[key][:, :r]
        assert torch.equal(kept, earlier), key
        assert two[key].shape[0 if "lora_A" in key else 1] == 2 * r
    orthogonality = trainer.method.orthogonality
    assert len(orthogonality) == len(trainer.plan.steps) > 1 and orthogonality[0] > 0
    assert all(later < earlier for earlier, later in zip(orthogonality, orthogonality[1:]))  # falls at every step
    # The evaluated model is the base plus both adapters, each scaled alpha / r.
    model, _ = load_for_inference(job.output_model, str(workspace["base"]), MODEL, "cpu")
    base, _ = load_for_inference(str(workspace["base"]), str(workspace["base"]), MODEL, "cpu")
    name = "model.layers.0.self_attn.q_proj"
    a_key, b_key = (f"base_model.model.{name}.lora_{x}.weight" for x in "AB")
    scale = settings["olora"]["alpha"] / r
    delta = sum(two[b_key][:, k * r : (k + 1) * r] @ two[a_key][k * r : (k + 1) * r] for k in range(2)) * scale
    merged = dict(model.named_parameters())[f"{name}.weight"]
    assert torch.allclose(merged, dict(base.named_parameters())[f"{name}.weight"] + delta, atol=1e-5)


@pytest.mark.parametrize(
    ("methods", "training", "message"),
    [
        (["ewc"], {"fsdp": True}, "'ewc' does not run here: its Fisher"),
        (["inscl+lwf"], {"fsdp": True}, "'inscl+lwf' does not run here: its teacher"),
        (["agem"], {"gpus": 2}, "'agem' does not run here: its reference gradient runs in one process"),
        (["olora"], {"optimizer": {"state": "carry"}}, "'olora' does not run here"),
        (["ewc"], {"mode": "lora", "lora": {"merge_after_stage": True}}, "'ewc' does not run here"),
        (["ewc+inscl"], {}, "unknown method 'ewc+inscl'"),
    ],
)
def test_an_unsupported_method_and_setting_is_a_one_line_config_error(methods, training, message):
    config = {"data": {"sources": [{"name": "demo", "type": "demo"}]}, "orders": {"o": ["a", "b"]}}
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")) as error:
        validate_config({**config, "methods": methods, "training": training})
    assert "\n" not in str(error.value)


def test_replay_and_training_methods_compose():
    composed = METHODS["inscl+ewc"]
    assert composed.strategy == METHODS["inscl"].strategy and composed.training == METHODS["ewc"].training
    assert composed.state and composed.settings == METHODS["inscl"].settings
    assert composed.training_settings == METHODS["ewc"].training_settings
    assert METHODS["inscl+agem"].memory and "rcl+ewc" not in METHODS and "ewc+lwf" not in METHODS
    assert "inscl+ewc" not in list(METHODS)  # iterating gives the named methods only


# ------------------------------------------------------------------ TRACE's extra pass (trace_general_replay)


def test_the_extra_pass_is_one_more_epoch_in_position_order_at_the_tasks_constant_rate(workspace, tmp_path):
    extra = superni_instances().query("task == 'sst2' and split == 'train'").reset_index(drop=True)
    extra = extra.assign(position=[5, 2, 7, 0, 1, 6, 3, 4])
    extra.to_parquet(tmp_path / "extra2.parquet")
    job = make_job(workspace, "extra", ["arithmetic"], extra_pass=str(tmp_path / "extra2.parquet"))
    job.training = {**job.training, "schedule": "cosine"}
    trainer = StageTrainer(job, distributed.Ranks())
    trainer.setup()
    own = trainer.plan.stage_steps
    assert own == 4 and len(trainer.plan.steps) == own + 2  # 8 arithmetic rows x 2 epochs, then 8 rows in 2 steps
    assert [int(i) for step in trainer.plan.steps[own:] for i in step] == list(range(8, 16))  # once, in order
    first = trainer.tokenizer.decode(trainer.examples[8].input_ids)
    assert extra.sort_values("position")["input"].iloc[0] in first  # position 0 comes first
    summary = train(job)
    log = pd.read_parquet(job.output_log)
    assert summary["total_steps"] == own + 2 and log["epoch"].iloc[-1] == 3.0 and log["epoch"].iloc[own - 1] == 2.0
    assert log["learning_rate"].iloc[own - 1] < 3e-3  # the cosine decay over the stage's own steps
    assert (log["learning_rate"].iloc[own:] == 3e-3).all()  # then the task's rate, constant


# ------------------------------------------------------------------ configs/methods.yaml and the schema's defaults

METHODS_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "methods.yaml"
# (key, the paper's / upstream default, upstream file:line): the schema's default and configs/methods.yaml's value.
PAPER_DEFAULTS = [
    ("ewc.lambda", 400, "EWC.py:13"),  # BeyonderXX/TRACE model/Regular/EWC.py
    ("ewc.gamma", 1.0, "continual_learner.py:74"),  # GMvandeVen/continual-learning models/cl/
    ("lwf.temperature", 2.0, "PASCALkeeporig.m:27"),  # lizhitwo/LearningWithoutForgetting snippets/
    ("lwf.weight", 1.0, "PASCALkeeporig.m:32"),
    ("olora.r", 8, "run_uie_lora.py:115-116"),  # cmnfriend/O-LoRA src/
    ("olora.alpha", 32, "run_uie_lora.py:380-382"),
    ("olora.dropout", 0.1, "run_uie_lora.py:393-395"),
    ("olora.target_modules", ["q_proj", "v_proj"], "other.py:202"),
    ("olora.lambda1", 0.5, "run_uie_lora.py:240"),
    ("olora.lambda2", 0.0, "run_uie_lora.py:241"),
]


@pytest.mark.parametrize("key, value, source", PAPER_DEFAULTS, ids=[row[0] for row in PAPER_DEFAULTS])
def test_method_defaults_are_the_papers_and_cited(key, value, source):
    section, leaf = key.split(".")
    assert DEFAULTS[section][leaf] == value, f"schema default of {key} should be {value!r} ({source})"
    assert source.split(":")[0] in str(load_schema()["properties"][section]["properties"][leaf]["description"])
    assert load_config(METHODS_CONFIG)[section][leaf] == value
    assert source.split(":")[0] in commented_lines(METHODS_CONFIG)[key], f"{key}: cite {source} in configs/methods.yaml"


def test_the_methods_config_compares_every_training_method_with_seqft_and_replay():
    config = load_config(METHODS_CONFIG)
    training_methods = {name for name, method in METHODS.items() if method.training}
    assert training_methods | {"no_replay", "random", "inscl"} <= set(config["methods"])
    assert any("+" in name for name in config["methods"]) and config["seeds"] == [0, 1, 2]

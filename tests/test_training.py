import math

import numpy as np
import pandas as pd
import pytest
import torch
from training_support import MODEL, build_tiny_base, superni_instances, tiny_job, training_settings, write_instances

from inscl.core import artifacts
from inscl.core.io import InputError
from inscl.core.prompts import build_prompt, encode_prompt
from inscl.training import attention, distributed
from inscl.training.batching import (
    collate_packed,
    collate_padded,
    example_stream,
    pack,
    plan_training,
    rank_share,
    step_count,
)
from inscl.training.examples import IGNORE_INDEX, Example, Lengths, assemble, encode_examples, load_training_rows
from inscl.training.loss import AnswerLoss
from inscl.training.models import count_parameters, load_causal_lm, load_tokenizer, load_trainable
from inscl.training.optimizer import build_optimizer, learning_rate_at
from inscl.training.train import TrainJob, replay_file, train


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("training")
    return {"folder": folder, "base": build_tiny_base(folder), "instances": write_instances(folder)}


@pytest.fixture(scope="module")
def tokenizer(workspace):
    return load_tokenizer(workspace["base"], MODEL)


@pytest.fixture(scope="module")
def superni_examples(tokenizer):
    rows = superni_instances().assign(answer=lambda d: d["output"].str[0])
    return encode_examples(tokenizer, rows, "alpaca", Lengths(256))


@pytest.fixture
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_job(workspace, name, tasks, previous=None, **settings) -> TrainJob:
    training = training_settings(
        **{"mode": "full", "epochs": 3, "learning_rate": 3e-3, "batch_size": 4, "checkpoint_every": 1000, **settings}
    )
    return tiny_job(workspace, name, tasks, training, 7, previous)


def safetensors_dtypes(path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {f.get_slice(key).get_dtype() for key in f.keys()}


# ------------------------------------------------------------------ answer-only labels and lengths


def encode_example(tokenizer, instruction, input, answer, template="alpaca", lengths=Lengths(512)):
    rows = pd.DataFrame({"instruction": [instruction], "input": [input], "answer": [answer]})
    return encode_examples(tokenizer, rows, template, lengths)[0]


def test_loss_is_only_on_the_answer_and_eos(tokenizer):
    row = superni_instances().iloc[0]
    example = encode_example(tokenizer, row["instruction"], row["input"], row["output"][0])
    prompt_ids = encode_prompt(tokenizer, build_prompt(row["instruction"], row["input"]))
    n_prompt = len(prompt_ids)
    assert example.input_ids[:n_prompt] == prompt_ids
    assert example.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert example.labels[n_prompt:] == example.input_ids[n_prompt:]
    assert example.labels[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(example.labels[n_prompt:-1]) == row["output"][0]


@pytest.mark.parametrize("template", ["raw", "inscl", "chat"])
def test_every_template_starts_with_one_bos_and_ends_with_the_answer(tokenizer, template):
    example = encode_example(tokenizer, "Add.", "1 2", "3", template=template)
    assert example.input_ids.count(tokenizer.bos_token_id) == 1 and example.input_ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode([t for t in example.labels if t != IGNORE_INDEX]) == "3</s>"


def test_long_prompts_lose_their_left_side_but_keep_bos_and_the_answer():
    example = assemble(list(range(1, 101)), [500, 501], eos_id=2, lengths=Lengths(10), bos_id=1)
    assert example.input_ids == [1, 95, 96, 97, 98, 99, 100, 500, 501, 2]
    assert example.labels == [IGNORE_INDEX] * 7 + [500, 501, 2]
    answer_too_long = assemble([1, 5, 6], list(range(100, 120)), eos_id=2, lengths=Lengths(8), bos_id=1)
    assert answer_too_long.input_ids == [6] + list(range(100, 107)) and answer_too_long.labels[0] == IGNORE_INDEX


def test_prompt_and_answer_limits_apply_before_the_total():
    # TRACE keeps the right end of the prompt (left truncation) and the start of the answer.
    example = assemble(list(range(1, 51)), list(range(100, 110)), eos_id=2, lengths=Lengths(100, 5, 4), bos_id=1)
    assert example.input_ids == [1, 47, 48, 49, 50, 100, 101, 102, 2]
    assert example.targets == 4


# ------------------------------------------------------------------ packing and attention


def test_pack_places_every_example_once_within_the_capacity():
    lengths = np.random.default_rng(0).integers(5, 120, size=500)
    groups = pack(lengths, 128)
    assert sorted(i for group in groups for i in group) == list(range(500))
    assert all(lengths[group].sum() <= 128 for group in groups)
    assert len(groups) <= math.ceil(lengths.sum() / 128) * 1.1  # near the lower bound
    assert pack([300, 10], 128) == [[0], [1]]  # too long for the cap: a group of its own


def packed_versus_alone(workspace, examples, backend: str, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Answer loss of the examples packed in one row (as training packs them for `backend`), and
    summed over each example run alone through plain SDPA."""
    packed_model = load_causal_lm(workspace["base"], MODEL, attention=attention.implementation(backend, packed=True))
    alone_model = load_causal_lm(workspace["base"], MODEL, attention="sdpa")
    batch = collate_packed(list(range(len(examples))), examples, pad_id, attention.slack(backend))
    extra = attention.forward_kwargs(backend, batch, "cpu")
    with torch.no_grad():
        packed = AnswerLoss(packed_model.eval())(batch["input_ids"], batch["labels"], batch["position_ids"], **extra)
        alone = sum(
            AnswerLoss(alone_model.eval())(**collate_padded([i], examples, pad_id)) for i in range(len(examples))
        )
    return packed, alone


def test_packed_examples_do_not_attend_to_each_other_with_sdpa(workspace, superni_examples, tokenizer):
    examples = [superni_examples[i] for i in (0, 30, 31, 40, 41, 42)]
    batch = collate_packed(list(range(6)), examples, tokenizer.pad_token_id, attention.slack("sdpa"))
    assert len(batch["buckets"]) < 6 and batch["input_ids"].shape[1] > sum(map(len, examples))  # padded slots
    packed, alone = packed_versus_alone(workspace, examples, "sdpa", tokenizer.pad_token_id)
    assert torch.allclose(packed, alone, rtol=1e-5)
    # The same row without the example boundaries attends across them.
    plain = AnswerLoss(load_causal_lm(workspace["base"], MODEL, attention="sdpa").eval())
    with torch.no_grad():
        leaky = plain(batch["input_ids"], batch["labels"], torch.arange(batch["input_ids"].shape[1])[None])
    assert (leaky - alone).abs() > 100 * (packed - alone).abs()


@pytest.mark.timeout(300)
def test_packed_examples_do_not_attend_to_each_other_with_flex_attention(workspace, superni_examples, tokenizer):
    attention.check_backend("flex_attention", torch.device("cpu"))  # available in this torch, compiled on first use
    examples = [superni_examples[i] for i in (0, 30, 31)]
    packed, alone = packed_versus_alone(workspace, examples, "flex_attention", tokenizer.pad_token_id)
    assert torch.allclose(packed, alone, rtol=1e-5)


def test_packed_rows_of_the_varlen_kernels_are_padding_free(superni_examples, tokenizer):
    batch = collate_packed([0, 30, 31], superni_examples, tokenizer.pad_token_id, attention.slack("flash_attention_2"))
    sizes = sorted((len(superni_examples[i]) for i in (0, 30, 31)), reverse=True)
    assert batch["cu_seq_lens"].tolist() == [0, sizes[0], sizes[0] + sizes[1], sum(sizes)]
    assert batch["input_ids"].shape == (1, sum(sizes)) and batch["max_length"] == sizes[0]


def test_a_missing_attention_backend_is_a_one_line_error():
    with pytest.raises(InputError) as error:
        attention.check_backend("flash_attention_2", torch.device("cpu"))
    message = str(error.value)
    assert "training.attention" in message and "flash" in message and "\n" not in message


# ------------------------------------------------------------------ the step plan


def toy_examples(n: int, seed: int = 1) -> list[Example]:
    lengths = np.random.default_rng(seed).integers(4, 60, n)
    return [Example([1] * int(k), [IGNORE_INDEX] * (int(k) - 2) + [2, 2]) for k in lengths]


def test_a_partial_last_batch_joins_or_makes_a_step_by_its_size():
    assert step_count(100, 10) == 10
    assert step_count(104, 10) == 10  # 4 < 5: joins the last step
    assert step_count(105, 10) == 11  # 5 >= 5: a step of its own
    assert step_count(3, 10) == 1
    plan = plan_training(toy_examples(104), 10, 1, seed=0)
    assert [len(s) for s in plan.steps] == [10] * 9 + [14]


def test_plan_is_deterministic_and_each_epoch_sees_every_example_once():
    examples = toy_examples(200)
    plan = plan_training(examples, 32, 2, seed=3)
    again = plan_training(examples, 32, 2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(plan.steps, again.steps))
    assert not np.array_equal(plan.steps[0], plan_training(examples, 32, 2, seed=4).steps[0])
    stream = np.concatenate(plan.steps)
    assert sorted(stream[:200]) == list(range(200)) and sorted(stream[200:]) == list(range(200))
    assert not np.array_equal(stream[:200], stream[200:])  # a fresh order per epoch
    assert plan.epoch_after(len(plan.steps) - 1) == 2.0 and sum(plan.targets) == 2 * 2 * 200
    assert len(example_stream(200, 0.5, seed=3)) == 100


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
@pytest.mark.parametrize("cap", [64, 256, 100000])
def test_a_step_holds_the_same_examples_whatever_the_gpus_and_token_cap(world_size, cap):
    examples = toy_examples(300)
    lengths = np.array([len(e) for e in examples])
    plan = plan_training(examples, 50, 1, seed=0)
    for step in plan.steps:
        shares = [rank_share(step, lengths, distributed.Ranks(r, world_size), cap) for r in range(world_size)]
        assert len({len(share) for share in shares}) == 1  # the same number of passes on every rank
        real = [i for share in shares for batch, weight in share if weight for i in batch]
        assert sorted(real) == sorted(step.tolist())
        assert all(lengths[batch].sum() <= max(cap, lengths.max()) for share in shares for batch, _ in share)


def test_ranks_get_balanced_token_shares():
    examples = toy_examples(256)
    lengths = np.array([len(e) for e in examples])
    step = plan_training(examples, 256, 1, seed=0).steps[0]
    tokens = [
        sum(lengths[b].sum() for b, w in rank_share(step, lengths, distributed.Ranks(r, 8), 10**6) if w)
        for r in range(8)
    ]
    assert max(tokens) - min(tokens) <= lengths.max()


# ------------------------------------------------------------------ optimizer and schedule


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
@pytest.mark.parametrize("warmup_ratio", [0.0, 0.03, 0.2])
def test_schedules_match_transformers(schedule, warmup_ratio):
    from transformers import get_scheduler

    total = 97
    warmup = math.ceil(warmup_ratio * total)  # transformers TrainingArguments.get_warmup_steps
    name = "constant_with_warmup" if schedule == "constant" else schedule
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=2e-5)
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total)
    expected = []
    for _ in range(total):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    ours = [learning_rate_at(step, total, 2e-5, schedule, warmup_ratio) for step in range(total)]
    assert ours == pytest.approx(expected, rel=1e-12, abs=1e-18)


def test_optimizer_name_betas_and_eps_come_from_the_settings():
    module = torch.nn.Linear(4, 4)
    trace = build_optimizer(module, training_settings(optimizer={"name": "adam", "betas": [0.9, 0.95], "eps": 1e-8}))
    assert type(trace) is torch.optim.Adam and trace.defaults["betas"] == (0.9, 0.95)
    default = build_optimizer(module, training_settings(weight_decay=0.1))
    assert type(default) is torch.optim.AdamW and default.defaults["betas"] == (0.9, 0.999)
    assert [g["weight_decay"] for g in default.param_groups] == [0.1, 0.0]  # no decay on the bias


# ------------------------------------------------------------------ data


def test_training_rows_add_the_replay_set(workspace, tmp_path):
    replay = superni_instances().query("task == 'sst2' and split == 'train'").head(3)
    replay.to_parquet(tmp_path / "stage2.parquet")
    rows = load_training_rows(workspace["instances"], ["copy"], replay_file(tmp_path, 2))
    assert rows["replayed"].sum() == 3 and (rows.loc[~rows["replayed"], "task"] == "copy").all()
    assert rows.loc[rows["replayed"], "answer"].tolist() == [o[0] for o in replay["output"]]


def test_bad_training_rows_name_file_record_and_field(workspace, tmp_path):
    with pytest.raises(InputError, match="no training examples for task 'nope'"):
        load_training_rows(workspace["instances"], ["nope"])
    replay = superni_instances().head(2).copy()
    replay.at[1, "output"] = []
    replay.to_parquet(tmp_path / "stage2.parquet")
    with pytest.raises(InputError) as error:
        load_training_rows(workspace["instances"], ["copy"], tmp_path / "stage2.parquet")
    assert f"record {replay.at[1, 'instance_id']}" in str(error.value) and "field 'output'" in str(error.value)
    assert replay_file(tmp_path / "none", 1) is None
    with pytest.raises(InputError, match="stage 3 is missing"):
        replay_file(tmp_path, 3)


# ------------------------------------------------------------------ models


def test_lora_trains_far_fewer_parameters_than_full(workspace):
    settings = training_settings(mode="lora")
    lora = load_trainable(str(workspace["base"]), str(workspace["base"]), MODEL, settings, "cpu")
    full = load_trainable(str(workspace["base"]), str(workspace["base"]), MODEL, training_settings(mode="full"), "cpu")
    config = full.config
    trainable_full, total_full = count_parameters(full)
    trainable_lora, total_lora = count_parameters(lora)
    r = settings["lora"]["r"]
    head_dim = config.hidden_size // config.num_attention_heads
    per_layer = 4 * r * (config.hidden_size + config.num_attention_heads * head_dim)  # q, k, v, o: A and B
    assert trainable_full == total_full
    assert trainable_lora == config.num_hidden_layers * per_layer
    assert total_lora == total_full + trainable_lora


@pytest.mark.timeout(300)
def test_full_fine_tuning_lowers_the_loss_is_deterministic_and_saves_bf16(workspace, single_thread):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    job = make_job(workspace, "full", ["copy", "sst2"], epochs=6, save_dtype="bf16")
    summary = train(job)
    log = pd.read_parquet(job.output_log)
    assert list(log.columns) == artifacts.columns("train_log")
    assert len(log) == summary["total_steps"] == summary["steps_run"] == step_count(6 * 35, 4)
    assert log["loss"].iloc[-3:].mean() < 0.7 * log["loss"].iloc[:3].mean()
    assert log["epoch"].iloc[-1] == pytest.approx(6.0) and (log["tokens_per_s"] > 0).all()
    assert safetensors_dtypes(f"{job.output_model}/model.safetensors") == {"BF16"}
    reloaded = AutoModelForCausalLM.from_pretrained(job.output_model, dtype="auto")
    assert reloaded.config.model_type == "llama" and reloaded.dtype == torch.bfloat16
    assert not (workspace["folder"] / "full" / "checkpoints").exists()
    again = make_job(workspace, "full_again", ["copy", "sst2"], epochs=6, save_dtype="bf16")
    train(again)
    first, second = (
        load_file(f"{job.output_model}/model.safetensors"),
        load_file(f"{again.output_model}/model.safetensors"),
    )
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.timeout(300)
def test_the_token_cap_and_layout_do_not_change_the_result(workspace, single_thread):
    from safetensors.torch import load_file

    jobs = [
        make_job(workspace, "cap_large", ["arithmetic"], epochs=1),
        make_job(workspace, "cap_small", ["arithmetic"], epochs=1, micro_batch_tokens=64),
        make_job(workspace, "padded", ["arithmetic"], epochs=1, packing=False),
    ]
    weights = []
    for job in jobs:
        train(job)
        weights.append(load_file(f"{job.output_model}/model.safetensors"))
        assert safetensors_dtypes(f"{job.output_model}/model.safetensors") == {"F32"}  # auto: the base's dtype
    for other in weights[1:]:
        assert all(torch.allclose(weights[0][k], other[k], atol=1e-5) for k in weights[0])
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # other sums, same result


@pytest.mark.timeout(300)
def test_lora_stages_store_the_adapter_only_in_the_save_dtype(workspace, single_thread):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    stage1 = make_job(workspace, "lora1", ["copy"], mode="lora", epochs=1, save_dtype="bf16")
    train(stage1)
    stage2 = make_job(workspace, "lora2", ["sst2"], previous=stage1.output_model, mode="lora", epochs=1)
    train(stage2)
    for job in (stage1, stage2):
        files = {p.name for p in (workspace["folder"] / job.label / "model").iterdir()}
        assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    assert safetensors_dtypes(f"{stage1.output_model}/adapter_model.safetensors") == {"BF16"}
    assert safetensors_dtypes(f"{stage2.output_model}/adapter_model.safetensors") == {"F32"}
    first = load_file(f"{stage1.output_model}/adapter_model.safetensors")
    second = load_file(f"{stage2.output_model}/adapter_model.safetensors")
    assert first.keys() == second.keys() and any(not torch.equal(first[k].float(), second[k]) for k in first)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(workspace["base"]), stage2.output_model)
    assert count_parameters(model)[1] > 0
    merged = make_job(
        workspace,
        "lora_merged",
        ["sst2"],
        previous=stage1.output_model,
        mode="lora",
        epochs=1,
        lora={**stage1.training["lora"], "merge_after_stage": True},
    )
    train(merged)
    assert (workspace["folder"] / "lora_merged" / "model" / "model.safetensors").exists()
    assert not (workspace["folder"] / "lora_merged" / "model" / "adapter_config.json").exists()


def optimizer_steps(folder) -> set[float]:
    """The Adam step counts in a carried optimizer state (a DCP folder)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(folder, folder.parent / "optimizer.pt")
    state = torch.load(folder.parent / "optimizer.pt", weights_only=False)["optimizer"]["state"]
    return {float(entry["step"]) for entry in state.values()}


@pytest.mark.timeout(300)
def test_carried_optimizer_state_continues_from_the_previous_stage(workspace, single_thread):
    from safetensors.torch import load_file

    carry = {"optimizer": {"name": "adam", "betas": [0.9, 0.95], "eps": 1e-8, "state": "carry"}}
    stage1 = make_job(workspace, "carry1", ["copy"], epochs=1, **carry)
    stage1.output_optimizer = str(workspace["folder"] / "carry1" / "optimizer")
    steps1 = train(stage1)["total_steps"]
    assert optimizer_steps(workspace["folder"] / "carry1" / "optimizer") == {steps1}

    stage2 = make_job(workspace, "carry2", ["sst2"], previous=stage1.output_model, epochs=1, **carry)
    stage2.previous_optimizer = stage1.output_optimizer
    stage2.output_optimizer = str(workspace["folder"] / "carry2" / "optimizer")
    steps2 = train(stage2)["total_steps"]
    assert optimizer_steps(workspace["folder"] / "carry2" / "optimizer") == {steps1 + steps2}

    fresh = make_job(workspace, "fresh2", ["sst2"], previous=stage1.output_model, epochs=1, **carry)
    train(fresh)
    carried, reset = (load_file(f"{job.output_model}/model.safetensors") for job in (stage2, fresh))
    assert any(not torch.equal(carried[k], reset[k]) for k in carried)

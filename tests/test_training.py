import math

import numpy as np
import pandas as pd
import pytest
import torch
from training_support import MODEL, build_tiny_base, superni_instances, training_settings, write_instances

from inscl.core import artifacts
from inscl.core.io import InputError
from inscl.core.prompts import build_prompt, encode_prompt
from inscl.training import distributed
from inscl.training.batching import collate_packed, collate_padded, pack_rows, plan_training, rank_share
from inscl.training.examples import IGNORE_INDEX, Example, assemble, encode_examples, load_training_rows
from inscl.training.loss import AnswerLoss
from inscl.training.models import autocast_dtype, count_parameters, load_causal_lm, load_tokenizer, load_trainable
from inscl.training.optimizer import learning_rate_at
from inscl.training.train import TrainJob, replay_file, train


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("training")
    return {"folder": folder, "base": build_tiny_base(folder), "instances": write_instances(folder)}


@pytest.fixture(scope="module")
def tokenizer(workspace):
    return load_tokenizer(workspace["base"], MODEL)


@pytest.fixture
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_job(workspace, name, tasks, previous=None, **settings) -> TrainJob:
    run = workspace["folder"] / name
    training = training_settings(
        **{
            "mode": "full",
            "epochs": 3,
            "learning_rate": 3e-3,
            "batch_tokens": 512,
            "checkpoint_every": 1000,
            **settings,
        }
    )
    return TrainJob(
        instances=str(workspace["instances"]),
        tasks=tasks,
        previous=str(previous or workspace["base"]),
        base=str(workspace["base"]),
        output_model=str(run / "model"),
        output_log=str(run / "train_log.parquet"),
        checkpoints=str(run / "checkpoints"),
        training=training,
        model=MODEL,
        seed=7,
        epochs=training["epochs"],
        label=name,
    )


# ------------------------------------------------------------------ answer-only labels


def encode_example(tokenizer, instruction, input, answer, template="plain"):
    rows = pd.DataFrame({"instruction": [instruction], "input": [input], "answer": [answer]})
    return encode_examples(tokenizer, rows, template, 512)[0]


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


def test_chat_template_examples_start_with_one_bos(tokenizer):
    example = encode_example(tokenizer, "Add.", "1 2", "3", template="chat")
    assert example.input_ids.count(tokenizer.bos_token_id) == 1 and example.input_ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode([t for t in example.labels if t != IGNORE_INDEX]) == "3</s>"


def test_long_prompts_lose_their_left_side_but_keep_bos_and_the_answer():
    example = assemble(list(range(1, 101)), [500, 501], eos_id=2, max_length=10, bos_id=1)
    assert len(example) == 10
    assert example.input_ids == [1, 95, 96, 97, 98, 99, 100, 500, 501, 2]
    assert example.labels == [IGNORE_INDEX] * 7 + [500, 501, 2]
    answer_too_long = assemble([1, 5, 6], list(range(100, 120)), eos_id=2, max_length=8, bos_id=1)
    assert answer_too_long.input_ids == [6] + list(range(100, 107)) and answer_too_long.labels[0] == IGNORE_INDEX


# ------------------------------------------------------------------ packing


def test_pack_rows_places_every_example_once_within_the_row_length():
    lengths = np.random.default_rng(0).integers(5, 120, size=500)
    rows = pack_rows(lengths, 128)
    placed = sorted(i for row in rows for i in row)
    assert placed == list(range(500))
    assert all(lengths[row].sum() <= 128 for row in rows)
    assert len(rows) <= math.ceil(lengths.sum() / 128) * 1.1  # near the lower bound


def test_packed_examples_do_not_attend_to_each_other(workspace, tokenizer):
    model = load_causal_lm(workspace["base"], MODEL).eval()
    rows = superni_instances().rename(columns={"output": "answer"}).assign(answer=lambda d: d["answer"].str[0])
    examples = encode_examples(tokenizer, rows.iloc[[0, 30, 31, 40]], "plain", 256)
    batch = collate_packed([[0, 1, 2], [3]], examples, tokenizer.pad_token_id)
    assert batch["attention_mask"] is None
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        offset = 0
        for index in (0, 1, 2):
            alone = model(input_ids=torch.tensor([examples[index].input_ids])).logits[0]
            n = len(examples[index])
            assert torch.allclose(packed[0, offset : offset + n], alone, atol=1e-4)
            offset += n
        alone = model(input_ids=torch.tensor([examples[3].input_ids])).logits[0]
        assert torch.allclose(packed[1, : len(examples[3])], alone, atol=1e-4)
        # Without the restarting positions the later examples would see the earlier ones.
        leaky = model(input_ids=batch["input_ids"][:1], use_cache=False).logits
        n0 = len(examples[0])
        assert not torch.allclose(
            leaky[0, n0 : n0 + len(examples[1])], packed[0, n0 : n0 + len(examples[1])], atol=1e-3
        )


def test_packed_and_padded_batches_give_the_same_loss(workspace, tokenizer):
    model = load_causal_lm(workspace["base"], MODEL).eval()
    rows = superni_instances().rename(columns={"output": "answer"}).assign(answer=lambda d: d["answer"].str[0])
    examples = encode_examples(tokenizer, rows.iloc[::12], "plain", 256)
    loss = AnswerLoss(model)
    indices = list(range(len(examples)))
    with torch.no_grad():
        packed = sum(
            loss(**collate_packed([row], examples, tokenizer.pad_token_id))
            for row in pack_rows([len(e) for e in examples], 256)
        )
        padded = loss(**collate_padded(indices, examples, tokenizer.pad_token_id))
        one_by_one = sum(loss(**collate_padded([i], examples, tokenizer.pad_token_id)) for i in indices)
    assert torch.allclose(packed, padded, rtol=1e-4) and torch.allclose(padded, one_by_one, rtol=1e-4)


def test_plan_is_deterministic_and_covers_each_epoch():
    examples = [Example([1] * n, [IGNORE_INDEX] * (n - 1) + [2]) for n in np.random.default_rng(1).integers(4, 60, 200)]
    settings = {"batch_tokens": 256, "packing": True, "grad_accum": 2}
    plan = plan_training(examples, settings, 2, seed=3)
    assert plan.micro_batches == plan_training(examples, settings, 2, seed=3).micro_batches
    assert plan.micro_batches != plan_training(examples, settings, 2, seed=4).micro_batches
    first_epoch = [i for m in range(plan.batches_per_epoch) for i in plan.example_indices(m)]
    assert sorted(first_epoch) == list(range(200))
    assert len(plan.micro_batches) == 2 * plan.batches_per_epoch
    assert all(len(step) <= 2 for step in plan.steps) and sum(plan.step_targets) == 2 * 200
    half = plan_training(examples, settings, 0.5, seed=3)
    assert len(half.micro_batches) == round(0.5 * plan.batches_per_epoch)
    padded = plan_training(examples, {**settings, "packing": False}, 1, seed=3)
    assert sorted(i for m in range(padded.batches_per_epoch) for i in padded.example_indices(m)) == list(range(200))


def test_each_rank_runs_the_same_number_of_passes():
    step = range(10, 15)
    shares = [rank_share(step, distributed.Ranks(rank=r, world_size=2)) for r in range(2)]
    assert [m for m, w in shares[0]] == [10, 12, 14] and [m for m, w in shares[1] if w] == [11, 13]
    assert len(shares[1]) == 3 and shares[1][-1][1] == 0.0


# ------------------------------------------------------------------ settings


def test_learning_rate_schedules():
    assert [learning_rate_at(s, 10, 1.0, "constant", 0.0) for s in (0, 9)] == [1.0, 1.0]
    assert [learning_rate_at(s, 10, 1.0, "constant", 0.2) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    cosine = [learning_rate_at(s, 10, 1.0, "cosine", 0.0) for s in range(10)]
    assert cosine[0] == 1.0 and all(a > b for a, b in zip(cosine, cosine[1:])) and cosine[-1] < 0.05


def test_autocast_only_where_asked_or_supported():
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) == torch.bfloat16


def test_more_than_one_gpu_without_cuda_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no CUDA device"):
        distributed.process_count(2, visible_gpus=0)
    assert distributed.process_count(1, visible_gpus=0) == 1
    assert distributed.process_count(4, visible_gpus=8) == 4
    assert distributed.process_count(4, visible_gpus=2) == 2


def test_launch_command_for_four_gpus():
    command = distributed.launch_command("spec.json", 4, python="python")
    assert command == [
        "python",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=4",
        "-m",
        "inscl.training.train",
        "--spec",
        "spec.json",
    ]


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
    lora = load_trainable(str(workspace["base"]), str(workspace["base"]), MODEL, settings)
    full = load_trainable(str(workspace["base"]), str(workspace["base"]), MODEL, training_settings(mode="full"))
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
def test_full_fine_tuning_lowers_the_loss_and_is_deterministic(workspace, single_thread):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    job = make_job(workspace, "full", ["copy", "sst2"])
    summary = train(job)
    log = pd.read_parquet(job.output_log)
    assert (
        list(log.columns) == artifacts.columns("train_log")
        and len(log) == summary["total_steps"] == summary["steps_run"]
    )
    assert log["loss"].iloc[-3:].mean() < 0.7 * log["loss"].iloc[:3].mean()
    assert log["epoch"].iloc[-1] == pytest.approx(3.0) and (log["tokens_per_s"] > 0).all()
    assert AutoModelForCausalLM.from_pretrained(job.output_model).config.model_type == "llama"
    assert not (workspace["folder"] / "full" / "checkpoints").exists()
    again = make_job(workspace, "full_again", ["copy", "sst2"])
    train(again)
    first, second = (
        load_file(f"{job.output_model}/model.safetensors"),
        load_file(f"{again.output_model}/model.safetensors"),
    )
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.timeout(300)
def test_lora_adapter_is_carried_through_stages(workspace, single_thread):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    stage1 = make_job(workspace, "lora1", ["copy"], mode="lora", epochs=1)
    train(stage1)
    stage2 = make_job(workspace, "lora2", ["sst2"], previous=stage1.output_model, mode="lora", epochs=1)
    train(stage2)
    for job in (stage1, stage2):
        assert (workspace["folder"] / job.label / "model" / "adapter_config.json").exists()
    first = load_file(f"{stage1.output_model}/adapter_model.safetensors")
    second = load_file(f"{stage2.output_model}/adapter_model.safetensors")
    assert first.keys() == second.keys() and any(not torch.equal(first[k], second[k]) for k in first)
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

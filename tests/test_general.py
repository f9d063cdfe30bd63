import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from fixtures.eval.tiny_lm import train_memorizer

from inscl.core.io import InputError
from inscl.evaluation.general_ability import (
    general_delta,
    harness_model_args,
    primary_metric,
    results_table,
    run_harness,
)

HARNESS_TASKS = Path(__file__).parent / "fixtures" / "eval" / "harness"
MODEL_CFG = {"trust_remote_code": False}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The memorising tiny model, and a LoRA adapter on it (B = 0 at init, so the same function)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    full = train_memorizer(tmp_path_factory.mktemp("full"))
    adapter = tmp_path_factory.mktemp("adapter")
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(full), LoraConfig(r=2, target_modules=["q_proj"]))
    peft_model.save_pretrained(adapter)
    yield full, adapter
    torch.set_num_threads(threads)


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(HARNESS_TASKS)  # the task YAMLs name their data files relative to it


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_harness_runs_local_tasks_offline_on_a_lora_adapter(models, offline):
    full, adapter = models
    general = {"tasks": ["tiny_sentiment", "tiny_addition"], "include_path": str(HARNESS_TASKS), "batch_size": 4}
    table = run_harness(str(adapter), str(full), MODEL_CFG, general, device="cpu")
    assert list(table.columns) == ["task", "metric", "value"]
    values = table.set_index(["task", "metric"])["value"]
    # the model memorised these answers: multiple choice (loglikelihood) and generation both score 100
    assert values[("tiny_sentiment", "acc")] == pytest.approx(100.0)
    assert values[("tiny_addition", "exact_match")] == pytest.approx(100.0)


@pytest.mark.timeout(300)
def test_unknown_harness_task_is_a_one_line_config_error(offline):
    with pytest.raises(InputError, match=r"field 'general.tasks'.*no task named 'no_such_task'"):
        run_harness("unused", "unused", MODEL_CFG, {"tasks": ["no_such_task"], "include_path": str(HARNESS_TASKS)})


def test_missing_include_path_is_named(tmp_path):
    with pytest.raises(InputError, match="general.include_path"):
        run_harness("unused", "unused", MODEL_CFG, {"tasks": ["x"], "include_path": str(tmp_path / "nope")})


def test_model_args_full_and_adapter(models):
    full, adapter = models
    args = harness_model_args(str(full), str(full), MODEL_CFG, "cpu")
    assert args["pretrained"] == str(full) and "peft" not in args and args["dtype"] == "float32"
    args = harness_model_args(str(adapter), str(full), MODEL_CFG, "cpu")
    assert args["pretrained"] == str(full) and args["peft"] == str(adapter)
    assert args["tokenizer"] == str(full)  # the adapter folder has no tokenizer


def test_results_table_scales_fractions_and_names_filters():
    results = {
        "results": {
            "gsm8k": {
                "alias": "gsm8k",
                "exact_match,strict-match": 0.25,
                "exact_match_stderr,strict-match": 0.01,
                "exact_match,flexible-extract": 0.3,
            },
            "wikitext": {"word_perplexity,none": 12.5},
            "boolq": {"acc,none": 0.5, "acc_stderr,none": 0.02},
        }
    }
    table = results_table(results)
    assert table.to_dict("records") == [
        {"task": "boolq", "metric": "acc", "value": 50.0},
        {"task": "gsm8k", "metric": "exact_match,strict-match", "value": 25.0},
        {"task": "gsm8k", "metric": "exact_match,flexible-extract", "value": 30.0},
        {"task": "wikitext", "metric": "word_perplexity", "value": 12.5},
    ]


def test_general_delta_by_hand():
    before = pd.DataFrame(
        [
            {"task": "boolq", "metric": "acc", "value": 60.0},
            {"task": "boolq", "metric": "acc_norm", "value": 10.0},
            {"task": "gsm8k", "metric": "exact_match,flexible-extract", "value": 30.0},
            {"task": "gsm8k", "metric": "exact_match,strict-match", "value": 20.0},
            {"task": "piqa", "metric": "acc", "value": 70.0},
        ]
    )
    after = pd.DataFrame(
        [
            {"task": "boolq", "metric": "acc", "value": 50.0},
            {"task": "boolq", "metric": "acc_norm", "value": 90.0},
            {"task": "gsm8k", "metric": "exact_match,flexible-extract", "value": 0.0},
            {"task": "gsm8k", "metric": "exact_match,strict-match", "value": 26.0},
        ]
    )
    table, delta = general_delta(before, after)
    assert table["task"].tolist() == ["boolq", "gsm8k"]  # piqa was not evaluated after
    assert table["metric"].tolist() == ["acc", "exact_match,strict-match"]
    assert delta == pytest.approx(((50 - 60) + (26 - 20)) / 2)
    _, only_boolq = general_delta(before, after, tasks=["boolq", "mmlu"])
    assert only_boolq == pytest.approx(-10)
    _, nothing = general_delta(before, after.iloc[0:0])
    assert math.isnan(nothing)


def test_primary_metric_preference():
    assert primary_metric(["acc_norm", "acc"]) == "acc"
    assert primary_metric(["f1", "exact_match"]) == "exact_match"
    assert primary_metric(["bleu"]) == "bleu"

import pandas as pd
import pytest
import torch
from fixtures.eval.tiny_lm import EXAMPLES, TINY, instances_frame, train_memorizer

from inscl.core.io import InputError
from inscl.core.prompts import build_prompt, encode_prompt
from inscl.evaluation.generate import GenerationSettings, HFBackend, generate_ids, generate_texts
from inscl.evaluation.lengths import fit_to_context
from inscl.evaluation.predict import predict, select_test_rows
from inscl.evaluation.score import score_predictions
from inscl.training.base_model import build_tiny_model, train_tokenizer
from inscl.training.models import load_for_inference

TASKS = ["sentiment", "addition", "reverse"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The models are tiny: on a busy machine more threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def memorizer(tmp_path_factory):
    path = train_memorizer(tmp_path_factory.mktemp("memorizer"))
    return load_for_inference(str(path), str(path), {"trust_remote_code": False}, device="cpu")


@pytest.fixture(scope="module")
def untrained():
    corpus = [text for _, _, ins, inp, ans in EXAMPLES for text in (ins, inp, ans)] * 3
    tokenizer = train_tokenizer(corpus, TINY["vocab_size"], TINY["max_position_embeddings"])
    return build_tiny_model(TINY, tokenizer).eval(), tokenizer


PROMPTS = [build_prompt(ins, inp) for _, _, ins, inp, _ in EXAMPLES]


@pytest.mark.timeout(120)
def test_predict_reproduces_memorized_answers_and_stops_at_eos(memorizer, tmp_path):
    model, tokenizer = memorizer
    evaluation = {"max_test_per_task": None, "max_new_tokens": 10, "batch_size": 3}
    backend = HFBackend(model, tokenizer, GenerationSettings.from_config(evaluation))
    rows = select_test_rows(instances_frame(), TASKS, None)
    out = tmp_path / "predictions.parquet"
    predictions, generated = predict(rows, instances_frame(), backend, tokenizer, evaluation, out, progress=False)
    assert generated == len(EXAMPLES)
    assert list(predictions.columns[:5]) == ["task", "instance_id", "prompt", "prediction", "references"]
    assert predictions["prediction"].tolist() == [ans for *_, ans in EXAMPLES]
    assert predictions["finish"].tolist() == ["eos"] * len(EXAMPLES)
    assert predictions["max_new_tokens"].tolist() == [10] * len(EXAMPLES)
    assert not out.with_suffix(".chunks").exists()  # the saved chunks go once the output is written
    assert predictions["prompt"].tolist() == PROMPTS
    assert predictions["references"].map(list).tolist() == [[ans] for *_, ans in EXAMPLES]
    scores = score_predictions(predictions, {"metrics": {"default": "exact_match"}})
    assert scores["score"].tolist() == [100.0, 100.0, 100.0]


@pytest.mark.timeout(120)
def test_memorized_answers_end_with_eos_before_the_token_limit(memorizer):
    model, tokenizer = memorizer
    ids = [encode_prompt(tokenizer, p) for p in PROMPTS]
    generated = generate_ids(model, tokenizer, ids, GenerationSettings(max_new_tokens=10, batch_size=4), progress=False)
    expected = [tokenizer(ans, add_special_tokens=False)["input_ids"] for *_, ans in EXAMPLES]
    assert generated == expected  # the EOS that ended each answer is not part of it


@pytest.mark.timeout(120)
def test_batched_length_sorted_generation_equals_batch_one(untrained):
    model, tokenizer = untrained
    ids = [encode_prompt(tokenizer, p) for p in PROMPTS]
    assert len({len(i) for i in ids}) > 1  # padding really happens
    batched = generate_ids(model, tokenizer, ids, GenerationSettings(max_new_tokens=16, batch_size=4), progress=False)
    single = generate_ids(model, tokenizer, ids, GenerationSettings(max_new_tokens=16, batch_size=1), progress=False)
    assert batched == single
    assert all(len(tokens) <= 16 for tokens in batched)
    assert max(len(tokens) for tokens in batched) > 1


@pytest.mark.timeout(120)
def test_sampling_is_seeded(untrained):
    model, tokenizer = untrained
    settings = GenerationSettings(max_new_tokens=12, batch_size=4, do_sample=True, temperature=1.0, seed=7)
    first = generate_texts(model, tokenizer, PROMPTS, settings, progress=False)
    again = generate_texts(model, tokenizer, PROMPTS, settings, progress=False)
    other = generate_texts(
        model, tokenizer, PROMPTS, GenerationSettings(**{**settings.__dict__, "seed": 8}), progress=False
    )
    greedy = generate_texts(model, tokenizer, PROMPTS, GenerationSettings(max_new_tokens=12), progress=False)
    assert first == again
    assert first != other
    assert first != greedy


@pytest.mark.timeout(120)
def test_prompt_longer_than_the_context_is_cut_from_the_left(untrained):
    model, tokenizer = untrained
    long_prompt = build_prompt("Repeat.", "word " * 400)
    assert len(encode_prompt(tokenizer, long_prompt)) > TINY["max_position_embeddings"]
    out = generate_texts(model, tokenizer, [long_prompt], GenerationSettings(max_new_tokens=8), progress=False)
    assert len(out) == 1


def test_fit_to_context_keeps_bos():
    assert fit_to_context([1, 5, 6, 7, 8], 3, bos_id=1) == [1, 7, 8]
    assert fit_to_context([5, 6, 7, 8], 3, bos_id=1) == [6, 7, 8]
    assert fit_to_context([1, 5], 3, bos_id=1) == [1, 5]
    assert fit_to_context([1, 5], None, bos_id=1) == [1, 5]


def make_instances(n_test=10):
    rows = []
    for task in ("a", "b"):
        for i in range(n_test):
            rows.append(
                dict(task=task, split="test", instance_id=f"{task}{i}", instruction="I", input=str(i), output=[str(i)])
            )
        rows.append(
            dict(task=task, split="train", instance_id=f"{task}-train", instruction="I", input="x", output=["x"])
        )
    return pd.DataFrame(rows)


def test_test_rows_are_capped_deterministically_and_independent_of_row_order():
    instances = make_instances()
    chosen = select_test_rows(instances, ["a", "b"], 4)
    assert chosen.groupby("task").size().to_dict() == {"a": 4, "b": 4}
    assert (chosen["split"] == "test").all()
    shuffled = instances.sample(frac=1.0, random_state=3).reset_index(drop=True)
    again = select_test_rows(shuffled, ["a", "b"], 4)
    assert set(again["instance_id"]) == set(chosen["instance_id"])
    assert len(select_test_rows(instances, ["b"], None)) == 10


def test_task_without_test_rows_is_named():
    instances = make_instances()
    with pytest.raises(InputError, match=r"inst.parquet: record c: field 'split'"):
        select_test_rows(instances, ["a", "c"], 4, source="inst.parquet")


def test_max_new_tokens_beyond_the_context_is_a_clear_error(untrained):
    model, tokenizer = untrained
    with pytest.raises(ValueError, match="max_new_tokens=128 leaves no room"):
        generate_texts(model, tokenizer, PROMPTS[:1], GenerationSettings(max_new_tokens=128), progress=False)

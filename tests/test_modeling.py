import json
import os

import pytest
import torch
from training_support import MODEL, TINY, build_tiny_base, superni_instances

from inscl.core.io import InputError
from inscl.training.base_model import build_base_model, train_tokenizer
from inscl.training.models import BASE_REFERENCE, ModelNotAvailable, load_for_inference


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny_base(tmp_path_factory.mktemp("modeling"))


def test_tokenizer_round_trips_real_text_and_adds_bos():
    rows = superni_instances()
    texts = rows["instruction"].tolist() + rows["input"].tolist()
    tokenizer = train_tokenizer(texts, 400, 256)
    for text in texts[:20] + ["unseen bytes: café, naïve, 数字 ✓"]:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert {tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token} == {"<pad>", "<s>", "</s>"}
    assert len(tokenizer) <= 400


def test_tokenizer_training_is_deterministic():
    texts = superni_instances()["input"].tolist()
    first, second = train_tokenizer(texts, 350, 128), train_tokenizer(texts, 350, 128)
    assert first.get_vocab() == second.get_vocab()


def test_tiny_base_loads_like_any_hugging_face_model(base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    assert model.config.model_type == "llama"
    assert model.config.num_hidden_layers == TINY["layers"]
    assert model.config.hidden_size == TINY["hidden_size"]
    assert model.config.num_attention_heads == TINY["heads"]
    assert model.config.vocab_size == len(tokenizer)
    assert (base / "model.safetensors").exists()


def test_tiny_base_is_reproducible_from_its_seed(tmp_path, base):
    from safetensors.torch import load_file

    again = build_tiny_base(tmp_path / "again")
    other = build_tiny_base(tmp_path / "other", seed=1)
    reference = load_file(base / "model.safetensors")
    assert all(torch.equal(reference[k], v) for k, v in load_file(again / "model.safetensors").items())
    assert not torch.equal(
        reference["model.embed_tokens.weight"], load_file(other / "model.safetensors")["model.embed_tokens.weight"]
    )


def test_hidden_size_must_divide_by_heads(tmp_path):
    with pytest.raises(InputError, match="model.tiny.heads"):
        build_tiny_base(tmp_path, hidden_size=30, heads=4)
    assert not (tmp_path / "base").exists()


def test_load_for_inference_pads_left_and_generates(base):
    model, tokenizer = load_for_inference(str(base), str(base), MODEL, device="cpu")
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None
    batch = tokenizer(["short", "a somewhat longer prompt"], return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 3)
    assert not model.training


def test_load_for_inference_merges_a_peft_adapter(tmp_path, base):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    model, _ = load_for_inference(str(tmp_path / "adapter"), str(base), MODEL, device="cpu")
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), tmp_path / "adapter").eval()
    plain = AutoModelForCausalLM.from_pretrained(base).eval()
    ids = torch.tensor([[1, 50, 60, 70]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reference(ids).logits, atol=1e-5)
        assert not torch.allclose(model(ids).logits, plain(ids).logits, atol=1e-3)


def test_local_hugging_face_path_is_referenced_not_copied(tmp_path, base):
    out = tmp_path / "reference"
    build_base_model({**MODEL, "base": str(base)}, superni_instances(), out)
    reference = json.loads((out / BASE_REFERENCE).read_text())
    assert reference["path"] == str(base.resolve())
    assert not (out / "model.safetensors").exists()
    model, tokenizer = load_for_inference(str(out), str(out), MODEL, device="cpu")
    assert model.config.hidden_size == TINY["hidden_size"] and tokenizer.pad_token_id is not None


def test_model_missing_from_cache_is_a_clear_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotAvailable) as error:
        build_base_model({**MODEL, "base": "meta-llama/Llama-2-7b-chat-hf"}, superni_instances(), tmp_path / "out")
    message = str(error.value)
    assert "model.base" in message and "not in the local Hugging Face cache" in message and "\n" not in message
    assert not os.path.exists(tmp_path / "out")


def test_saved_dtype_follows_the_config_and_auto_means_the_base_models(tmp_path, base):
    from inscl.training.models import save_dtype, saved_dtype

    assert saved_dtype(base) == torch.float32  # the tiny base is built in fp32
    assert save_dtype({"save_dtype": "auto"}, base) == torch.float32
    assert save_dtype({"save_dtype": "bf16"}, base) == torch.bfloat16
    config = json.loads((base / "config.json").read_text())
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text(json.dumps({**config, "dtype": "float16"}))
    assert saved_dtype(tmp_path / "half") == torch.float16

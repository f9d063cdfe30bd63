"""Loading models: full folders, PEFT adapters on their base, Hugging Face references; for training and
inference. The model a stage trains (full weights or a LoRA adapter) and its dtypes; sharded loading
and data-parallel wrapping are in inscl.training.parallel."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from inscl.core.io import InputError

BASE_REFERENCE = "inscl_base_reference.json"
ADAPTER_CONFIG = "adapter_config.json"


class ModelNotAvailable(InputError):
    """The configured base model cannot be found locally."""


def resolve_model_path(model_dir) -> str:
    """The folder holding the weights: the folder itself, or the one a base reference points to."""
    reference_file = Path(model_dir) / BASE_REFERENCE
    if not reference_file.exists():
        return str(model_dir)
    path = json.loads(reference_file.read_text())["path"]
    if not os.path.isdir(path):
        raise ModelNotAvailable(reference_file, f"referenced model folder {path} no longer exists", field="path")
    return path


def is_adapter(model_dir) -> bool:
    return (Path(model_dir) / ADAPTER_CONFIG).exists()


def load_tokenizer(path, model_cfg: dict):
    """The tokenizer of a model folder, with a pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model_path(path), local_files_only=True, trust_remote_code=model_cfg.get("trust_remote_code", False)
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for but CUDA is not available")
    return torch.device(device)


def inference_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_causal_lm(path, model_cfg: dict, dtype: torch.dtype = torch.float32, attention: str = "sdpa", device=None):
    """AutoModelForCausalLM from a full model folder (or a base reference), local files only,
    its weights loaded straight onto `device` (no full copy in host memory on a GPU)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        resolve_model_path(path),
        dtype=dtype,
        attn_implementation=attention,
        device_map=str(device) if device is not None and torch.device(device).type == "cuda" else None,
        local_files_only=True,
        trust_remote_code=model_cfg.get("trust_remote_code", False),
    )


def load_for_inference(model_dir: str, base_dir: str, model_cfg: dict, device: str = "auto"):
    """(model, tokenizer) ready for batched generation.

    `model_dir` is a full `save_pretrained` folder or a PEFT adapter folder whose base is
    `base_dir`. The adapter is merged for speed. The tokenizer pads on the left.
    """
    target = pick_device(device)
    dtype = inference_dtype(target)
    if is_adapter(model_dir):
        from peft import PeftModel

        base = load_causal_lm(base_dir, model_cfg, dtype)
        model = PeftModel.from_pretrained(base, str(model_dir), is_trainable=False).merge_and_unload()
    else:
        model = load_causal_lm(model_dir, model_cfg, dtype)
    tokenizer_source = model_dir if has_tokenizer(model_dir) else base_dir
    tokenizer = load_tokenizer(tokenizer_source, model_cfg)
    tokenizer.padding_side = "left"
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(target).eval()
    return model, tokenizer


def has_tokenizer(model_dir) -> bool:
    folder = Path(model_dir)
    return (folder / "tokenizer.json").exists() or (folder / "tokenizer_config.json").exists()


# ---------------------------------------------------------------- training

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def saved_dtype(model_dir) -> torch.dtype:
    """The dtype a model folder's config declares (float32 when it declares none)."""
    config = json.loads((Path(resolve_model_path(model_dir)) / "config.json").read_text())
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return getattr(torch, name)


def save_dtype(training: dict, base_dir) -> torch.dtype:
    """training.save_dtype, 'auto' being the base model's own dtype."""
    setting = training["save_dtype"]
    return saved_dtype(base_dir) if setting == "auto" else DTYPES[setting]


def compute_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 where it helps ('auto': CUDA with bf16), or as asked; None = fp32."""
    if precision == "fp32":
        return None
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if precision == "bf16":
        if device.type == "cuda" and not cuda_bf16:
            raise InputError("config", "precision bf16 but this GPU does not support bf16", field="training.precision")
        return torch.bfloat16
    return torch.bfloat16 if cuda_bf16 else None


def load_trainable(previous: str, base: str, model_cfg: dict, training: dict, device, attention: str = "sdpa"):
    """The model a stage starts from, on `device`, ready to train.

    full: the previous model's weights, in training.master_weights.
    lora: the previous stage's adapter carried on (trainable), or a fresh adapter on a full model;
    the frozen weights in the compute dtype on a GPU.
    """
    master = DTYPES[training["master_weights"]]
    if training["mode"] == "full":
        return load_causal_lm(previous, model_cfg, master, attention, device)
    from peft import PeftModel, get_peft_model

    compute = compute_dtype(training["precision"], torch.device(device))
    frozen = compute if torch.device(device).type == "cuda" and compute else master
    if is_adapter(previous):
        base_model = load_causal_lm(base, model_cfg, frozen, attention, device)
        return PeftModel.from_pretrained(base_model, previous, is_trainable=True)
    return get_peft_model(load_causal_lm(previous, model_cfg, frozen, attention, device), lora_config(training["lora"]))


def lora_config(lora: dict):
    from peft import LoraConfig

    return LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=list(lora["target_modules"]),
        task_type="CAUSAL_LM",
    )


def causal_lm(model):
    """The transformers model inside a PEFT wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

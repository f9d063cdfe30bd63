"""Loading models: full folders, PEFT adapters on their base, Hugging Face references; for training and
inference. The model a stage trains: full weights or a LoRA adapter, its precision and data-parallel wrapping."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from inscl.core.io import InputError
from inscl.training import distributed

log = logging.getLogger(__name__)

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


def load_causal_lm(path, model_cfg: dict, dtype: torch.dtype = torch.float32):
    """AutoModelForCausalLM from a full model folder (or a base reference), SDPA attention, local files only."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        resolve_model_path(path),
        dtype=dtype,
        attn_implementation="sdpa",
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


def load_trainable(previous: str, base: str, model_cfg: dict, training: dict, frozen_dtype=torch.float32):
    """The model a stage starts from, ready to train.

    full: the previous model's weights (an adapter from a LoRA run is merged first).
    lora: the previous stage's adapter carried on (trainable), or a fresh adapter on a full model.
    """
    if training["mode"] == "full":
        if is_adapter(previous):
            from peft import PeftModel

            return PeftModel.from_pretrained(load_causal_lm(base, model_cfg), previous).merge_and_unload()
        return load_causal_lm(previous, model_cfg)
    from peft import PeftModel, get_peft_model

    if is_adapter(previous):
        return PeftModel.from_pretrained(load_causal_lm(base, model_cfg, frozen_dtype), previous, is_trainable=True)
    return get_peft_model(load_causal_lm(previous, model_cfg, frozen_dtype), lora_config(training["lora"]))


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


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where it helps ('auto': CUDA with bf16), or as asked; None = fp32."""
    if precision == "fp32":
        return None
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if precision == "bf16":
        if device.type == "cuda" and not cuda_bf16:
            raise RuntimeError("training.precision is bf16 but this GPU does not support bf16")
        return torch.bfloat16
    return torch.bfloat16 if cuda_bf16 else None


def wrap_parallel(module: torch.nn.Module, ranks: distributed.Ranks, fsdp: bool, device: torch.device):
    """DDP, or FSDP2 (each decoder layer and the root sharded) when asked, across the ranks.
    `module` holds the model as `module.model` (an AnswerLoss)."""
    if not ranks.distributed:
        return module
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in causal_lm(module.model).get_decoder().layers:
            fully_shard(layer)
        return fully_shard(module)
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)

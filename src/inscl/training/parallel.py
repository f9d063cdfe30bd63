"""Data parallelism: DDP, or FSDP2 with mixed precision; sharded loading of a full model (no rank
ever holds all of it); gradient sync on the last micro-batch of a step; gathering the weights
for saving.

FSDP2 shards each decoder layer and the root. With a bf16 compute dtype its parameters are
all-gathered and its gradients reduce-scattered in bf16, while the sharded weights the
optimizer updates stay in training.master_weights (fp32 by default).
"""

from __future__ import annotations

import contextlib

import torch

from inscl.training import distributed
from inscl.training.models import causal_lm, resolve_model_path


def mixed_precision(compute: torch.dtype | None):
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=compute) if compute else MixedPrecisionPolicy()


def shard(module: torch.nn.Module, compute: torch.dtype | None) -> torch.nn.Module:
    """FSDP2 over each decoder layer and the root. `module` holds the model as `module.model`."""
    from torch.distributed.fsdp import fully_shard

    policy = mixed_precision(compute)
    for layer in causal_lm(module.model).get_decoder().layers:
        fully_shard(layer, mp_policy=policy)
    return fully_shard(module, mp_policy=policy)


def replicate(module: torch.nn.Module, ranks: distributed.Ranks, device: torch.device):
    """DDP across the ranks; the module itself in a single process. (FSDP2 modules come from `load_sharded`.)"""
    if not ranks.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def load_sharded(path, model_cfg: dict, dtype: torch.dtype, attention: str, device: torch.device, make_root, compute):
    """A full model sharded with FSDP2, each rank reading only its shard of the safetensors.

    The model is built with its parameters on the meta device, sharded, materialised on `device`
    and filled from the files (torch.distributed.checkpoint's HuggingFaceStorageReader reads
    slices). `make_root(model)` gives the root module to shard (the loss around the model).
    """
    import torch.distributed.checkpoint as dcp
    from accelerate import init_empty_weights
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = resolve_model_path(path)
    trust = model_cfg.get("trust_remote_code", False)
    config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=trust)
    with init_empty_weights(include_buffers=False):  # buffers (rotary frequencies) are computed, not loaded
        model = AutoModelForCausalLM.from_config(
            config, dtype=dtype, attn_implementation=attention, trust_remote_code=trust
        )
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    root = shard(make_root(model), compute)
    root.to_empty(device=device)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
    state = get_model_state_dict(model)
    dcp.load(state, storage_reader=dcp.HuggingFaceStorageReader(folder))
    set_model_state_dict(model, state)
    return model, root


def gradient_sync(wrapped: torch.nn.Module, enabled: bool):
    """Context of a micro-batch's backward: gradients are synchronised across ranks only when
    `enabled` (the step's last micro-batch), accumulated locally otherwise."""
    if hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2
        wrapped.set_requires_gradient_sync(enabled)
        return contextlib.nullcontext()
    if hasattr(wrapped, "no_sync") and not enabled:  # DDP
        return wrapped.no_sync()
    return contextlib.nullcontext()


def gather_weights(model: torch.nn.Module, dtype: torch.dtype, ranks: distributed.Ranks) -> dict | None:
    """Every weight of a sharded model, whole and cast to `dtype` on rank 0's CPU (None elsewhere);
    one tensor at a time, so rank 0 holds the model in `dtype` plus one full tensor."""
    from torch.distributed.tensor import DTensor

    weights: dict | None = {} if ranks.is_main else None
    for name, tensor in model.state_dict().items():
        full = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
        if weights is not None:
            weights[name] = full.detach().to("cpu", dtype)
    return weights

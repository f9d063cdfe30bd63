"""Attention as a setting (`training.attention`), and packed micro-batches that never attend across
examples whatever the kernel.

A packed micro-batch is one row of slots, one example per slot, position ids restarting at 0 in
each (batching.collate_packed). What each kernel is given:

- sdpa: `varlen_sdpa`, registered with transformers as VARLEN_SDPA. Slots of similar length form
  buckets, each slot padded to its bucket's longest example (at most `SDPA_SLACK` - 1 = 5% more
  tokens); each bucket is a batch of causal rows for one SDPA call, built from views of the row.
  No mask is built and no score is computed across examples.
- flash_attention_2: a padding-free row and `cu_seq_lens`; transformers calls flash-attn's varlen kernel.
- flex_attention: a padding-free row; transformers sees the restarting position ids of the one
  row and builds a block-causal BlockMask.

Padded micro-batches (`training.packing: false`) use the kernel as is, with the padding mask.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

from inscl.core.io import InputError

BACKENDS = ("sdpa", "flash_attention_2", "flex_attention")
VARLEN_SDPA = "inscl_varlen_sdpa"
SDPA_SLACK = 1.05


def varlen_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, inscl_buckets=None, **kwargs):
    """Causal SDPA over a packed row of slots in buckets (query/key/value: 1 x heads x tokens x dim):
    each bucket's slots, viewed as a batch, in one call. Views only: nothing is copied or masked."""
    if inscl_buckets is None or query.shape[0] != 1:
        raise ValueError(f"{VARLEN_SDPA} needs one packed row and its buckets (batching.collate_packed)")
    gqa = key.shape[1] != query.shape[1]
    sizes = [count * width for count, width in inscl_buckets]

    def batches(x):  # per bucket: count x heads x width x dim
        chunks = x[0].split(sizes, dim=1)
        return [c.view(x.shape[1], n, w, x.shape[3]).transpose(0, 1) for c, (n, w) in zip(chunks, inscl_buckets)]

    outputs = [
        F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=gqa)
        .transpose(1, 2)
        .reshape(-1, q.shape[1], q.shape[3])
        for q, k, v in zip(batches(query), batches(key), batches(value))
    ]
    return torch.cat(outputs)[None], None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(VARLEN_SDPA, varlen_sdpa)
    AttentionMaskInterface.register(VARLEN_SDPA, lambda *args, **kwargs: None)  # the slices are the mask


def check_backend(backend: str, device: torch.device) -> None:
    """One-line error when the kernel cannot run here."""
    if backend not in BACKENDS:
        raise InputError(
            "config", f"unknown attention {backend!r}; expected one of {BACKENDS}", field="training.attention"
        )
    if backend == "flash_attention_2":
        if importlib.util.find_spec("flash_attn") is None:
            raise InputError(
                "config",
                "attention flash_attention_2 needs the flash-attn package, which is not installed "
                "(pip install flash-attn --no-build-isolation); use sdpa",
                field="training.attention",
            )
        if device.type != "cuda":
            raise InputError(
                "config",
                f"attention flash_attention_2 runs on CUDA GPUs only, not on {device}",
                field="training.attention",
            )
    if backend == "flex_attention" and importlib.util.find_spec("torch.nn.attention.flex_attention") is None:
        raise InputError(
            "config",
            f"attention flex_attention needs torch >= 2.5 (this is {torch.__version__})",
            field="training.attention",
        )


def implementation(backend: str, packed: bool) -> str:
    """The transformers attn_implementation a training model runs with."""
    if backend == "sdpa" and packed:
        _register()
        return VARLEN_SDPA
    return backend


def slack(backend: str) -> float:
    """How much padding a packed row may carry (batching.collate_packed): none for the varlen kernels;
    for SDPA, 5% buys one SDPA call per bucket of similar lengths instead of one per example, which
    costs less on a CPU than the padding (benchmarks/training.py)."""
    return SDPA_SLACK if backend == "sdpa" else 1.0


def forward_kwargs(backend: str, batch: dict, device) -> dict:
    """Extra model inputs of a packed micro-batch for the kernel (flex needs none: the position ids say it all)."""
    if "cu_seq_lens" not in batch or backend == "flex_attention":
        return {}
    if backend == "sdpa":
        return {"inscl_buckets": batch["buckets"]}
    cu, longest = batch["cu_seq_lens"].to(device), batch["max_length"]
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}

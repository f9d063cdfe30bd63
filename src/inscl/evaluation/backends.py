"""What every generation backend takes and gives, and the factory that opens the configured one.

A backend turns `Request`s (prompt token ids already built and truncated, a token budget, stop
strings) into `Completion`s (the new token ids before EOS, or the text where a server gives text
only). Prompt building, truncation, decoding and cutting at stop strings happen outside the
backends (`inscl.evaluation.predict`), so the backends see the same inputs and their outputs are
post-processed alike:

- ``hf``: transformers `generate` in the job (`inscl.evaluation.generate.HFBackend`);
- ``vllm``: vLLM in its own environment, driven over a pipe (`inscl.evaluation.vllm_backend`);
- ``openai``: an OpenAI-compatible completions server that is already running
  (`inscl.evaluation.openai_backend`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Request:
    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    adapter: str | None = None  # a LoRA adapter name the backend serves (vllm, several on one base)


@dataclass
class Completion:
    token_ids: list[int] | None  # the answer's tokens before EOS; None when the backend gives text only
    eos: bool  # the answer ended with EOS
    generated_tokens: int  # tokens the backend generated, EOS included
    text: str | None = field(default=None)  # the answer's text, from text-only backends


def group_requests(requests: list[Request]) -> dict[tuple[int, tuple[str, ...]], list[int]]:
    """Indices of `requests` grouped by (max_new_tokens, stop strings), in first-seen order."""
    groups: dict[tuple[int, tuple[str, ...]], list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault((request.max_new_tokens, tuple(request.stop)), []).append(index)
    return groups


def open_backend(evaluation: dict, model_dir: str, base_dir: str, model_cfg: dict, run_name: str, threads: int = 1):
    """The configured backend for the model of one run -> (backend, tokenizer). The tokenizer is the one
    prompts are encoded and answers decoded with, whatever the backend."""
    from inscl.training.models import has_tokenizer, load_tokenizer

    backend = evaluation.get("backend", "hf")
    if backend == "hf":
        from inscl.evaluation.generate import GenerationSettings, HFBackend
        from inscl.training.models import load_for_inference

        model, tokenizer = load_for_inference(model_dir, base_dir, model_cfg)
        settings = GenerationSettings.from_config(evaluation)
        return HFBackend(model, tokenizer, settings), tokenizer
    tokenizer = load_tokenizer(model_dir if has_tokenizer(model_dir) else base_dir, model_cfg)
    if backend == "vllm":
        from inscl.evaluation.vllm_backend import VLLMBackend

        return VLLMBackend.for_run(evaluation, model_dir, base_dir, model_cfg, tokenizer, run_name, threads), tokenizer
    if backend == "openai":
        from inscl.evaluation.openai_backend import OpenAIBackend

        return OpenAIBackend.for_run(evaluation, model_dir, base_dir, model_cfg, tokenizer, run_name), tokenizer
    raise ValueError(f"unknown evaluation.backend {backend!r}; expected hf, vllm or openai")

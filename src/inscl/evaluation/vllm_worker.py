"""The vLLM side of evaluation.backend: vllm. Runs in the vLLM environment (`python -m inscl.evaluation.vllm_worker`),
so it imports the standard library and vLLM only.

Protocol: JSON lines on stdin, one JSON line back per line received.

1. ``{"model", "tokenizer", "dtype", "max_model_len", "seed", "adapters": {name: folder}, "max_lora_rank",
   "engine_args": {...}}`` -> ``{"ready": true, "vllm": version, "platform": name}``: builds one `vllm.LLM`;
   LoRA adapters are served on it unmerged (multi-LoRA).
2. ``{"requests": [{"prompt_ids", "max_tokens", "stop", "adapter", "seed"}], "stop_token_ids": [...],
   "sampling": null | {"temperature", "top_p"}}`` -> ``{"outputs": [{"token_ids": [...]}]}``: the generated
   ids (EOS included), in request order. ``sampling: null`` is greedy.
3. End of input: exit.

Anything else the engine prints goes to stderr. A failure answers ``{"error": "<one line>"}`` and exits 1.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

# vLLM's LoRA ranks (vllm.config.lora.MaxLoRARanks); max_lora_rank must be one of them.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
DEFAULT_CPU_KV_CACHE_BYTES = 1 << 30


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the job that started us dies (also by SIGKILL)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def build_engine(init: dict):
    from vllm import LLM
    from vllm.platforms import current_platform

    args = dict(init.get("engine_args") or {})
    adapters = init.get("adapters") or {}
    if adapters:
        rank = max(int(init.get("max_lora_rank") or 8), 1)
        # max_loras = adapters + 1: vLLM 0.32's CPU LoRA kernels give a no-adapter row in a mixed batch
        # the adapter in the last slot (vllm-project/vllm PR #48421); a spare slot keeps it empty.
        args.setdefault("enable_lora", True)
        args.setdefault("max_loras", len(adapters) + 1)
        args.setdefault("max_lora_rank", min(r for r in LORA_RANKS if r >= rank))
    if current_platform.is_cpu():
        args.setdefault("enforce_eager", True)  # skips a ~20 s compile; the tiny models gain little from it
        if "kv_cache_memory_bytes" not in args and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            args["kv_cache_memory_bytes"] = DEFAULT_CPU_KV_CACHE_BYTES
    llm = LLM(
        model=init["model"],
        tokenizer=init["tokenizer"],
        dtype=init.get("dtype", "auto"),
        max_model_len=init.get("max_model_len"),
        seed=int(init.get("seed", 0)),
        **args,
    )
    return llm, current_platform.device_name


def generate(llm, message: dict, adapters: dict) -> list[dict]:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    requests = message["requests"]
    sampling = message.get("sampling")
    stop_ids = list(message.get("stop_token_ids") or [])
    lora_ids = {name: number for number, name in enumerate(sorted(adapters), start=1)}
    outputs: list[dict | None] = [None] * len(requests)
    groups: dict = {}
    for index, request in enumerate(requests):
        groups.setdefault(request.get("adapter"), []).append(index)
    # One generate call per adapter: no batch mixes adapters (nor base and adapter rows).
    for adapter, members in groups.items():
        params = []
        for index in members:
            request = requests[index]
            kwargs = dict(max_tokens=int(request["max_tokens"]), stop=list(request.get("stop") or []))
            if sampling:
                kwargs.update(temperature=sampling["temperature"], top_p=sampling["top_p"], seed=request.get("seed"))
            else:
                kwargs.update(temperature=0.0)
            params.append(SamplingParams(stop_token_ids=stop_ids, **kwargs))
        lora = LoRARequest(adapter, lora_ids[adapter], adapters[adapter]) if adapter else None
        prompts = [TokensPrompt(prompt_token_ids=list(requests[i]["prompt_ids"])) for i in members]
        done = llm.generate(prompts, params, lora_request=lora, use_tqdm=False)
        for index, result in zip(members, done):
            outputs[index] = {"token_ids": list(result.outputs[0].token_ids)}
    return outputs  # type: ignore[return-value]


def main() -> int:
    _die_with_parent()
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the engine prints goes to stderr, not into the protocol

    def answer(payload: dict) -> None:
        protocol.write(json.dumps(payload) + "\n")
        protocol.flush()

    try:
        init = json.loads(sys.stdin.readline() or "{}")
        llm, platform = build_engine(init)
        import vllm

        answer({"ready": True, "vllm": vllm.__version__, "platform": platform})
        for line in sys.stdin:
            if line.strip():
                answer({"outputs": generate(llm, json.loads(line), init.get("adapters") or {})})
    except Exception as error:  # the job gets one line; the traceback goes to stderr
        traceback.print_exc()
        answer({"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

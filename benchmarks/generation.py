"""Generation backends side by side in one run: HF `generate` batch-1 (the naive way), our length-sorted batched
HF backend, and vLLM (evaluation.backend: vllm), on the same prompts and model, greedy, outputs compared.

    .venv/bin/python benchmarks/generation.py                        # the demo's tiny LLaMA and a ~1B one
    .venv/bin/python benchmarks/generation.py --sizes tiny --prompts 256 --batch-1
    .venv/bin/python benchmarks/generation.py --sizes large --max-new-tokens 64

Each model is a randomly initialised LLaMA built here (no weights are downloaded), saved to a temporary
folder that both backends load in float32 on CPU (bf16/fp16 on CUDA). A random model rarely emits EOS, so
nearly every answer runs to --max-new-tokens. Start-up (model load, vLLM engine) is timed apart from
generation; tokens/s counts generated tokens over generation time. vLLM runs in its own environment
(`make vllm-env`); without it the vLLM column says why.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

import torch

from inscl.core.prompts import build_prompt, encode_prompt
from inscl.evaluation.backends import Request
from inscl.evaluation.generate import GenerationSettings, HFBackend
from inscl.evaluation.vllm_backend import VLLMBackend, VLLMUnavailable, find_python, model_limits, resolve_dtype
from inscl.training.base_model import build_tiny_model, train_tokenizer
from inscl.training.models import load_for_inference

WORDS = (
    "the model reads a short review and decides whether it is positive negative or neutral about the film "
    "plot acting music numbers add subtract reverse letters sort words topic sports politics science"
).split()
# name -> LLaMA shape; large is about the biggest that fits twice (HF and vLLM) in this machine's memory in fp32
SIZES = {
    "tiny": dict(layers=2, hidden_size=128, heads=4, intermediate_size=256),  # config.yaml's demo model
    "large": dict(layers=20, hidden_size=2048, heads=16, intermediate_size=5632),  # ~1.0B parameters
}


def make_prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        instruction = " ".join(rng.choices(WORDS, k=rng.randint(6, 16)))
        text = " ".join(rng.choices(WORDS, k=rng.randint(4, 120)))
        prompts.append(build_prompt(instruction, text))
    return prompts


def build_model(folder: str, size: str, prompts: list[str], vocab: int) -> None:
    tokenizer = train_tokenizer(prompts * 2, vocab, 1024)
    tiny = dict(SIZES[size], vocab_size=vocab, max_position_embeddings=1024, seed=0)
    model = build_tiny_model(tiny, tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def bench_size(size: str, args) -> None:
    prompts = make_prompts(args.prompts, args.seed)
    with tempfile.TemporaryDirectory() as folder:
        build_model(folder, size, prompts, args.vocab)
        (model, tokenizer), hf_start = timed(load_for_inference, folder, folder, {})
        requests = [Request(tuple(encode_prompt(tokenizer, p)), args.max_new_tokens) for p in prompts]
        lengths = [len(r.prompt_ids) for r in requests]
        print(
            f"\n== {size}: {model.num_parameters() / 1e6:.1f}M parameters, {next(model.parameters()).dtype}, "
            f"{torch.get_num_threads()} thread(s); {len(requests)} prompts of {min(lengths)}-{max(lengths)} tokens, "
            f"max_new_tokens {args.max_new_tokens}, greedy"
        )
        columns = {}
        hf = HFBackend(model, tokenizer, GenerationSettings(batch_size=args.batch_size))
        warm_up = [Request(r.prompt_ids, 2) for r in requests[:2]]
        hf.generate(warm_up)
        out, seconds = timed(hf.generate, requests)
        columns[f"hf batched ({args.batch_size}, sorted)"] = (hf_start, seconds, out)
        if args.batch_1:
            single = HFBackend(model, tokenizer, GenerationSettings(batch_size=1))
            out, seconds = timed(single.generate, requests)
            columns["hf batch-1"] = (hf_start, seconds, out)
        del model, hf
        vllm_note = ""
        try:
            context, eos = model_limits(folder, tokenizer, {})
            init = dict(model=folder, tokenizer=folder, dtype=resolve_dtype("auto"), max_model_len=context)
            threads = torch.get_num_threads()
            env = {"OMP_NUM_THREADS": str(threads), "VLLM_CPU_OMP_THREADS_BIND": f"0-{threads - 1}"}
            backend, vllm_start = timed(VLLMBackend, find_python(args.vllm_python), init, eos, context, env=env)
            backend.generate(warm_up)
            out, seconds = timed(backend.generate, requests)
            backend.close()
            columns["vllm"] = (vllm_start, seconds, out)
        except (VLLMUnavailable, RuntimeError) as error:
            vllm_note = f"vllm: not run ({error})"
        report(columns, args)
        if vllm_note:
            print(vllm_note)


def report(columns: dict, args) -> None:
    names = list(columns)
    reference = [c.token_ids for c in columns[names[0]][2]]
    print(f"{'':24}" + "".join(f"{name:>26}" for name in names))
    rows = {
        "start-up s": lambda s, t, o: f"{s:.1f}",
        "generation s": lambda s, t, o: f"{t:.2f}",
        "generated tokens": lambda s, t, o: f"{sum(c.generated_tokens for c in o)}",
        "tokens/s": lambda s, t, o: f"{sum(c.generated_tokens for c in o) / t:.1f}",
        "same as first column": lambda s, t, o: f"{sum(c.token_ids == r for c, r in zip(o, reference))}/{len(o)}",
    }
    for label, cell in rows.items():
        print(f"{label:24}" + "".join(f"{cell(*columns[name]):>26}" for name in names))
    if "vllm" in columns:
        rate = {name: sum(c.generated_tokens for c in o) / t for name, (s, t, o) in columns.items()}
        print(f"vllm/hf throughput: x{rate['vllm'] / rate[names[0]]:.2f} (generation only)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="tiny,large", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="hf batch (vLLM batches continuously)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of each backend")
    parser.add_argument("--batch-1", action="store_true", help="also time HF one prompt at a time")
    parser.add_argument("--vllm-python", default=None, help="python of the vLLM environment (default: .venv-vllm)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for size in args.sizes.split(","):
        bench_size(size, args)


if __name__ == "__main__":
    main()

"""Generation throughput: batched, length-sorted, left-padded generation vs batch-1, same prompts and model.

    .venv/bin/python benchmarks/generation.py                 # the demo's tiny LLaMA on CPU
    .venv/bin/python benchmarks/generation.py --layers 8 --hidden 512 --prompts 256 --batch-size 64
    .venv/bin/python benchmarks/generation.py --model results/runs/base/model

Prints tokens/s of both ways side by side and checks that greedy outputs are identical.
On a machine with CUDA the model runs on the GPU (bf16 where supported).
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from inscl.core.prompts import build_prompt, encode_prompt
from inscl.evaluation.generate import GenerationSettings, generate_ids
from inscl.training.base_model import build_tiny_model, train_tokenizer
from inscl.training.models import inference_dtype, load_for_inference, pick_device

WORDS = (
    "the model reads a short review and decides whether it is positive negative or neutral about the film "
    "plot acting music numbers add subtract reverse letters sort words topic sports politics science"
).split()


def make_prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        instruction = " ".join(rng.choices(WORDS, k=rng.randint(6, 16)))
        text = " ".join(rng.choices(WORDS, k=rng.randint(4, 80)))
        prompts.append(build_prompt(instruction, text))
    return prompts


def build_model(args, prompts):
    device = pick_device(args.device)
    if args.model:
        return load_for_inference(args.model, args.model, {"trust_remote_code": False}, device=str(device))
    tokenizer = train_tokenizer(prompts * 2, args.vocab, 1024)
    tiny = dict(
        layers=args.layers,
        hidden_size=args.hidden,
        heads=max(1, args.hidden // 32),
        intermediate_size=2 * args.hidden,
        max_position_embeddings=1024,
        seed=0,
    )
    model = build_tiny_model(tiny, tokenizer).to(device=device, dtype=inference_dtype(device)).eval()
    tokenizer.padding_side = "left"
    return model, tokenizer


def timed(model, tokenizer, ids, settings):
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = generate_ids(model, tokenizer, ids, settings, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def padding_share(lengths: list[int], batch_size: int, sort: bool) -> float:
    order = sorted(lengths, reverse=True) if sort else lengths
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    padded = sum(max(b) * len(b) for b in batches)
    return 1 - sum(lengths) / padded


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a save_pretrained model folder (default: build a tiny LLaMA)")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    prompts = make_prompts(args.prompts, args.seed)
    model, tokenizer = build_model(args, prompts)
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    lengths = [len(i) for i in ids]
    device = next(model.parameters()).device
    print(
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'})"
        f", dtype {next(model.parameters()).dtype}, {model.num_parameters() / 1e6:.2f}M parameters"
    )
    print(
        f"{len(ids)} prompts, {min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}), "
        f"max_new_tokens {args.max_new_tokens}, greedy, KV cache"
    )

    warmup = GenerationSettings(max_new_tokens=4, batch_size=args.batch_size)
    generate_ids(model, tokenizer, ids[: args.batch_size], warmup, progress=False)

    batched, t_batched = timed(model, tokenizer, ids, GenerationSettings(args.max_new_tokens, args.batch_size))
    single, t_single = timed(model, tokenizer, ids, GenerationSettings(args.max_new_tokens, 1))
    n_tokens = sum(len(t) for t in batched)
    print(f"{'':32}{'batch-1':>12}{f'batched ({args.batch_size}, sorted)':>26}")
    print(f"{'seconds':32}{t_single:12.2f}{t_batched:26.2f}")
    print(f"{'generated tokens':32}{sum(len(t) for t in single):12d}{n_tokens:26d}")
    print(f"{'tokens/s':32}{sum(len(t) for t in single) / t_single:12.1f}{n_tokens / t_batched:26.1f}")
    print(f"speed-up x{t_single / t_batched:.2f}; identical greedy outputs: {batched == single}")
    print(
        f"prompt padding share at batch {args.batch_size}: length-sorted {padding_share(lengths, args.batch_size, True):.1%}"
        f", unsorted {padding_share(lengths, args.batch_size, False):.1%}"
    )


if __name__ == "__main__":
    main()

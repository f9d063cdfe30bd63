"""The cost of evaluating a continual-learning run: prompt and output tokens per task x stages x methods, turned
into GPU-hours for the hf backend (static batches) and the vllm backend (continuous batching).

    .venv/bin/python benchmarks/evaluation_cost.py                                   # configs/trace.yaml
    .venv/bin/python benchmarks/evaluation_cost.py --config configs/trace.yaml --tasks seen --max-prompt-tokens 1024
    .venv/bin/python benchmarks/evaluation_cost.py --throughput gpu.json             # measured numbers

Which (run, task) test sets are scored follows the workflow exactly (inscl.evaluation.shards over the config's
orders, methods and references). Token counts per example come from TASK_TOKENS: for TRACE, estimates from the
one real example per dataset in shared/data/trace/examples (characters / chars-per-token of Llama-2's
tokenizer) and, for NumGLUE and 20Minuten, which that file lacks, from the datasets' typical lengths; with
--instances (and --tokenizer) the real test sets are counted instead.

The throughput constants (THROUGHPUT) are ESTIMATES for one H100/H200 and Llama-2-7B in bf16, until
benchmarks/gpu has measured them on a GPU (pass its numbers with --throughput FILE.json, same keys):
- hf: a batch of B prompts is prefilled (padded to its longest prompt) and then decoded step by step until its
  longest answer ends: time = prefill tokens / hf_prefill_tokens_per_s + steps x hf_decode_step_s.
- vllm: time = prompt tokens / vllm_prefill_tokens_per_s + output tokens / vllm_decode_tokens_per_s.
- every job also loads the model: job_startup_s (hf) or vllm_startup_s, once per evaluate job.
Two output scenarios: answers as long as the references (the model stops with EOS), and every answer running
to max_new_tokens (the worst case: one number for all tasks, or per task with max_new_tokens: auto).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import yaml

from inscl.core import runs
from inscl.core.config import validate_config
from inscl.core.methods import METHODS
from inscl.evaluation.lengths import auto_length
from inscl.evaluation.shards import evaluated_tasks

REPO = Path(__file__).resolve().parents[1]
TRACE_TEST_EXAMPLES = 2000  # per dataset (TRACE paper; the repo only names LLM-CL-Benchmark_5000)
# task -> (mean prompt tokens, mean answer tokens, p99 answer tokens), Llama-2 tokenizer, ESTIMATES:
# chars of the real example in shared/data/trace/examples/dataset_examples.txt / chars per token
# (English ~4, code ~3.2, German ~3.3, Chinese ~1.2); NumGLUE and 20Minuten are not in that file.
TASK_TOKENS = {
    "C-STANCE": (150, 2, 3),  # 181 Chinese chars; answer one letter/word
    "FOMC": (75, 2, 3),  # 296 chars; answer "hawkish"/a letter
    "MeetingBank": (720, 200, 420),  # 2,872-char transcript, 815-char summary
    "Py150": (2000, 16, 40),  # 6,440 chars of code, 51-char next line
    "ScienceQA": (290, 60, 380),  # 1,142 chars; "A\nBecause ..." (1,527 chars in the example; most are short)
    "NumGLUE-cm": (80, 2, 4),  # a short word problem, a number
    "NumGLUE-ds": (100, 2, 5),
    "20Minuten": (450, 120, 250),  # a German news paragraph and its simplification
}
THROUGHPUT = {  # ESTIMATES, see the module docstring
    "hf_batch_size": 16,
    "hf_prefill_tokens_per_s": 8000,
    "hf_decode_step_s": 0.030,
    "vllm_prefill_tokens_per_s": 20000,
    "vllm_decode_tokens_per_s": 2500,
    "job_startup_s": 60,
    "vllm_startup_s": 90,
}


def scored_pairs(config: dict, which: str) -> tuple[dict[str, int], int]:
    """{task: how many models score it} and the number of evaluate jobs, as the workflow builds them.
    Chains of the trained methods only: `icl` (one job per seed, 6-shot prompts) is not in the model."""
    orders, tasks = config["orders"], runs.experiment_tasks(config["orders"])
    models = [runs.BASE]
    for order, order_tasks in orders.items():
        for method in (m for m in config["methods"] if METHODS[m].trains):
            for seed in config["seeds"]:
                models += [runs.chain(order, method, seed, k) for k in range(1, len(order_tasks) + 1)]
    for seed in config["seeds"]:
        if "multitask" in config["references"]:
            models.append(runs.multitask(seed))
        if "single_task" in config["references"]:
            models += [runs.single_task(seed, task) for task in tasks]
    counts, jobs = dict.fromkeys(tasks, 0), 0
    for model in models:
        scored = evaluated_tasks(model, orders, tasks, which)
        jobs += bool(scored)
        for task in scored:
            counts[task] += 1
    return counts, jobs


def real_task_tokens(instances_file, tokenizer_name, tasks) -> dict:
    import numpy as np
    import pandas as pd
    from transformers import AutoTokenizer

    from inscl.core.prompts import build_prompt

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_name, local_files_only=True)
    instances = pd.read_parquet(instances_file)
    found = {}
    for task in tasks:
        test = instances[(instances["task"] == task) & (instances["split"] == "test")]
        prompts = [build_prompt(i, x, "raw") for i, x in zip(test["instruction"], test["input"])]
        answers = [refs[0] for refs in test["output"]]
        p = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
        a = [len(ids) for ids in tokenizer(answers, add_special_tokens=False)["input_ids"]]
        found[task] = (float(np.mean(p)), float(np.mean(a)), float(np.percentile(a, 99)))
    return found


def hf_hours(n: int, prompt: float, output: float, t: dict) -> float:
    batches = math.ceil(n / t["hf_batch_size"])
    prefill = batches * t["hf_batch_size"] * prompt / t["hf_prefill_tokens_per_s"]
    return (prefill + batches * output * t["hf_decode_step_s"]) / 3600


def vllm_hours(n: int, prompt: float, output: float, t: dict) -> float:
    return (n * prompt / t["vllm_prefill_tokens_per_s"] + n * output / t["vllm_decode_tokens_per_s"]) / 3600


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "trace.yaml"))
    parser.add_argument("--tasks", choices=["config", "all", "seen"], default="config", help="evaluation.tasks")
    parser.add_argument("--test-examples", type=int, default=None, help="per task (default: the config's cap or 2000)")
    parser.add_argument("--max-prompt-tokens", type=int, default=None, help="default: the config's (TRACE: 1024)")
    parser.add_argument("--throughput", help="JSON with THROUGHPUT's keys (from benchmarks/gpu)")
    parser.add_argument("--instances", help="instances.parquet of the real data, to count tokens instead of estimating")
    parser.add_argument("--tokenizer", default="meta-llama/Llama-2-7b-chat-hf")
    args = parser.parse_args()

    config = validate_config(yaml.safe_load(Path(args.config).read_text()), source=args.config)
    evaluation = config["evaluation"]
    which = evaluation["tasks"] if args.tasks == "config" else args.tasks
    counts, jobs = scored_pairs(config, which)
    n = args.test_examples or evaluation["max_test_per_task"] or TRACE_TEST_EXAMPLES
    max_prompt = args.max_prompt_tokens or evaluation["max_prompt_tokens"]
    tokens = real_task_tokens(args.instances, args.tokenizer, counts) if args.instances else TASK_TOKENS
    throughput = {**THROUGHPUT, **(json.loads(Path(args.throughput).read_text()) if args.throughput else {})}
    measured = "measured" if args.throughput else "ESTIMATE (benchmarks/gpu has not run on a GPU)"
    fixed = evaluation["max_new_tokens"]
    auto = evaluation["auto_length"]

    print(f"{args.config}: evaluation.tasks {which}; {sum(counts.values())} (model, task) test sets of {n} examples")
    print(f"in {jobs} evaluate jobs; prompts capped at {max_prompt or 'the context'} tokens; throughput: {measured}")
    if "icl" in config["methods"]:
        print("not counted: the icl jobs (one per seed, every task's test set with demonstrations)")
    header = f"{'task':12}{'models':>7}{'prompt':>8}{'answer':>8}{'cap':>6}{'cap auto':>9}"
    header += f"{'Mtok in':>9}{'Mtok out':>9}{'hf h':>8}{'vllm h':>8}{'hf h@cap':>10}{'vllm h@cap':>11}{'@auto hf':>10}{'@auto vllm':>11}"
    print(header)
    total = dict.fromkeys(["in", "out", "hf", "vllm", "hf_cap", "vllm_cap", "hf_auto", "vllm_auto"], 0.0)
    for task, models in counts.items():
        if not models:
            continue
        prompt, answer, p99 = tokens.get(task, (500, 100, 300))
        prompt = min(prompt, max_prompt) if max_prompt else prompt
        cap = (
            fixed
            if isinstance(fixed, int)
            else auto_length([p99], 100, auto["margin"], auto["extra_tokens"], auto["max_answer_tokens"])
        )
        cap_auto = auto_length([p99], 100, auto["margin"], auto["extra_tokens"], auto["max_answer_tokens"])
        examples = models * n
        # a static batch decodes until its longest answer: about the task's p99 at batch 16
        row = {
            "in": examples * prompt / 1e6,
            "out": examples * answer / 1e6,
            "hf": models * hf_hours(n, prompt, min(p99, cap), throughput),
            "vllm": models * vllm_hours(n, prompt, answer, throughput),
            "hf_cap": models * hf_hours(n, prompt, cap, throughput),
            "vllm_cap": models * vllm_hours(n, prompt, cap, throughput),
            "hf_auto": models * hf_hours(n, prompt, cap_auto, throughput),
            "vllm_auto": models * vllm_hours(n, prompt, cap_auto, throughput),
        }
        for key, value in row.items():
            total[key] += value
        print(
            f"{task:12}{models:7d}{prompt:8.0f}{answer:8.0f}{cap:6d}{cap_auto:9d}{row['in']:9.1f}{row['out']:9.2f}"
            f"{row['hf']:8.1f}{row['vllm']:8.1f}{row['hf_cap']:10.1f}{row['vllm_cap']:11.1f}{row['hf_auto']:10.1f}{row['vllm_auto']:11.1f}"
        )
    startup_hf, startup_vllm = jobs * throughput["job_startup_s"] / 3600, jobs * throughput["vllm_startup_s"] / 3600
    print(
        f"{'total':12}{'':7}{'':8}{'':8}{'':6}{'':9}{total['in']:9.1f}{total['out']:9.2f}{total['hf']:8.1f}{total['vllm']:8.1f}"
        f"{total['hf_cap']:10.1f}{total['vllm_cap']:11.1f}{total['hf_auto']:10.1f}{total['vllm_auto']:11.1f}"
    )
    print(f"+ model loading: {startup_hf:.1f} h (hf), {startup_vllm:.1f} h (vllm) over {jobs} jobs")
    print(
        f"GPU-hours, answers of reference length: hf {total['hf'] + startup_hf:.1f}, vllm {total['vllm'] + startup_vllm:.1f}; "
        f"every answer to the cap: hf {total['hf_cap'] + startup_hf:.1f}, vllm {total['vllm_cap'] + startup_vllm:.1f}; "
        f"to the per-task auto cap: hf {total['hf_auto'] + startup_hf:.1f}, vllm {total['vllm_auto'] + startup_vllm:.1f}"
    )


if __name__ == "__main__":
    main()

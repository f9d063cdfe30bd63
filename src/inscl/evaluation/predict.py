"""One predict job: test rows -> prompts -> requests -> completions, saved in chunks as they finish, so a
killed job resumes where it stopped -> the predictions artifact.

Chunks: the job's requests, in row order, are cut into `chunk_size` pieces. Each finished piece is
written atomically to `<output>.chunks/chunk-<i>.parquet` beside the output, under a fingerprint of
everything that shapes the answers (prompt ids, lengths, stop strings, backend and dtype, sampling,
chunk size, the model folders' file names, sizes and times). A rerun with the same fingerprint loads
the finished chunks and generates only the rest; another fingerprint starts over. The folder is
deleted once the output is written.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from inscl.core import artifacts
from inscl.core.hashing import content_hash, stable_seed
from inscl.core.io import InputError, atomic_path
from inscl.core.prompts import build_prompt, encode_prompt
from inscl.evaluation.backends import Completion, Request
from inscl.evaluation.lengths import cut_at_stop, fit_to_context, max_new_tokens_per_task, prompt_room, stop_strings
from inscl.evaluation.shards import parse_shard

log = logging.getLogger(__name__)

INSTANCE_COLUMNS = ("task", "split", "instance_id", "instruction", "input", "output")
FINGERPRINT = "fingerprint.json"


def select_test_rows(
    instances: pd.DataFrame, tasks: list[str], max_per_task: int | None, source="instances.parquet"
) -> pd.DataFrame:
    """The test rows of `tasks`, at most `max_per_task` each, chosen by a hash of the instance id.

    The choice depends only on the ids, so it is the same for every model and run, and adding
    examples to a task changes the selection as little as possible.
    """
    missing = [c for c in INSTANCE_COLUMNS if c not in instances.columns]
    if missing:
        raise InputError(source, f"missing column(s) {', '.join(missing)}", field=missing[0])
    chosen = []
    for task in tasks:
        rows = instances[(instances["task"] == task) & (instances["split"] == "test")]
        if rows.empty:
            raise InputError(source, "task has no test examples", record=task, field="split")
        if max_per_task is not None and len(rows) > max_per_task:
            keys = rows["instance_id"].astype(str).map(lambda i: content_hash(f"{task}\x1f{i}"))
            rows = rows.loc[keys.sort_values(kind="stable").index[:max_per_task]].sort_index()
        chosen.append(rows)
    if not chosen:
        return instances.iloc[0:0]
    return pd.concat(chosen)


def shard_rows(rows: pd.DataFrame, shard: str, shard_examples: int) -> pd.DataFrame:
    """The rows of one shard (see inscl.evaluation.shards): a task, or one slice of a task's rows."""
    task, part = parse_shard(shard)
    rows = rows[rows["task"] == task]
    return rows if part is None else rows.iloc[part * shard_examples : (part + 1) * shard_examples]


def build_requests(
    rows: pd.DataFrame,
    instances: pd.DataFrame,
    tokenizer,
    evaluation: dict,
    template: str,
    context: int | None,
    prompts: list[str] | None = None,
) -> tuple[list[str], list[Request], list[int]]:
    """(prompt texts, requests, tokens cut from each prompt) for `rows` (see inscl.evaluation.lengths);
    `prompts` replaces the template's prompts (the icl method builds its own)."""
    tasks = list(dict.fromkeys(rows["task"]))
    lengths = max_new_tokens_per_task(instances, tasks, tokenizer, evaluation)
    for task in tasks:
        log.info("%s: max_new_tokens %d, stop %s", task, lengths[task], list(stop_strings(task, evaluation)) or "-")
    if prompts is None:
        prompts = [build_prompt(i, x, template, tokenizer) for i, x in zip(rows["instruction"], rows["input"])]
    bos = tokenizer.bos_token_id
    requests, truncated = [], []
    for task, prompt in zip(rows["task"], prompts):
        ids = encode_prompt(tokenizer, prompt)
        fitted = fit_to_context(ids, prompt_room(context, lengths[task], evaluation.get("max_prompt_tokens")), bos)
        requests.append(Request(tuple(fitted), lengths[task], stop_strings(task, evaluation)))
        truncated.append(len(ids) - len(fitted))
    if any(truncated):
        log.info("%d of %d prompts truncated from the left", sum(1 for t in truncated if t), len(truncated))
    return prompts, requests, truncated


def folder_signature(folder) -> list:
    """Name, size and modification time of each file of a folder (cheap, and changes when it is rebuilt)."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    return [[str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


class ChunkStore:
    """Finished chunks of one job, valid for one fingerprint."""

    def __init__(self, folder, fingerprint: str):
        self.folder, self.fingerprint = Path(folder), fingerprint
        stamp = self.folder / FINGERPRINT
        if self.folder.exists() and (not stamp.exists() or json.loads(stamp.read_text()) != fingerprint):
            log.info("%s: saved chunks are for other settings or another model, starting over", self.folder)
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(stamp) as tmp:
            tmp.write_text(json.dumps(fingerprint))

    def path(self, index: int) -> Path:
        return self.folder / f"chunk-{index:06d}.parquet"

    def finished(self) -> dict[int, pd.DataFrame]:
        return {
            int(p.stem.split("-")[1]): artifacts.read(p, "predictions")
            for p in sorted(self.folder.glob("chunk-*.parquet"))
        }

    def save(self, index: int, frame: pd.DataFrame) -> None:
        artifacts.write(frame, "predictions", self.path(index))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def answer(completion: Completion, request: Request, tokenizer) -> tuple[str, str]:
    """(answer text, finish reason) of a completion: decoded, cut before the first stop string."""
    if completion.token_ids is not None:
        text = tokenizer.decode(completion.token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    else:
        text = completion.text or ""
    text, stopped = cut_at_stop(text, request.stop)
    return text, "stop" if stopped else "eos" if completion.eos else "length"


def fingerprint(backend, requests: list[Request], chunk_size: int, seed: int, evaluation: dict, folders) -> str:
    key = {
        "backend": backend.name,
        "dtype": getattr(backend, "init", {}).get("dtype"),
        "sampling": [evaluation.get(k) for k in ("do_sample", "temperature", "top_p")],
        "seed": seed,
        "chunk_size": chunk_size,
        "requests": content_hash(
            json.dumps([[list(r.prompt_ids), r.max_new_tokens, list(r.stop), r.adapter] for r in requests])
        ),
        "models": [folder_signature(folder) for folder in folders],
    }
    return content_hash(json.dumps(key, sort_keys=True, default=str), length=32)


def predict(
    rows: pd.DataFrame,
    instances: pd.DataFrame,
    backend,
    tokenizer,
    evaluation: dict,
    output,
    template: str = "alpaca",
    seed: int = 0,
    model_folders=(),
    progress: bool = True,
    label: str = "predict",
    prompts: list[str] | None = None,
) -> tuple[pd.DataFrame, int]:
    """Answer `rows` with `backend`, resuming from `<output>.chunks/`; write the predictions artifact to
    `output`. Returns (predictions, examples generated by this call)."""
    prompts, requests, truncated = build_requests(
        rows, instances, tokenizer, evaluation, template, backend.context, prompts
    )
    chunk_size = int(evaluation.get("chunk_size", 512))
    store = ChunkStore(
        Path(output).with_suffix(".chunks"), fingerprint(backend, requests, chunk_size, seed, evaluation, model_folders)
    )
    finished = store.finished()
    starts = list(range(0, len(requests), chunk_size))
    todo = [n for n in range(len(starts)) if n not in finished]
    done_examples = sum(len(frame) for frame in finished.values())
    if finished:
        log.info("resuming: %d of %d examples in %d saved chunks", done_examples, len(requests), len(finished))
    generated = 0
    with tqdm(total=len(requests), initial=done_examples, desc=label, unit="example", disable=not progress) as bar:
        for number in todo:
            span = slice(starts[number], starts[number] + chunk_size)
            chunk_requests = requests[span]
            completions = backend.generate(chunk_requests, seed=stable_seed(seed, "chunk", number), on_done=bar.update)
            answers = [answer(c, r, tokenizer) for c, r in zip(completions, chunk_requests)]
            part = rows.iloc[span]
            frame = pd.DataFrame(
                {
                    "task": part["task"].astype(str).to_list(),
                    "instance_id": part["instance_id"].astype(str).to_list(),
                    "prompt": prompts[span],
                    "prediction": [text for text, _ in answers],
                    "references": [[str(r) for r in refs] for refs in part["output"]],
                    "prompt_tokens": [len(r.prompt_ids) for r in chunk_requests],
                    "truncated_tokens": truncated[span],
                    "max_new_tokens": [r.max_new_tokens for r in chunk_requests],
                    "generated_tokens": [c.generated_tokens for c in completions],
                    "finish": [finish for _, finish in answers],
                }
            )
            store.save(number, frame)
            finished[number] = frame
            generated += len(chunk_requests)
    frames = [finished[n] for n in range(len(starts))]
    predictions = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=artifacts.columns("predictions"))
    )
    log.info(
        "%d predictions (%d generated now), %d tokens generated, finish: %s",
        len(predictions),
        generated,
        int(predictions["generated_tokens"].sum()) if len(predictions) else 0,
        predictions["finish"].value_counts().to_dict() if len(predictions) else {},
    )
    artifacts.write(predictions, "predictions", output)
    store.remove()
    return predictions, generated

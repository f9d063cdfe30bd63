"""The settings each rule reads, declared once, split into what changes its outputs and what only
changes how its job runs.

- ``settings(config, rule)``: the config keys of ``STAGE_SETTINGS[rule]`` that change outputs, as a
  nested dict with sorted keys. Rules pass it as ``params.settings``; Snakemake compares the repr
  of params, so a reordered config reruns nothing.
- ``resources(config, rule)``: the keys that the config schema marks ``x-runtime: true`` (threads,
  memory, time limits, GPU counts, batch sizes that do not change results, devices, concurrency,
  retry timing, checkpoint cadence, the cache folder). They reach the job as Snakemake resources,
  which never trigger a rerun and which a profile's ``set-resources`` can override.
- ``job_settings(smk)``: in a job, the two merged back into one dict shaped like the config.

Stdlib + PyYAML only: the Snakefile imports this at start-up.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Callable

import yaml

SCHEMA = Path(__file__).with_name("config.schema.yaml")
# Standard Snakemake resources: config key -> resource name.
STANDARD_RESOURCES = {"mem_mb": "mem_mb", "runtime": "runtime", "gpus": "gpu"}


def _tag_keys(config: dict) -> list[str]:
    backend = config["tagging"]["backend"]
    keys = ["tagging.backend", "tagging.prompt_version", f"tagging.{backend}", "cache_dir"]
    return keys + (["embedding"] if backend == "offline" else [])


def _insinfo_keys(config: dict) -> list[str]:
    return ["insinfo"] + (["orders"] if config["insinfo"]["pool"] == "cumulative" else [])


def _train_keys(config: dict) -> list[str]:
    training = config["training"]
    keys = [f"training.{key}" for key in training if key not in ("epochs", "lora")]
    if training["mode"] == "lora":
        keys.append("training.lora")
    return keys + ["model.trust_remote_code"]


def _rationale_keys(config: dict) -> list[str]:
    backend = config["rcl"]["backend"]
    keys = ["rcl.backend", "rcl.allow_missing"]
    return keys + (["rcl.prompt_version", "rcl.openai", "cache_dir"] if backend == "openai" else [])


def _icl_keys(config: dict) -> list[str]:
    """What shapes the icl job's answers: not which tasks other runs score or how they are sharded."""
    skipped = ("tasks", "shard_by", "shard_examples")
    keys = [f"evaluation.{key}" for key in config["evaluation"] if key not in skipped]
    return ["icl", "training.template", "model.trust_remote_code"] + keys


def _forgetting_keys(config: dict) -> list[str]:
    keys = ["forgetting.threshold", "forgetting.classifier", "evaluation.metrics", "evaluation.normalize_exact_match"]
    if config["forgetting"]["classifier"] == "openai":
        keys += ["forgetting.prompt_version", "forgetting.openai", "cache_dir"]
    return keys


# rule -> config keys (dotted) it reads, or a function of the config giving them.
# `resources_from` names the section whose threads / mem_mb / runtime / gpus size the job.
STAGE_SETTINGS: dict[str, list[str] | Callable[[dict], list[str]]] = {
    "ingest": ["data"],
    "embed_instructions": ["embedding", "cache_dir"],
    "embed_examples": ["embedding", "cache_dir"],
    "tag": _tag_keys,
    "normalize_tags": ["normalize", "embedding", "cache_dir"],
    "insinfo": _insinfo_keys,
    "distances": ["distance"],
    "select_replay": [],  # the method's own settings come from the method registry
    "base_model": ["model"],
    "train": _train_keys,
    "evaluate": ["evaluation", "training.template", "model.trust_remote_code"],
    "metrics": ["references", "evaluation.tasks"],
    "judge": [  # its own answer length; sampling as the evaluation's
        "judge",
        "evaluation.do_sample",
        "evaluation.temperature",
        "evaluation.top_p",
        "training.template",
        "model.trust_remote_code",
        "cache_dir",
    ],
    "general_ability": ["general", "model.trust_remote_code"],
    "report": [],
    "general_data": ["replay.general.path", "replay.general.name"],
    "rationales": _rationale_keys,
    "icl": _icl_keys,
    "forgetting": _forgetting_keys,
}
# `use rule train as ...` copies read what train reads; predict_shard reads what evaluate reads.
ALIASES = {
    "train_multitask": "train",
    "train_single_task": "train",
    "train_with_state": "train",
    "predict_shard": "evaluate",
}
RESOURCE_SECTION = {  # base_model asks for none: it builds a tiny model or points at a local one
    "train": "training",
    "evaluate": "evaluation",
    "judge": "evaluation",
    "general_ability": "evaluation",
    "icl": "evaluation",
}


@lru_cache(maxsize=1)
def load_schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def _resolve(node: dict, root: dict) -> dict:
    ref = node.get("$ref")
    if ref is None:
        return node
    target = root
    for part in ref.lstrip("#/").split("/"):
        target = target[part]
    return {**_resolve(target, root), **{k: v for k, v in node.items() if k != "$ref"}}


@lru_cache(maxsize=1)
def runtime_keys() -> frozenset[str]:
    """Dotted config keys marked `x-runtime: true` in the schema."""
    root = load_schema()
    found: set[str] = set()

    def walk(node: dict, prefix: str) -> None:
        node = _resolve(node, root)
        if node.get("x-runtime"):
            found.add(prefix)
            return
        for key, sub in node.get("properties", {}).items():
            walk(sub, f"{prefix}.{key}" if prefix else key)

    walk(root, "")
    return frozenset(found)


def canonical(value):
    """`value` with every dict rebuilt in sorted key order, so its repr ignores key order."""
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [canonical(item) for item in value]
    return value


def lookup(config: dict, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def _place(tree: dict, key: str, value) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        tree = tree.setdefault(part, {})
    tree[parts[-1]] = value


def declared_keys(config: dict, rule: str) -> list[str]:
    keys = STAGE_SETTINGS[ALIASES.get(rule, rule)]
    return list(keys(config) if callable(keys) else keys)


def _split(config: dict, rule: str) -> tuple[dict, dict]:
    """(output-changing settings, runtime settings) of a rule, each as {dotted key: value}."""
    runtime = runtime_keys()
    outputs, jobs = {}, {}

    def visit(key: str, value) -> None:
        if key in runtime:
            jobs[key] = value
        elif isinstance(value, dict) and any(r.startswith(key + ".") for r in runtime):
            for sub, item in value.items():
                visit(f"{key}.{sub}", item)
        else:
            outputs[key] = value

    for key in declared_keys(config, rule):
        visit(key, lookup(config, key))
    section = RESOURCE_SECTION.get(ALIASES.get(rule, rule))
    if section:
        for key in ("threads", *STANDARD_RESOURCES):
            if key in config[section]:
                jobs[f"{section}.{key}"] = config[section][key]
    return outputs, jobs


def nested(values: dict) -> dict:
    """{dotted key: value} -> a dict nested like the config, keys sorted."""
    tree: dict = {}
    for key, value in values.items():
        _place(tree, key, value)
    return canonical(tree)


def settings(config: dict, rule: str) -> dict:
    """The output-changing settings of `rule`, nested like the config, keys sorted."""
    return nested(_split(config, rule)[0])


def resource_name(key: str) -> str:
    leaf = key.rsplit(".", 1)[-1]
    return STANDARD_RESOURCES.get(leaf, leaf)


def resources(config: dict, rule: str) -> dict:
    """Snakemake resources of `rule`: standard ones as numbers, the other runtime settings as JSON
    text (Snakemake rounds float resources to integers)."""
    found = {}
    for key, value in _split(config, rule)[1].items():
        name = resource_name(key)
        if name == "threads":
            continue
        if name in found:
            raise ValueError(f"rule {rule}: two runtime settings share the resource name {name!r}")
        found[name] = value if name in STANDARD_RESOURCES.values() else json.dumps(value)
    return found


def threads(config: dict, rule: str, default: int = 1) -> int:
    section = RESOURCE_SECTION.get(ALIASES.get(rule, rule))
    return int(config[section].get("threads", default)) if section else default


def job_settings(smk) -> dict:
    """In a job: the rule's settings (params) with its runtime settings (resources) merged back."""
    tree = json.loads(json.dumps(dict(smk.params.settings)))
    for key, _ in _split(smk.config, smk.rule)[1].items():
        name = resource_name(key)
        if name == "threads":
            value = smk.threads
        else:
            value = smk.resources.get(name)
            if name not in STANDARD_RESOURCES.values():
                value = json.loads(value)
        _place(tree, key, value)
    return tree

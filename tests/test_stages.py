"""inscl.core.stages: which settings change a rule's outputs (params) and which only change how
its job runs (resources), from one declaration per rule and the schema's x-runtime marks."""

import json
from types import SimpleNamespace

import pytest
import yaml

from inscl.core import stages
from inscl.core.config import load_config

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config():
    return load_config(ROOT / "config.yaml")


def test_settings_ignore_key_order(config):
    reordered = json.loads(json.dumps(config))
    reordered["training"] = dict(reversed(list(reordered["training"].items())))
    assert repr(stages.settings(config, "train")) == repr(stages.settings(reordered, "train"))


def test_runtime_keys_go_to_resources_not_settings(config):
    settings = stages.settings(config, "train")["training"]
    for key in ("threads", "mem_mb", "runtime", "gpus", "checkpoint_every", "fsdp", "gradient_checkpointing"):
        assert key not in settings
    assert settings["learning_rate"] == config["training"]["learning_rate"]
    resources = stages.resources(config, "train")
    assert resources["mem_mb"] == config["training"]["mem_mb"] and resources["gpu"] == config["training"]["gpus"]
    assert json.loads(resources["checkpoint_every"]) == config["training"]["checkpoint_every"]
    assert stages.threads(config, "train") == config["training"]["threads"]


def test_each_rule_reads_only_its_own_sections(config):
    assert set(stages.settings(config, "ingest")) == {"data"}
    assert set(stages.settings(config, "embed_instructions")) == {"embedding"}
    assert stages.settings(config, "embed_instructions")["embedding"] == {"model": config["embedding"]["model"]}
    assert "epochs" not in stages.settings(config, "train")["training"]  # per job, from the run
    assert "lora" not in stages.settings(config, "train")["training"]  # the demo trains fully
    offline = stages.settings(config, "tag")
    assert set(offline["tagging"]) == {"backend", "prompt_version", "offline"} and "embedding" in offline
    openai = {**config, "tagging": {**config["tagging"], "backend": "openai"}}
    tagging = stages.settings(openai, "tag")
    assert "embedding" not in tagging and "max_concurrency" not in tagging["tagging"]["openai"]
    assert (
        json.loads(stages.resources(openai, "tag")["max_concurrency"]) == config["tagging"]["openai"]["max_concurrency"]
    )
    judge = stages.settings(config, "judge")["evaluation"]  # the judge sets its own answer length
    assert set(judge) == {"do_sample", "temperature", "top_p"}


def test_float_and_string_runtime_settings_survive_the_round_trip(config):
    openai = {**config, "tagging": {**config["tagging"], "backend": "openai"}}
    resources = stages.resources(openai, "tag")
    job = SimpleNamespace(
        rule="tag",
        config=openai,
        params=SimpleNamespace(settings=stages.settings(openai, "tag")),
        resources=resources,
        threads=2,
    )
    merged = stages.job_settings(job)
    assert merged["tagging"]["openai"] == config["tagging"]["openai"]
    assert merged["cache_dir"] == config["cache_dir"]


def test_copies_of_the_train_rule_read_what_train_reads(config):
    assert stages.settings(config, "train_multitask") == stages.settings(config, "train")
    assert stages.resources(config, "train_single_task") == stages.resources(config, "train")


def test_every_runtime_mark_names_a_real_key(config):
    for key in stages.runtime_keys():
        stages.lookup(config, key)  # raises KeyError for a stale mark
    schema = yaml.safe_load(stages.SCHEMA.read_text())
    assert "x-runtime" not in schema["properties"]["training"]["properties"]["learning_rate"]


def test_nested_builds_the_config_shape_that_replay_settings_read():
    from inscl.replay.strategies import ReplaySettings

    settings = stages.nested({"replay.replay_per_task": 24, "insinfo.pool": "cumulative"})
    assert settings == {"insinfo": {"pool": "cumulative"}, "replay": {"replay_per_task": 24}}
    assert ReplaySettings.from_config(settings) == ReplaySettings(replay_per_task=24, insinfo_pool="cumulative")

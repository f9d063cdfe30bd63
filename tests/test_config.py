import copy
from pathlib import Path

import pytest
import yaml

from inscl.core.config import ConfigError, fill_defaults, load_config, load_schema, validate_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default_config():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def expect_error(config, fragment):
    with pytest.raises(ConfigError) as info:
        validate_config(config, source="cfg.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cfg.yaml: ")
    assert fragment in message, message
    return message


def test_default_config_is_valid_and_filled():
    config = load_config(ROOT / "config.yaml")
    assert config["seeds"] == [0, 1, 2]
    assert config["normalize"] == {"eps": 0.1, "min_samples": 5, "min_count": 1}
    assert config["distance"]["weights"] == "proportional"
    assert config["data"]["test_fraction"] == 0.2
    # a value set in config.yaml wins over the schema default
    assert config["training"]["mode"] == "full"
    assert config["training"]["lora"]["r"] == 8


def test_unknown_top_level_key(default_config):
    config = copy.deepcopy(default_config)
    config["trainig"] = {}
    message = expect_error(config, "unknown key 'trainig'")
    assert "training" in message


def test_unknown_nested_key_names_its_path(default_config):
    config = copy.deepcopy(default_config)
    config["replay"]["replay_per_tsk"] = 3
    expect_error(config, "unknown key 'replay_per_tsk' in 'replay'")


def test_wrong_type_names_key_and_expectation(default_config):
    config = copy.deepcopy(default_config)
    config["replay"]["replay_per_task"] = "many"
    expect_error(config, "key 'replay.replay_per_task': expected integer, got 'many'")


def test_enum_lists_choices(default_config):
    config = copy.deepcopy(default_config)
    config["tagging"]["backend"] = "gpt"
    expect_error(config, "expected one of ['offline', 'openai', 'file']")


def test_source_branch_rejects_keys_of_its_type(default_config):
    config = copy.deepcopy(default_config)
    config["data"]["sources"][0]["n_trian"] = 5
    expect_error(config, "unknown key 'n_trian' in 'data.sources.0'")


def test_superni_source_requires_groups(default_config):
    config = copy.deepcopy(default_config)
    config["data"]["sources"] = [{"name": "ni", "type": "superni", "path": "tasks"}]
    expect_error(config, "'groups' is a required property")


def test_defaults_filled_inside_matching_branch_only():
    schema = load_schema()
    config = {
        "data": {"sources": [{"name": "t", "type": "trace", "path": "x"}, {"name": "d", "type": "demo"}]},
        "orders": {"o": ["a", "b"]},
    }
    filled = fill_defaults(config, schema)
    trace, demo = filled["data"]["sources"]
    assert trace["instruction"] == {"rule": "first_paragraph", "pattern": None}
    assert "n_train" not in trace
    assert demo["n_train"] == 240 and "instruction" not in demo


def test_malformed_yaml_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("orders: [a\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: malformed YAML")
    assert "\n" not in str(info.value)


def test_conda_env_pins_match_requirements():
    requirements = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    env = yaml.safe_load((ROOT / "envs" / "inscl.yaml").read_text())
    pip = next(dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict))
    assert sorted(pip) == sorted(requirements)

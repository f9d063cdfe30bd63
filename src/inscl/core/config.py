"""Config loading: JSON-schema validation with one-line errors, and defaults filled from the schema."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml
from jsonschema.exceptions import best_match

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


class ConfigError(ValueError):
    """One line naming the config key and what was expected."""


def load_schema(path=SCHEMA_PATH) -> dict:
    return yaml.safe_load(Path(path).read_text())


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    node = root
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    merged = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return _resolve(merged, root)


def _if_matches(condition: dict, value: dict) -> bool:
    return jsonschema.Draft202012Validator(condition).is_valid(value)


def fill_defaults(value, schema: dict, root: dict | None = None):
    """Return `value` with every missing key that has a schema default filled in, recursively."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if isinstance(value, dict):
        value = dict(value)
        branches = [schema] + [
            sub["then"] for sub in schema.get("allOf", []) if "then" in sub and _if_matches(sub.get("if", {}), value)
        ]
        for branch in branches:
            for key, sub in branch.get("properties", {}).items():
                sub = _resolve(sub, root)
                if key not in value and "default" in sub:
                    value[key] = copy.deepcopy(sub["default"])
                if key in value:
                    value[key] = fill_defaults(value[key], sub, root)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            known = {k for b in branches for k in b.get("properties", {})}
            for key in value:
                if key not in known:
                    value[key] = fill_defaults(value[key], extra, root)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value = [fill_defaults(item, schema["items"], root) for item in value]
    return value


def _describe(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        where = f" in '{key}'" if error.absolute_path else ""
        return f"unknown key '{extra[0] if extra else '?'}'{where}; expected one of: {allowed}"
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"key '{key}': expected {expected}, got {error.instance!r}"
    if error.validator == "enum":
        return f"key '{key}': expected one of {error.validator_value}, got {error.instance!r}"
    if error.validator == "required":
        return f"key '{key}': {error.message}"
    return f"key '{key}': {error.message}"


def validate_config(config: dict, schema: dict | None = None, source: str = "config") -> dict:
    """Validate and return a copy with defaults filled; raise ConfigError with one line."""
    schema = schema or load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    error = best_match(validator.iter_errors(config))
    if error is not None:
        # Descend into if/then branches so the message names the innermost key.
        while error.context:
            error = best_match(error.context)
        raise ConfigError(f"{source}: {_describe(error)}")
    filled = fill_defaults(config, schema)
    error = best_match(validator.iter_errors(filled))
    if error is not None:
        raise ConfigError(f"{source}: {_describe(error)}")
    check_consistency(filled, source)
    return filled


def check_consistency(config: dict, source: str) -> None:
    """What the schema cannot say: method names come from the registry, and a per-task list of
    epochs covers every order."""
    from inscl.core.methods import METHODS

    for method in config.get("methods", []):
        if method not in METHODS:
            raise ConfigError(
                f"{source}: key 'methods': unknown method {method!r}; expected one of: {', '.join(METHODS)} "
                "or <replay>+<training> (docs/methods.md)"
            )
    check_trace_baselines(config, source)
    check_training_methods(config, source)
    epochs = config.get("training", {}).get("epochs")
    if isinstance(epochs, list):
        for name, tasks in config["orders"].items():
            if len(epochs) < len(tasks):
                raise ConfigError(
                    f"{source}: key 'training.epochs': {len(epochs)} values for order {name!r} of {len(tasks)} tasks"
                )


def check_trace_baselines(config: dict, source: str) -> None:
    """General-data methods need the file (named apart from the tasks); replay.general takes count or
    fraction, not both."""
    from inscl.core.methods import METHODS

    general = config.get("replay", {}).get("general", {})
    if general.get("count") is not None and general.get("fraction") is not None:
        raise ConfigError(f"{source}: key 'replay.general': give count or fraction, not both")
    tasks = {task for order in config.get("orders", {}).values() for task in order}
    if general.get("name") in tasks:
        raise ConfigError(f"{source}: key 'replay.general.name': {general['name']!r} is also an experiment task")
    for method in config.get("methods", []):
        spec = METHODS.get(method)
        if spec is None:
            continue
        if spec.general and not general.get("path"):
            raise ConfigError(f"{source}: key 'replay.general.path': method {method!r} needs a general-data file")


# Training-side methods (inscl.training.methods) and the training settings they cannot run with:
# (method, the settings' test, why). docs/methods.md has the table.
UNSUPPORTED = [
    (
        "ewc",
        lambda t: t["fsdp"],
        "its Fisher and anchor weights are not sharded like the weights; set training.fsdp: false",
    ),
    ("lwf", lambda t: t["fsdp"], "its teacher is a second, unsharded copy of the model; set training.fsdp: false"),
    (
        "agem",
        lambda t: t["fsdp"] or t["gpus"] > 1,
        "its reference gradient runs in one process; set training.gpus <= 1",
    ),
    ("olora", lambda t: t["fsdp"], "it trains LoRA adapters, which FSDP does not shard; set training.fsdp: false"),
    (
        "ewc",
        lambda t: t["mode"] == "lora" and t["lora"]["merge_after_stage"],
        "its Fisher is over the adapter, which lora.merge_after_stage replaces each stage",
    ),
    (
        "olora",
        lambda t: t["optimizer"]["state"] == "carry",
        "it trains a new adapter each stage, so there is no optimizer state to carry; set training.optimizer.state: reset",
    ),
]


def check_training_methods(config: dict, source: str) -> None:
    """A training-side method under settings it does not support is refused here, not mid-run."""
    from inscl.core.methods import METHODS

    training = config.get("training", {})
    for name in config.get("methods", []):
        hook = METHODS[name].training  # "inscl.training.methods.<module>:<Class>"
        module = hook.split(":")[0].rsplit(".", 1)[-1] if hook else None
        for method, unsupported, why in UNSUPPORTED:
            if module == method and unsupported(training):
                raise ConfigError(f"{source}: key 'methods': {name!r} does not run here: {why}")


def load_config(path) -> dict:
    text = Path(path).read_text()
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: malformed YAML: {str(e).splitlines()[0]}") from None
    return validate_config(config, source=str(path))

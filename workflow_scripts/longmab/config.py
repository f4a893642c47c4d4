"""Configuration: JSON-schema validation with defaults, and error messages that name the key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration problem; the message names every offending key."""


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


_DefaultFiller = _with_defaults(Draft202012Validator)


def load_schema(path: str | Path | None = None) -> dict:
    with open(path or SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _key_of(error) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        return ".".join(parts + [extra[0]]) if extra else ".".join(parts) or "<top>"
    if error.validator == "required":
        return ".".join(parts) or "<top>"
    return ".".join(parts) or "<top>"


def explain_errors(config: dict, schema: dict | None = None, prefix: str = "") -> list[str]:
    """Every schema violation of ``config`` as ``config key 'a.b': message`` (``[]`` when valid).

    Does not modify ``config`` (no defaults are filled). ``prefix`` is put before every key
    (``"runs.ablate."`` for a run's merged config).
    """
    schema = schema if schema is not None else load_schema()
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    lines = []
    for err in errors:
        key = _key_of(err)
        if err.validator == "additionalProperties":
            msg = f"unknown key (allowed: {', '.join(sorted(err.schema.get('properties', {})))})"
        else:
            msg = err.message
        lines.append(f"config key '{prefix}{key}': {msg}")
    return lines


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Validate ``config`` in place against the schema, filling defaults; return it.

    Raises
    ------
    ConfigError
        Listing each problem as ``config key 'a.b': message``.
    """
    schema = schema if schema is not None else load_schema()
    lines = explain_errors(config, schema)
    if lines:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    _DefaultFiller(schema).validate(config)
    # Cross-field checks the schema cannot express.
    if "trained" in config.get("eval", {}).get("models", []) and config["dpo"]["finetuning_type"] not in {"lora", "full", "freeze"}:
        raise ConfigError("config key 'dpo.finetuning_type': unsupported")
    return config


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it (defaults filled)."""
    with open(path, encoding="utf-8") as fh:
        config = yaml.safe_load(fh) or {}
    try:
        return validate_config(config)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def get(config: dict, dpath: str) -> Any:
    """``get(config, "rollout/top_k")`` — a slash path lookup with a clear KeyError."""
    node: Any = config
    for part in dpath.split("/"):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"config has no key '{dpath.replace('/', '.')}'")
        node = node[part]
    return node

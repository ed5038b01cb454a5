"""The config's JSON schema, applied with its defaults, and errors that name the key path.

The schema (``workflow/schemas/config.schema.yaml``) validates types, enums and
ranges and fills defaults; :func:`validate_schema` raises the shallowest error as
a :class:`ConfigError` whose message starts with the offending key path.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """An invalid configuration; the message starts with the offending key path."""


def validate_schema(config: dict) -> dict:
    """Validate against the JSON schema, filling defaults; errors name the key path.

    The first error (the shallowest key path) is raised as a :class:`ConfigError`
    whose message starts with that path (``transcription.batch_size: ...``) and says
    what would be valid (the allowed values, the known keys, the missing key).
    """
    import jsonschema

    schema = yaml.load(SCHEMA.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    cls = jsonschema.validators.validator_for(schema)
    validator = _with_defaults(cls)(schema)
    errors = sorted(validator.iter_errors(config),
                    key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path]))
    if errors:
        raise ConfigError(_schema_message(errors[0]))
    return config


def key_path(parts) -> str:
    """``['models', 'tiny.en', 'packages', 0, 'sha256']`` -> ``models.tiny.en.packages[0].sha256``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _schema_message(e) -> str:
    """One schema error as ``<key path>: <what is wrong>; <what would be valid>``."""
    parts = list(e.absolute_path)
    inst = e.instance
    if e.validator == "required" and isinstance(inst, dict):
        missing = [k for k in e.validator_value if k not in inst]
        why = f" for source {inst['source']!r}" if "then" in e.schema_path and "source" in inst else ""
        return f"{key_path([*parts, missing[0]])}: required key is missing{why}"
    if e.validator == "additionalProperties" and isinstance(inst, dict):
        known = list(e.schema.get("properties", {}))
        extra = [k for k in inst if k not in known]
        return f"{key_path([*parts, extra[0]])}: unknown key; valid keys: {', '.join(known)}"
    if "propertyNames" in e.schema_path:
        pattern = e.schema.get("pattern", "")
        return (f"{key_path([*parts, inst])}: invalid name {inst!r}; names are letters, digits, '.', '_', '-' "
                f"and start with a letter or digit ({pattern})")
    where = key_path(parts) or "(top level)"
    if e.validator == "enum":
        return f"{where}: {inst!r} is not valid; valid: {', '.join(map(repr, e.validator_value))}"
    if e.validator == "pattern" and "description" in e.schema:
        return f"{where}: {inst!r} is not valid; expected {e.schema['description']} ({e.validator_value})"
    if e.validator in ("oneOf", "anyOf") and e.context:
        alternatives = "; or ".join(dict.fromkeys(c.message for c in e.context))
        return f"{where}: {inst!r} is not valid: {alternatives}"
    return f"{where}: {e.message}"


def _with_defaults(cls):
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    import jsonschema

    return jsonschema.validators.extend(cls, {"properties": set_defaults})

"""The JSON Schema of the file, and the dump of a resolved configuration.

``sage-resilience config schema`` and ``config show``. The schema is
published at :data:`SCHEMA_URL`, its ``$id``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic.json_schema import models_json_schema

from sage_resilience._config.env import ENV_PREFIX
from sage_resilience._config.models import PolicyConfig, StorageConfig
from sage_resilience._redact import redact_mapping

if TYPE_CHECKING:
    from sage_resilience._config.models import ResilienceConfig

#: Where the schema is published: ``schema/resilience.schema.json`` of the
#: repository (a test keeps that file equal to :func:`config_schema`), for
#: ``# yaml-language-server: $schema=<this URL>`` at the top of a file.
SCHEMA_URL = (
    "https://github.com/sage-resilience/sage_resilience/raw/main/"
    "schema/resilience.schema.json"
)
_DOTTED_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$"


def schema_text() -> str:
    """:func:`config_schema` as published: indented JSON, one final newline.

    ``sage-resilience config schema`` prints it; the repository holds it as
    ``schema/resilience.schema.json``.
    """
    return json.dumps(config_schema(), indent=2) + "\n"


def _nullable(name: str) -> dict[str, Any]:
    return {"anyOf": [{"$ref": f"#/$defs/{name}"}, {"type": "null"}]}


def _model_defs() -> dict[str, Any]:
    """The models' schemas, with what pydantic cannot say patched in."""
    _, top = models_json_schema(
        [(PolicyConfig, "validation"), (StorageConfig, "validation")],
        ref_template="#/$defs/{model}",
    )
    defs: dict[str, Any] = top["$defs"]
    props = defs["PolicyConfig"]["properties"]
    for key in ("ignore_exceptions", "record_exceptions"):
        for option in props[key].get("anyOf", [props[key]]):
            if option.get("type") == "array":
                option["items"] = {
                    "type": "string",
                    "pattern": _DOTTED_PATTERN,
                }
    props["failure_statuses"]["items"] = {
        "anyOf": [
            {"type": "integer", "minimum": 100, "maximum": 599},
            {"enum": ["4xx", "5xx"]},
        ]
    }
    return defs


def config_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the YAML file.

    Generated from the models. Every layer (``defaults``, a policy, a
    platform's policy) is partial: each key is optional. Checks that relate
    two keys (``slow_call_rate`` needs ``slow_call_duration``, a storage
    backend needs its ``path``/``url``, ``recovery_backoff.max`` >=
    ``recovery_timeout``) are made when loading, after the merge.

    Returns:
        The schema, ready for ``json.dumps``.

    .. versionadded:: 0.1.0
    """
    defs = _model_defs()
    policies = {
        "type": "object",
        "description": "Policies by name.",
        "additionalProperties": _nullable("PolicyConfig"),
    }
    defs["PlatformConfig"] = {
        "type": "object",
        "title": "PlatformConfig",
        "description": "Overrides applied on one platform (linux, darwin, "
        "windows or a name of your own).",
        "additionalProperties": False,
        "properties": {
            "defaults": _nullable("PolicyConfig"),
            "policies": policies,
            "storage": _nullable("StorageConfig"),
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_URL,
        "title": "sage_resilience configuration",
        "description": "One resilience policy per dependency. Merge order, "
        "later wins: built-ins < defaults < policies.<name> < "
        "platforms.<p>.defaults < platforms.<p>.policies.<name> < env "
        f"{ENV_PREFIX}<POLICY>__<KEY>[__<SUBKEY>...].",
        "type": "object",
        "additionalProperties": False,
        "required": ["version"],
        "properties": {
            "version": {"const": 1, "description": "Format version."},
            "$schema": {
                "type": "string",
                "description": "Where an editor finds this schema; ignored "
                "by the loader.",
            },
            "storage": _nullable("StorageConfig"),
            "defaults": _nullable("PolicyConfig"),
            "policies": policies,
            "platforms": {
                "type": "object",
                "description": "Overrides by platform; macos/osx mean "
                "darwin, win32/win mean windows.",
                "additionalProperties": _nullable("PlatformConfig"),
            },
        },
        "$defs": defs,
    }


def dump_config(
    config: ResilienceConfig, fmt: Literal["yaml", "json"] = "yaml"
) -> str:
    """The resolved configuration as text, secrets redacted.

    Args:
        config: A loaded configuration.
        fmt: ``yaml`` or ``json``.

    Returns:
        ``version``, ``platform``, ``path``, ``storage`` and every resolved
        policy, with secret-looking ``settings`` and URL passwords
        replaced by ``***``.

    Raises:
        ValueError: An unknown *fmt*.

    .. versionadded:: 0.1.0
    """
    data = config.model_dump(mode="json")
    data["storage"] = redact_mapping(data["storage"])
    for policy in data["policies"].values():
        policy["settings"] = redact_mapping(policy["settings"])
    ordered = {
        key: data[key]
        for key in ("version", "platform", "path", "storage", "policies")
    }
    if fmt == "json":
        return json.dumps(ordered, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(
            ordered, sort_keys=False, allow_unicode=True, width=79
        )
    msg = f"fmt must be 'yaml' or 'json' (got {fmt!r})"
    raise ValueError(msg)

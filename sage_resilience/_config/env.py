"""Environment overrides: ``SAGE_RESILIENCE__<POLICY>__<KEY>[__<SUBKEY>...]``.

Each variable is one more layer of its policy, applied last. Keys are
matched to the model's fields case-insensitively; the value is read as
YAML; a problem names the variable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_origin

from sage_resilience._config.layers import _drop_below, _Layer, _Origin
from sage_resilience._config.models import PolicyConfig
from sage_resilience._config.safe_yaml import _EMPTY, _parse_yaml
from sage_resilience._config.wording import (
    _MISSING,
    _is_model,
    _Path,
    _strip_none,
    _unknown_key,
)
from sage_resilience.exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

#: Prefix of the per-policy override variables (two underscores).
ENV_PREFIX = "SAGE_RESILIENCE__"

_ENV_SHAPE = f"expected {ENV_PREFIX}<POLICY>__<KEY>[__<SUBKEY>...]"


@dataclass(frozen=True, slots=True)
class _EnvOverride:
    variable: str
    segments: tuple[str, ...]  # as written, after the policy
    raw: str


def _env_overrides(
    environ: Mapping[str, str], names: Iterable[str]
) -> tuple[dict[str, list[_EnvOverride]], list[ConfigError]]:
    """Group the override variables by the policy they name.

    Names are matched to *names* case-insensitively; a variable naming
    none of them is kept under its lower-cased policy name.
    """
    known = list(names)
    by_upper: dict[str, str] = {}
    for name in known:
        by_upper.setdefault(name.upper(), name)
    out: dict[str, list[_EnvOverride]] = {}
    errors: list[ConfigError] = []
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX):
            continue
        origin = _Origin("<env>", None, (), variable)
        parts = variable[len(ENV_PREFIX) :].split("__")
        if len(parts) < 2 or not all(parts):
            errors.append(origin.error((), _ENV_SHAPE))
            continue
        # A policy no file declares may be declared in code later: keep
        # its overrides under the lower-cased name until then.
        policy = by_upper.get(parts[0].upper(), parts[0].lower())
        out.setdefault(policy, []).append(
            _EnvOverride(variable, tuple(parts[1:]), environ[variable])
        )
    return out, errors


def _get(data: Any, path: _Path) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


def _parse_env_value(raw: str, origin: _Origin) -> Any:
    try:
        value, _, problems = _parse_yaml(raw, "<env>")
    except ConfigError as exc:
        problem = exc.problem.removeprefix("invalid YAML: ")
        raise origin.error(
            (), f"cannot read the value as YAML: {problem}"
        ) from exc
    if problems:
        raise origin.error((), problems[0].problem)
    return None if value is _EMPTY else value


def _env_path(
    override: _EnvOverride, name: str, data: dict[str, Any], base: Any
) -> _Path:
    """The config path an override variable names (keys matched by case).

    Model fields are matched case-insensitively; below a free mapping
    (``settings``) an existing key is matched the same way, and a new key
    is taken lower-cased.
    """
    path: _Path = ()
    annotation: Any = PolicyConfig
    free = False
    for segment in override.segments:
        origin = _Origin("<env>", None, ("policies", name), override.variable)
        below = _get(data, path)
        if below is _MISSING:
            below = _get(base, path)
        if not free:
            annotation = _strip_none(annotation)
            if not _is_model(annotation) or (
                below is not _MISSING
                and below is not None
                and not isinstance(below, dict)
            ):
                raise origin.error(
                    path,
                    f"not a mapping, so {segment.lower()!r} cannot be set "
                    "below it",
                )
            fields = {f.lower(): f for f in annotation.model_fields}
            key = fields.get(segment.lower())
            if key is None:
                raise origin.error(
                    (*path, segment.lower()),
                    _unknown_key(segment.lower(), annotation.model_fields),
                )
            path = (*path, key)
            annotation = annotation.model_fields[key].annotation
            free = get_origin(_strip_none(annotation)) is dict
            continue
        if below is not _MISSING and below is not None:
            if not isinstance(below, dict):
                raise origin.error(
                    path,
                    f"not a mapping, so {segment.lower()!r} cannot be set "
                    "below it",
                )
            existing = {str(k).lower(): k for k in below}
            path = (*path, existing.get(segment.lower(), segment.lower()))
        else:
            path = (*path, segment.lower())
    return path


def _env_layer(
    name: str,
    overrides: Iterable[_EnvOverride],
    base: dict[str, Any],
    errors: list[ConfigError],
) -> _Layer:
    layer = _Layer({}, {(): _Origin("<env>", None, ("policies", name))})
    for override in overrides:
        try:
            path = _env_path(override, name, layer.data, base)
            origin = _Origin(
                "<env>", None, ("policies", name, *path), override.variable
            )
            value = _parse_env_value(override.raw, origin)
        except ConfigError as exc:
            errors.append(exc)
            continue
        target = layer.data
        for part in path[:-1]:
            target = target.setdefault(str(part), {})
        target[str(path[-1])] = value
        _drop_below(layer.origins, path)
        layer.origins[path] = origin
    return layer

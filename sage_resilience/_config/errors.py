"""Pydantic errors -> :class:`~sage_resilience.exceptions.ConfigError`.

The models raise their own problems with :func:`_problem` (final wording);
:func:`_validate` validates one layer and turns every pydantic error into a
``ConfigError`` at the file, line and dotted key where the value was
written (:func:`_translate`). :func:`_first` gathers them into the one
raised: every problem once, file problems in file order, then environment
problems; the first is raised and carries them all (``problems``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from sage_resilience._config.layers import _lookup
from sage_resilience._config.wording import (
    _MISSING,
    _describe,
    _is_model,
    _Path,
    _strip_none,
    _type_at,
    _unknown_key,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from sage_resilience._config.layers import _Layer, _Origin
    from sage_resilience.exceptions import ConfigError


def _problem(problem: str, index: int | None = None) -> PydanticCustomError:
    # Our own validation errors carry the final, human wording; the loader
    # only adds the location (and the list index, which pydantic cannot
    # attach to an error raised by a field validator).
    context: dict[str, Any] = {"problem": problem}
    if index is not None:
        context["index"] = index
    return PydanticCustomError("sage_config", "{problem}", context)


def _point_at_field(model: Any, loc: _Path, message: str) -> tuple[_Path, str]:
    # A model-level check ("slow_call_rate needs slow_call_duration") is
    # reported at the field it names, so the line points at something the
    # operator wrote.
    head, _, rest = message.partition(" ")
    head_path = tuple(head.split("."))
    if rest and _type_at(model, head_path) is not _MISSING:
        return (*loc, *head_path), rest
    for word in re.findall(r"[A-Za-z_]\w*", message):
        if word in model.model_fields:
            return (*loc, word), message
    return loc, message


def _is_model_level(model: type[BaseModel], err: Mapping[str, Any]) -> bool:
    if err["type"] != "value_error":
        return False
    return _is_model(_strip_none(_type_at(model, tuple(err["loc"]))))


def _translate(
    model: type[BaseModel],
    err: Mapping[str, Any],
    origins: Mapping[_Path, _Origin],
) -> ConfigError:
    loc: _Path = tuple(err["loc"])
    kind = err["type"]
    ctx: Mapping[str, Any] = err.get("ctx") or {}
    if kind == "sage_config":
        problem = str(ctx["problem"])
        if "index" in ctx:
            loc = (*loc, int(ctx["index"]))
    elif kind == "extra_forbidden":
        parent = _strip_none(_type_at(model, loc[:-1]))
        valid = parent.model_fields if _is_model(parent) else ()
        problem = _unknown_key(str(loc[-1]), valid)
    elif kind == "value_error":
        message = str(ctx.get("error", err["msg"]))
        target = _strip_none(_type_at(model, loc))
        if _is_model(target):
            loc, message = _point_at_field(target, loc, message)
        problem = message
    else:
        annotation = _type_at(model, loc)
        problem = _describe(kind, ctx, err.get("input"), annotation)
    origin, rest = _lookup(origins, loc)
    return origin.error(rest, problem)


def _validate(
    model: type[BaseModel],
    layer: _Layer,
    errors: list[ConfigError],
    *,
    partial: bool = False,
) -> Any:
    """Validate *layer* as *model*; return it, or None and note errors.

    With *partial*, checks that need the whole merged model (one field
    against another) are left for later: a layer may rightly hold half.
    """
    try:
        return model.model_validate(layer.data)
    except ValidationError as exc:
        for err in exc.errors():
            if partial and _is_model_level(model, err):
                continue
            errors.append(_translate(model, err, layer.origins))
    return None


def _identity(error: ConfigError) -> tuple[object, ...]:
    return (error.path, error.line, error.key, error.problem)


def _in_order(errors: Iterable[ConfigError]) -> list[ConfigError]:
    """*errors* in file order (environment last), each problem once.

    A value is validated in its layer and again in every merge it reaches
    (a ``defaults:`` value in every policy): the same problem is reported
    once.
    """
    flat = [problem for error in errors for problem in error.problems]
    ordered = sorted(
        enumerate(flat),
        key=lambda item: (item[1].path == "<env>", item[1].line or 0, item[0]),
    )
    unique: dict[tuple[object, ...], ConfigError] = {}
    for _, problem in ordered:
        unique.setdefault(_identity(problem), problem)
    return list(unique.values())


def _first(errors: Iterable[ConfigError]) -> ConfigError:
    """The error to raise: the first problem, carrying every problem."""
    problems = _in_order(errors)
    first = problems[0]
    first.problems = problems
    return first

"""Small helpers shared by the models and the loader: types and wording.

How an annotation is walked (:func:`_type_at`), how a value is quoted in a
message (:func:`_show`, redacted), how a dotted key is spelled
(:func:`_dotted`) and how a pydantic error kind becomes a sentence
(:func:`_describe`). Nothing here knows a particular model.
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

from pydantic import BaseModel

from sage_resilience._redact import redact

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

_Path = tuple[str | int, ...]
_MISSING: Any = object()  # "no such key in the models"


def _union_args(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in {typing.Union, types.UnionType}:
        return get_args(annotation)
    return (annotation,)


def _strip_none(annotation: Any) -> Any:
    args = [a for a in _union_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 else annotation


def _number_kind(annotation: Any) -> str | None:
    bare = _strip_none(annotation)
    if bare is int:
        return "an integer"
    if bare is float:
        return "a number"
    return None


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _type_at(root: Any, loc: _Path) -> Any:
    """The annotation found by walking *loc* down from the model *root*."""
    current = root
    for part in loc:
        current = _strip_none(current)
        if _is_model(current):
            fields = current.model_fields
            if not isinstance(part, str) or part not in fields:
                return _MISSING
            current = fields[part].annotation
        elif get_origin(current) is tuple:
            current = get_args(current)[0]
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        elif current is not Any:
            return _MISSING
    return current


def _show(value: object) -> str:  # noqa: PLR0911 - one return per YAML spelling
    """A value as an error message quotes it (YAML spelling, redacted)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = redact(value, limit=120)
        if len(text) > 60:
            text = text[:57] + "..."
        return repr(text)
    if isinstance(value, int) and value.bit_length() > 64:
        # Thousands of digits would drown the message (and Python refuses
        # to print more than 4300).
        try:
            digits = len(str(abs(value)))
        except ValueError:  # over Python's 4300-digit limit
            digits = int(value.bit_length() * math.log10(2)) + 1
        return f"a number of about {digits} digits"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _dotted(path: _Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _unknown_key(key: str, valid: Iterable[str]) -> str:
    choices = sorted(valid)
    lowered = {c.lower(): c for c in choices}
    close = (
        [lowered[key.lower()]]
        if key.lower() in lowered
        else difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    )
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    return f"unknown key {key!r}; valid keys: {', '.join(choices)}"


def _one_of(annotation: Any) -> str:
    items: list[str] = []
    nullable = False
    for arg in _union_args(annotation):
        if arg is type(None):
            nullable = True
        elif get_origin(arg) is Literal:
            items.extend(repr(v) for v in get_args(arg))
    if nullable:
        items.append("null")
    if len(items) == 1:
        return f"must be {items[0]}"
    return f"must be one of {', '.join(items[:-1])} or {items[-1]}"


_BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}
_TYPE_WORDS = {
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "iterable_type": "must be a list",
}


def _describe(
    kind: str, ctx: Mapping[str, Any], value: object, annotation: Any
) -> str:
    got = f"(got {_show(value)})"
    if kind in _BOUNDS:
        op, name = _BOUNDS[kind]
        return f"must be {op} {_number(ctx[name])} {got}"
    if kind == "literal_error":
        return f"{_one_of(annotation)} {got}"
    if kind in _TYPE_WORDS:
        return f"{_TYPE_WORDS[kind]} {got}"
    return f"invalid value {got}"  # pragma: no cover - a new pydantic check

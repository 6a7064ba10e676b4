"""Configuration: the models of a resolved policy, and the YAML loader.

The models are the single description of the YAML: validation, defaults and
the JSON Schema (``sage-resilience config schema``) all come from them.
Loading (line numbers, platform and environment merge) lives below them.

Merge order, later wins (mappings merge key by key, lists are replaced)::

    built-in model defaults
    < defaults
    < policies.<name>
    < platforms.<p>.defaults
    < platforms.<p>.policies.<name>
    < env SAGE_RESILIENCE__<POLICY>__<KEY>[__<SUBKEY>...]

Every problem becomes one :class:`~sage_resilience.exceptions.ConfigError`
naming the file, the line and the dotted key where the bad value was
written. Loading is all or nothing: the first problem in file order is
raised (environment problems come after the file's) and no half-applied
configuration is ever returned.
"""

from __future__ import annotations

import copy
import difflib
import importlib.resources
import json
import math
import os
import platform as _platform
import re
import stat
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import models_json_schema
from pydantic_core import PydanticCustomError

from sage_resilience._exception_names import lookup_exception
from sage_resilience._redact import redact, redact_mapping
from sage_resilience.exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "PLATFORMS",
    "PLATFORM_ENV",
    "BackoffConfig",
    "ChaosConfig",
    "Declaration",
    "PolicyConfig",
    "RecoveryBackoffConfig",
    "ResilienceConfig",
    "RetryConfig",
    "StorageConfig",
    "TripConfig",
    "config_schema",
    "default_config_path",
    "detect_platform",
    "dump_config",
    "load_config",
    "load_config_text",
    "normalize_platform",
    "self_tripping",
    "validate_files",
]

#: Environment variable naming the configuration file.
CONFIG_ENV = "SAGE_RESILIENCE_CONFIG"
#: Environment variable naming the platform whose overrides apply.
PLATFORM_ENV = "SAGE_RESILIENCE_PLATFORM"
#: Prefix of the per-policy override variables (two underscores).
ENV_PREFIX = "SAGE_RESILIENCE__"
#: The platforms every configuration knows, whether or not it mentions them.
PLATFORMS = ("darwin", "linux", "windows")

_PLATFORM_ALIASES = {
    "macos": "darwin",
    "osx": "darwin",
    "win": "windows",
    "win32": "windows",
}
_SYSTEMS = {"Darwin": "darwin", "Linux": "linux", "Windows": "windows"}

_MAX_NODES = 100_000  # guards against alias bombs ("billion laughs")
#: Deepest nesting of YAML collections (PyYAML composes recursively).
_MAX_DEPTH = 50
#: Largest configuration file or text, in bytes (characters for text).
MAX_CONFIG_BYTES = 1_000_000

#: Upper bounds that keep every number usable by timers, sleeps and
#: counters (30 days of seconds; a million calls; a thousand attempts).
_MAX_SECONDS = 2_592_000
_MAX_COUNT = 1_000_000
_MAX_ATTEMPTS = 1_000
_MAX_MULTIPLIER = 1_000


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


def _problem(problem: str, index: int | None = None) -> PydanticCustomError:
    # Our own validation errors carry the final, human wording; the loader
    # only adds the location (and the list index, which pydantic cannot
    # attach to an error raised by a field validator).
    context: dict[str, Any] = {"problem": problem}
    if index is not None:
        context["index"] = index
    return PydanticCustomError("sage_config", "{problem}", context)


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=False, validate_default=True
    )

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads `true` as 1 and "5" as 5; in a
        # configuration file both are mistakes worth reporting.
        if isinstance(value, float) and not math.isfinite(value):
            # .inf would overflow timers (every call then fails) or sleep
            # for ever; .nan compares false with every bound.
            raise _problem(f"must be a finite number (got {_show(value)})")
        if not isinstance(value, bool | str) or info.field_name is None:
            return value
        kind = _number_kind(cls.model_fields[info.field_name].annotation)
        if kind is not None:
            raise _problem(f"must be {kind} (got {_show(value)})")
        return value


class BackoffConfig(_Model):
    """Exponential backoff between attempts, with random jitter."""

    strategy: Literal["exponential", "fixed", "linear", "fibonacci"] = Field(
        "exponential",
        description="How waits grow: times multiplier (exponential), "
        "always initial (fixed), initial x n (linear), initial x fib(n) "
        "(fibonacci).",
    )
    initial: float = Field(
        0.1, ge=0, le=_MAX_SECONDS, description="First wait, seconds."
    )
    multiplier: float = Field(
        2.0,
        ge=1,
        le=_MAX_MULTIPLIER,
        description="Each wait is the previous one times this.",
    )
    max: float = Field(
        10.0, ge=0, le=_MAX_SECONDS, description="Longest wait, seconds."
    )
    jitter: float = Field(
        0.1,
        ge=0,
        le=_MAX_SECONDS,
        description="Up to this many seconds are added at random to each "
        "wait.",
    )


class RetryConfig(_Model):
    """Retries of counted failures (tenacity)."""

    attempts: int = Field(
        1,
        ge=1,
        le=_MAX_ATTEMPTS,
        description="Every attempt, the first included; 1: no retry.",
    )
    backoff: BackoffConfig = Field(
        default_factory=BackoffConfig,  # type: ignore[arg-type]
        description="Waits between attempts.",
    )
    respect_retry_after: bool = Field(
        default=True,
        description="Wait as long as a 429/503 Retry-After asks (capped by "
        "backoff.max).",
    )
    deadline: float | None = Field(
        None,
        gt=0,
        le=_MAX_SECONDS,
        description="Stop retrying once this many seconds have passed since "
        "the first attempt started.",
    )


class TripConfig(_Model):
    """Trip on failure or slow-call rates over a sliding time window."""

    failure_rate: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Open when at least this fraction of the window's calls "
        "failed; null: off.",
    )
    window: float = Field(
        60.0, gt=0, le=_MAX_SECONDS, description="Window length, seconds."
    )
    minimum_calls: int = Field(
        20,
        ge=1,
        le=_MAX_COUNT,
        description="Rates are judged only once the window holds this many "
        "calls.",
    )
    slow_call_duration: float | None = Field(
        None,
        gt=0,
        le=_MAX_SECONDS,
        description="An attempt slower than this many seconds is slow.",
    )
    slow_call_rate: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Open when at least this fraction of the window's calls "
        "were slow; needs slow_call_duration; null: off.",
    )

    @model_validator(mode="after")
    def _slow_rate_needs_duration(self) -> TripConfig:
        if self.slow_call_rate is not None and self.slow_call_duration is None:
            msg = "slow_call_rate needs slow_call_duration"
            raise ValueError(msg)
        return self


class RecoveryBackoffConfig(_Model):
    """Grow the open time on each re-trip without a stable close."""

    multiplier: float = Field(
        2.0,
        ge=1,
        le=_MAX_MULTIPLIER,
        description="Each re-trip multiplies the open time by this.",
    )
    max: float = Field(
        600.0,
        gt=0,
        le=_MAX_SECONDS,
        description="Longest open time, seconds; >= recovery_timeout.",
    )


class ChaosConfig(_Model):
    """Fault injection for game days; off unless ``enabled``."""

    enabled: bool = Field(default=False, description="Inject faults at all.")
    failure_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Fraction of calls replaced by a ChaosError.",
    )
    latency: float = Field(
        0.0, ge=0, le=_MAX_SECONDS, description="Injected delay, seconds."
    )
    latency_rate: float = Field(
        0.0, ge=0, le=1, description="Fraction of calls delayed."
    )


StatusSpec = int | Literal["4xx", "5xx"]


class PolicyConfig(_Model):
    """One dependency's fully resolved resilience policy."""

    kind: Literal["postgres", "http"] | None = Field(
        None,
        description="Which integration and diagnosis apply: postgres, http "
        "or null.",
    )
    failure_threshold: int = Field(
        5,
        ge=1,
        le=_MAX_COUNT,
        description="Consecutive counted failures that open it.",
    )
    recovery_timeout: float = Field(
        60.0,
        gt=0,
        le=_MAX_SECONDS,
        description="Seconds open before a half-open probe is allowed.",
    )
    success_threshold: int = Field(
        1,
        ge=1,
        le=_MAX_COUNT,
        description="Probe successes that close it again.",
    )
    half_open_max_calls: int = Field(
        1,
        ge=1,
        le=_MAX_COUNT,
        description="Probes allowed at once while half-open.",
    )
    half_open_max_wait: float | None = Field(
        None,
        gt=0,
        le=_MAX_SECONDS,
        description="Seconds a half-open circuit waits for its probes' "
        "verdict before it opens again (a hung probe loses its slot); "
        "null: max(2, timeout or recovery_timeout).",
    )
    timeout: float | None = Field(
        None,
        gt=0,
        le=_MAX_SECONDS,
        description="Seconds each async attempt may take; null: no limit.",
    )
    critical: bool = Field(
        default=False,
        description="health() is 'down' while this circuit is open.",
    )
    ignore_exceptions: tuple[str, ...] = Field(
        (),
        description="Dotted class names (module.Class) that count as a "
        "success and are never retried.",
    )
    record_exceptions: tuple[str, ...] | None = Field(
        None,
        description="Dotted class names (module.Class); when set, only "
        "these count as failures.",
    )
    failure_statuses: tuple[StatusSpec, ...] = Field(
        (408, 429, "5xx"),
        description="HTTP statuses that count as failures: codes 100-599, "
        "'4xx' or '5xx'.",
    )
    retry: RetryConfig = Field(
        default_factory=RetryConfig,  # type: ignore[arg-type]
        description="Retries (tenacity).",
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Free mapping for integrations (host, port, database, "
        "user, base_url...).",
    )
    trip: TripConfig | None = Field(
        None,
        description="Also trip on failure or slow-call rates; null: only "
        "consecutive failures.",
    )
    recovery_backoff: RecoveryBackoffConfig | None = Field(
        None,
        description="Grow the open time on re-trips; null: constant.",
    )
    max_concurrency: int | None = Field(
        None,
        ge=1,
        le=_MAX_COUNT,
        description="Bulkhead: calls in flight at most; null: unlimited.",
    )
    max_wait: float = Field(
        0.0,
        ge=0,
        le=_MAX_SECONDS,
        description="Seconds a call waits for a bulkhead slot before "
        "BulkheadFullError.",
    )
    chaos: ChaosConfig = Field(
        default_factory=ChaosConfig,  # type: ignore[arg-type]
        description="Fault injection.",
    )

    @field_validator("ignore_exceptions", "record_exceptions")
    @classmethod
    def _dotted_class_names(
        cls, value: tuple[str, ...] | None
    ) -> tuple[str, ...] | None:
        # Nothing is imported: a name whose module is already imported is
        # checked against it; others are recognised once they are.
        for index, name in enumerate(value or ()):
            parts = name.split(".")
            if len(parts) >= 2 and all(p.isidentifier() for p in parts):
                _, problem = lookup_exception(name)
                if problem is not None:
                    raise _problem(problem, index)
                continue
            hint = (
                f"; write 'builtins.{name}' for a built-in exception"
                if name.isidentifier()
                else ""
            )
            problem = (
                "must be a dotted class name like 'module.Class' "
                f"(got {_show(name)}){hint}"
            )
            raise _problem(problem, index)
        return value

    @field_validator("failure_statuses", mode="before")
    @classmethod
    def _http_statuses(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            for index, item in enumerate(value):
                if item in {"4xx", "5xx"} or (
                    type(item) is int and 100 <= item <= 599
                ):
                    continue
                problem = (
                    "must be an HTTP status 100-599, '4xx' or '5xx' "
                    f"(got {_show(item)})"
                )
                raise _problem(problem, index)
        return value

    @model_validator(mode="after")
    def _backoff_max_covers_recovery(self) -> PolicyConfig:
        rb = self.recovery_backoff
        if rb is not None and rb.max < self.recovery_timeout:
            msg = (
                f"recovery_backoff.max must be >= recovery_timeout "
                f"({self.recovery_timeout:g}) (got {rb.max:g})"
            )
            raise ValueError(msg)
        return self

    def is_failure_status(self, status: int) -> bool:
        """Whether an HTTP status counts as a dependency failure."""
        for spec in self.failure_statuses:
            if spec == status or (
                isinstance(spec, str) and status // 100 == int(spec[0])
            ):
                return True
        return False


class StorageConfig(_Model):
    """Where circuit state lives."""

    backend: Literal["memory", "sqlite", "redis"] = Field(
        "memory",
        description="memory (per process), sqlite (path) or redis (url, "
        "namespace).",
    )
    path: str | None = Field(
        None, description="SQLite database file (backend sqlite)."
    )
    url: str | None = Field(
        None, description="redis://... URL (backend redis)."
    )
    namespace: str = Field(
        "sage_resilience",
        description="Prefix of the Redis keys and channel (backend redis).",
    )

    @model_validator(mode="after")
    def _backend_needs_location(self) -> StorageConfig:
        if self.backend == "sqlite" and not self.path:
            msg = "the sqlite backend needs a path"
            raise ValueError(msg)
        if self.backend == "redis" and not self.url:
            msg = "the redis backend needs a url"
            raise ValueError(msg)
        problem = None
        if self.backend == "sqlite" and self.path:
            problem = _sqlite_path_problem(self.path)
        elif self.backend == "redis" and self.url:
            problem = _redis_url_problem(self.url)
            if problem is None and not self.namespace.strip():
                problem = "namespace must not be empty"
        if problem is not None:
            raise ValueError(problem)
        return self


def _sqlite_path_problem(path: str) -> str | None:
    """Why *path* cannot be the sqlite backend's database file, if so."""
    if not path.strip():
        return "path must name a file (got an empty path)"
    if "\0" in path:
        return "path must not hold a NUL character"
    if Path(path).is_dir():
        return f"path is a directory, not a database file (got {_show(path)})"
    return None


_REDIS_SCHEMES = ("redis", "rediss", "unix")


def _redis_url_problem(url: str) -> str | None:
    """Why *url* is not a Redis URL redis-py can use, if so.

    Parsed with ``urllib.parse`` the way redis-py reads it; nothing is
    imported or connected. Messages show the URL with its password hidden.
    """
    shown = _show(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"url is not a valid URL: bad host or port (got {shown})"
    if parts.scheme not in _REDIS_SCHEMES:
        return (
            f"url must start with redis://, rediss:// or unix:// (got {shown})"
        )
    if parts.scheme == "unix":
        if not parts.path:
            return f"url must name the socket: unix:///path (got {shown})"
        return None
    if not parts.hostname:
        return f"url must name a host: redis://host:6379/0 (got {shown})"
    if port == 0:
        return f"url must use a port 1-65535 (got {shown})"
    db = parts.path.strip("/")
    if db and not db.isdigit():
        return f"url must end with a database number, as /0 (got {shown})"
    return None


class ResilienceConfig(_Model):
    """A whole, resolved configuration for one platform."""

    version: Literal[1] = 1
    platform: str = "linux"
    path: str | None = Field(
        None, description="The file it was loaded from, if any."
    )
    storage: StorageConfig = Field(default_factory=StorageConfig)  # type: ignore[arg-type]
    policies: dict[str, PolicyConfig] = Field(default_factory=dict)
    #: The layers it was resolved from, so that a name declared later in
    #: code gets the same ``defaults:``, platform and environment layers.
    _source: _Source | None = PrivateAttr(default=None)

    @property
    def pending_env(self) -> dict[str, list[str]]:
        """Environment overrides naming a policy no file or code declares.

        Policy name (lower-cased) -> variable names. They apply as soon as
        code declares that policy.
        """
        source = self._source
        if source is None:
            return {}
        return {
            name: [o.variable for o in found]
            for name, found in source.pending.items()
            if name not in self.policies
        }

    def with_declarations(
        self, declared: Mapping[str, Sequence[Declaration]]
    ) -> ResilienceConfig:
        """This configuration with policies declared in code resolved in.

        For each declared name the code's settings sit between
        ``defaults:`` and ``policies.<name>`` (configuration beats code).

        Raises:
            ConfigError: A declaration's settings are invalid.
        """
        source = self._source
        if source is None:
            # Built in code, not loaded: declared settings over built-ins
            # for names it lacks; its own policies stay as they are.
            policies = dict(self.policies)
            errors: list[ConfigError] = []
            for name, decls in declared.items():
                if name in policies or not decls:
                    continue
                layers = [d.layer(name) for d in decls]
                merged = _merge(layers, layers[0].origins[()])
                result = _validate(PolicyConfig, merged, errors)
                if result is not None:
                    policies[name] = result
            if errors:
                raise _first(errors)
            return self.model_copy(update={"policies": policies})
        if not declared:
            return self
        resolved = _resolve(
            source.doc, source.platform, source.environ, declared
        )
        # Only the declared names change: policies of this object that
        # code does not declare stay as they are (a model_copy keeps its
        # edits).
        policies = dict(self.policies)
        policies.update({name: resolved.policies[name] for name in declared})
        return self.model_copy(update={"policies": policies})


# --------------------------------------------------------------------------
# Small helpers: types, wording
# --------------------------------------------------------------------------

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


def _show(value: object) -> str:
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


# --------------------------------------------------------------------------
# Where values were written
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where a value was written: a file line, or an environment variable."""

    path: str  # the file as the caller named it, "<string>" or "<env>"
    line: int | None
    where: _Path  # YAML path in the file, or the config path for env
    variable: str | None = None  # the environment variable, if any

    def error(self, rest: _Path, problem: str) -> ConfigError:
        where = self.where + rest
        if self.variable is not None:
            text = f"{_dotted(where)}: {problem}" if where else problem
            return ConfigError(text, path=self.path, key=self.variable)
        return ConfigError(
            problem, path=self.path, line=self.line, key=_dotted(where) or None
        )


@dataclass(slots=True)
class _Layer:
    """One mapping of the merge, with the origin of every key and item.

    Origin paths are relative to the layer (a policy's root).
    """

    data: dict[str, Any]
    origins: dict[_Path, _Origin]


@dataclass(frozen=True, slots=True)
class Declaration:
    """Policy settings written in code (a decorator's arguments).

    ``settings`` has the YAML's shape (``{"retry": {"attempts": 3}}``);
    ``path`` and ``line`` say where the code declared them, for messages.
    """

    settings: Mapping[str, Any]
    path: str
    line: int | None = None

    @property
    def where(self) -> str:
        """``file:line`` of the declaration."""
        return self.path if self.line is None else f"{self.path}:{self.line}"

    def layer(self, name: str) -> _Layer:
        """The declaration as one layer of the merge."""
        origin = _Origin(self.path, self.line, ("policies", name))
        return _Layer(copy.deepcopy(dict(self.settings)), {(): origin})


def _lookup(
    origins: Mapping[_Path, _Origin], loc: _Path
) -> tuple[_Origin, _Path]:
    for n in range(len(loc), -1, -1):
        origin = origins.get(loc[:n])
        if origin is not None:
            return origin, loc[n:]
    msg = "every layer has a root origin"  # pragma: no cover
    raise AssertionError(msg)  # pragma: no cover


def _drop_below(origins: dict[_Path, _Origin], path: _Path) -> None:
    n = len(path)
    for key in [k for k in origins if k[:n] == path]:
        del origins[key]


def _merge_into(
    dst: dict[str, Any],
    src: Mapping[str, Any],
    path: _Path,
    src_origins: Mapping[_Path, _Origin],
    dst_origins: dict[_Path, _Origin],
) -> None:
    for key, value in src.items():
        here = (*path, key)
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            dst_origins[here] = src_origins.get(here, dst_origins[path])
            _merge_into(dst[key], value, here, src_origins, dst_origins)
            continue
        _drop_below(dst_origins, here)
        dst[key] = copy.deepcopy(value)
        n = len(here)
        dst_origins.update(
            {sub: o for sub, o in src_origins.items() if sub[:n] == here}
        )


def _merge(layers: Iterable[_Layer], root: _Origin) -> _Layer:
    merged = _Layer({}, {(): root})
    for layer in layers:
        _merge_into(merged.data, layer.data, (), layer.origins, merged.origins)
    return merged


# --------------------------------------------------------------------------
# YAML with line numbers
# --------------------------------------------------------------------------

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Empty:
    """The document holds no node at all (empty, or comments only)."""


_EMPTY = _Empty()


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that remembers the line of every key and list item.

    ``lines`` maps a path (keys and list indices) to its 1-based line;
    ``problems`` collects duplicate keys and non-text keys, which plain
    PyYAML accepts silently (the later duplicate wins).
    """

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self.lines: dict[_Path, int] = {}
        self.problems: list[ConfigError] = []
        self._active: set[int] = set()
        self._nodes = 0
        self._depth = 0

    def load_document(self) -> Any:
        """Compose the single document and build it, or ``_EMPTY``."""
        node = self.get_single_node()
        if node is None:
            return _EMPTY
        self.lines[()] = node.start_mark.line + 1
        return self._build(node, ())

    def compose_node(
        self, parent: yaml.Node | None, index: object
    ) -> yaml.Node | None:
        """Compose one node; refuse nesting deeper than ``_MAX_DEPTH``.

        PyYAML composes (and later constructs) recursively: 5000 nested
        brackets would end in a RecursionError, not a message.
        """
        if self._depth >= _MAX_DEPTH:
            event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
            mark = event.start_mark
            line = None if mark is None else mark.line + 1
            raise ConfigError(
                f"nested deeper than {_MAX_DEPTH} levels",
                path=self.source,
                line=line,
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)  # type: ignore[arg-type]
        finally:
            self._depth -= 1

    def _count(self, node: yaml.Node, path: _Path) -> None:
        self._nodes += 1
        if self._nodes > _MAX_NODES:
            raise ConfigError(
                f"the document is too large (over {_MAX_NODES} values once "
                "aliases are expanded)",
                path=self.source,
                line=node.start_mark.line + 1,
            )
        if id(node) in self._active:
            raise ConfigError(
                "recursive YAML alias",
                path=self.source,
                line=node.start_mark.line + 1,
                key=_dotted(path) or None,
            )

    def _charge(self, node: yaml.Node, path: _Path) -> None:
        """Count a tagged collection as if its aliases were expanded.

        PyYAML builds ``!!set``, ``!!omap``, ``!!pairs`` itself: counted
        first, an alias bomb under such a tag cannot escape the count.
        """
        self._count(node, path)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        if not children:
            return
        self._active.add(id(node))
        try:
            for child in children:
                self._charge(child, path)
        finally:
            self._active.discard(id(node))

    def _construct(self, node: yaml.Node, path: _Path) -> Any:
        """PyYAML's own construction, any failure a ConfigError."""
        if not isinstance(node, yaml.ScalarNode):
            self._charge(node, path)
        try:
            value = self.construct_object(node, deep=True)
        except yaml.MarkedYAMLError:
            raise
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise ConfigError(
                _unreadable(node, exc),
                path=self.source,
                line=node.start_mark.line + 1,
                key=_dotted(path) or None,
            ) from exc
        if isinstance(value, bytes):
            # Nothing reads bytes, and config show could not print them.
            raise ConfigError(
                "binary data (!!binary) is not accepted; write text",
                path=self.source,
                line=node.start_mark.line + 1,
                key=_dotted(path) or None,
            )
        return value

    def _build(self, node: yaml.Node, path: _Path) -> Any:
        self._count(node, path)
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG:
            self._active.add(id(node))
            try:
                return self._build_mapping(node, path)
            finally:
                self._active.discard(id(node))
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
            self._active.add(id(node))
            try:
                items = []
                for index, item in enumerate(node.value):
                    self.lines[(*path, index)] = item.start_mark.line + 1
                    items.append(self._build(item, (*path, index)))
                return items
            finally:
                self._active.discard(id(node))
        if not isinstance(node, yaml.ScalarNode):
            self._nodes -= 1  # counted again by _charge
        return self._construct(node, path)

    def _build_mapping(
        self, node: yaml.MappingNode, path: _Path
    ) -> dict[str, Any]:
        first: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self._construct(key_node, path)
            if not isinstance(key, str):
                continue
            line = key_node.start_mark.line + 1
            if key in first:
                self.problems.append(
                    ConfigError(
                        f"duplicate key {key!r} (first at line {first[key]})",
                        path=self.source,
                        line=line,
                        key=_dotted((*path, key)),
                    )
                )
            else:
                first[key] = line
        self.flatten_mapping(node)  # YAML merge keys (<<: *anchor)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._construct(key_node, path)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                self.problems.append(
                    ConfigError(
                        f"keys must be text (got {_show(key)}); quote it",
                        path=self.source,
                        line=line,
                        key=_dotted(path) or None,
                    )
                )
                continue
            self.lines[(*path, key)] = line
            result[key] = self._build(value_node, (*path, key))
        return result


_TAG_WORDS = {
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "true or false",
    "tag:yaml.org,2002:timestamp": "a date",
    "tag:yaml.org,2002:binary": "base64 data",
}


def _unreadable(node: yaml.Node, exc: Exception) -> str:
    """Why PyYAML could not build a value (``!!int abc``, 5000 digits)."""
    what = _TAG_WORDS.get(node.tag, f"a {node.tag.rpartition(':')[2]}")
    if isinstance(node, yaml.ScalarNode):
        digits = sum(c.isdigit() for c in node.value[:10_000])
        if "digits" in str(exc) and digits > sys.get_int_max_str_digits():
            return (
                f"an integer of {digits} digits is too long (at most "
                f"{sys.get_int_max_str_digits()})"
            )
        return f"cannot be read as {what} (got {_show(node.value)})"
    return f"cannot be read as {what}"


def _parse_yaml(
    text: str, source: str
) -> tuple[Any, dict[_Path, int], list[ConfigError]]:
    """Parse one YAML document keeping lines; syntax errors raise."""
    try:
        # The reader checks every character when it is built.
        loader = _LineLoader(text, source)
    except yaml.reader.ReaderError as exc:
        char = exc.character
        code = char if isinstance(char, int) else ord(char[:1] or "\0")
        raise ConfigError(
            f"invalid YAML: the control character U+{code:04X} is not "
            "allowed (escape it in a double-quoted string)",
            path=source,
            line=text.count("\n", 0, exc.position) + 1,
        ) from exc
    try:
        data = loader.load_document()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "not valid YAML"
        if exc.context and problem.startswith("but "):
            # "expected a single document in the stream, but found ..."
            problem = f"{exc.context}, {problem}"
        raise ConfigError(
            f"invalid YAML: {problem}",
            path=source,
            line=None if mark is None else mark.line + 1,
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", path=source) from exc
    finally:
        loader.dispose()
    return data, loader.lines, loader.problems


# --------------------------------------------------------------------------
# The file's structure
# --------------------------------------------------------------------------

_TOP_KEYS = ("version", "storage", "defaults", "policies", "platforms")
_PLATFORM_KEYS = ("defaults", "policies", "storage")


@dataclass(slots=True)
class _Platform:
    key: str  # as written in the file (may be an alias such as macos)
    defaults: _Layer | None = None
    storage: _Layer | None = None
    policies: dict[str, _Layer] = field(default_factory=dict)


@dataclass(slots=True)
class _Document:
    source: str
    storage: _Layer | None = None
    defaults: _Layer | None = None
    policies: dict[str, _Layer] = field(default_factory=dict)
    platforms: dict[str, _Platform] = field(default_factory=dict)
    errors: list[ConfigError] = field(default_factory=list)

    def layers(self) -> Iterable[tuple[type[_Model], _Layer]]:
        """Every layer of the file, with the model it is a part of."""
        if self.storage is not None:
            yield StorageConfig, self.storage
        if self.defaults is not None:
            yield PolicyConfig, self.defaults
        for layer in self.policies.values():
            yield PolicyConfig, layer
        for section in self.platforms.values():
            if section.storage is not None:
                yield StorageConfig, section.storage
            if section.defaults is not None:
                yield PolicyConfig, section.defaults
            for layer in section.policies.values():
                yield PolicyConfig, layer


class _Reader:
    """Turns the parsed YAML into a :class:`_Document`, noting problems."""

    def __init__(self, source: str, lines: dict[_Path, int]) -> None:
        self.source = source
        self.lines = lines
        self.errors: list[ConfigError] = []

    def error(self, where: _Path, problem: str) -> None:
        self.errors.append(
            ConfigError(
                problem,
                path=self.source,
                line=self.lines.get(where),
                key=_dotted(where) or None,
            )
        )

    def check_keys(
        self, mapping: Mapping[str, Any], where: _Path, valid: Iterable[str]
    ) -> None:
        allowed = tuple(valid)
        for key in mapping:
            if key not in allowed:
                self.error((*where, key), _unknown_key(key, allowed))

    def mapping(self, value: Any, where: _Path) -> dict[str, Any] | None:
        """A section's mapping; null reads as empty; anything else errs."""
        if value is None:
            return {}
        if isinstance(value, dict):
            return value
        self.error(where, f"must be a mapping (got {_show(value)})")
        return None

    def layer(self, value: Any, where: _Path) -> _Layer | None:
        data = self.mapping(value, where)
        if data is None:
            return None
        n = len(where)
        origins = {
            path[n:]: _Origin(self.source, line, path)
            for path, line in self.lines.items()
            if path[:n] == where
        }
        origins.setdefault((), _Origin(self.source, None, where))
        return _Layer(data, origins)

    def policies(self, value: Any, where: _Path) -> dict[str, _Layer]:
        out: dict[str, _Layer] = {}
        for name, body in (self.mapping(value, where) or {}).items():
            layer = self.layer(body, (*where, name))
            if layer is not None:
                out[name] = layer
        return out

    def document(self, data: dict[str, Any]) -> _Document:
        doc = _Document(self.source)
        self.check_keys(data, (), _TOP_KEYS)
        if "version" not in data:
            self.errors.insert(
                0,
                ConfigError(
                    "missing; the file must say 'version: 1'",
                    path=self.source,
                    key="version",
                ),
            )
        elif type(data["version"]) is not int or data["version"] != 1:
            self.error(
                ("version",),
                "must be 1, the only format this release reads "
                f"(got {_show(data['version'])})",
            )
        if "storage" in data:
            doc.storage = self.layer(data["storage"], ("storage",))
        if "defaults" in data:
            doc.defaults = self.layer(data["defaults"], ("defaults",))
        doc.policies = self.policies(data.get("policies"), ("policies",))
        platforms = self.mapping(data.get("platforms"), ("platforms",))
        for key, body in (platforms or {}).items():
            where: _Path = ("platforms", key)
            name = normalize_platform(key)
            if name in doc.platforms:
                first = doc.platforms[name].key
                line = self.lines.get(("platforms", first))
                self.error(
                    where,
                    f"duplicate platform {name!r} (first written as "
                    f"{first!r} at line {line})",
                )
                continue
            section = self.mapping(body, where)
            if section is None:
                continue
            self.check_keys(section, where, _PLATFORM_KEYS)
            doc.platforms[name] = _Platform(
                key=key,
                defaults=(
                    self.layer(section["defaults"], (*where, "defaults"))
                    if "defaults" in section
                    else None
                ),
                storage=(
                    self.layer(section["storage"], (*where, "storage"))
                    if "storage" in section
                    else None
                ),
                policies=self.policies(
                    section.get("policies"), (*where, "policies")
                ),
            )
        doc.errors = self.errors
        return doc


def _read_document(text: str, source: str) -> _Document:
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"too large ({len(text):,} characters); a configuration holds "
            f"at most {MAX_CONFIG_BYTES:,}",
            path=source,
        )
    data, lines, problems = _parse_yaml(text, source)
    if data is _EMPTY or data is None:
        raise ConfigError(
            "the file is empty; it needs at least 'version: 1'", path=source
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"the top level must be a mapping (got {_show(data)})",
            path=source,
            line=lines.get(()),
        )
    reader = _Reader(source, lines)
    doc = reader.document(data)
    doc.errors[:0] = problems
    return doc


# --------------------------------------------------------------------------
# Pydantic errors -> ConfigError
# --------------------------------------------------------------------------


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
    model: type[_Model],
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


# --------------------------------------------------------------------------
# Environment overrides
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------


def normalize_platform(name: str) -> str:
    """The canonical spelling of a platform name (``macos`` -> ``darwin``).

    Args:
        name: A platform name in any case; ``macos``/``osx`` and
            ``win32``/``win`` are aliases of ``darwin`` and ``windows``.

    Returns:
        The lower-cased, de-aliased name.

    .. versionadded:: 0.1.0
    """
    lowered = name.strip().lower()
    return _PLATFORM_ALIASES.get(lowered, lowered)


def detect_platform() -> str:
    """The platform this process runs on, as the YAML spells it.

    Returns:
        ``linux``, ``darwin`` or ``windows``; any other system's name
        lower-cased.

    .. versionadded:: 0.1.0
    """
    system = _platform.system()
    return _SYSTEMS.get(system) or normalize_platform(system) or "unknown"


def _choose_platform(
    doc: _Document, explicit: str | None, environ: Mapping[str, str]
) -> str:
    if explicit is not None:
        raw, path, key = explicit, doc.source, None
    elif environ.get(PLATFORM_ENV, "").strip():
        raw, path, key = environ[PLATFORM_ENV], "<env>", PLATFORM_ENV
    else:
        return detect_platform()
    name = normalize_platform(raw)
    if name in PLATFORMS or name in doc.platforms:
        return name
    known = ", ".join(sorted({*PLATFORMS, *doc.platforms}))
    raise ConfigError(
        f"unknown platform {raw!r}; known platforms: {known}",
        path=path,
        key=key,
    )


def _first(errors: list[ConfigError]) -> ConfigError:
    # File problems in file order, then environment problems.
    return min(
        enumerate(errors),
        key=lambda item: (item[1].path == "<env>", item[1].line or 0, item[0]),
    )[1]


@dataclass(frozen=True, slots=True)
class _Source:
    """What a loaded configuration was resolved from."""

    doc: _Document
    platform: str
    environ: Mapping[str, str]
    pending: dict[str, list[_EnvOverride]]


def _policy_layers(
    doc: _Document,
    section: _Platform,
    name: str,
    declared: Sequence[Declaration],
) -> _Layer:
    """The file and code layers of policy *name*, merged in order.

    built-ins < ``defaults:`` < code < ``policies.<name>`` < platform
    defaults < platform policy (the environment comes after).
    """
    own = doc.policies.get(name)
    plat = section.policies.get(name)
    code = [d.layer(name) for d in declared]
    layers = [
        layer
        for layer in (doc.defaults, *code, own, section.defaults, plat)
        if layer is not None
    ]
    # Messages about the whole policy point at the file's entry first.
    top = own or plat or (code[0] if code else layers[0])
    return _merge(layers, top.origins[()])


def _resolve(
    doc: _Document,
    platform: str,
    environ: Mapping[str, str],
    declared: Mapping[str, Sequence[Declaration]] | None = None,
) -> ResilienceConfig:
    declared = declared or {}
    errors = list(doc.errors)
    for model, layer in doc.layers():
        _validate(model, layer, errors, partial=True)
    section = doc.platforms.get(platform, _Platform(key=platform))

    names = list(doc.policies)
    names += [n for n in section.policies if n not in doc.policies]
    names += [n for n in declared if n not in names]
    overrides, env_errors = _env_overrides(environ, names)
    errors += env_errors
    pending = {n: found for n, found in overrides.items() if n not in names}

    policies: dict[str, PolicyConfig] = {}
    for name in names:
        merged = _policy_layers(doc, section, name, declared.get(name, ()))
        if name in overrides:
            env = _env_layer(name, overrides[name], merged.data, errors)
            merged = _merge([merged, env], merged.origins[()])
        result = _validate(PolicyConfig, merged, errors)
        if result is not None:
            policies[name] = result

    storage_layers = [
        layer for layer in (doc.storage, section.storage) if layer is not None
    ]
    storage_root = (
        storage_layers[0].origins[()]
        if storage_layers
        else _Origin(doc.source, None, ("storage",))
    )
    storage = _validate(
        StorageConfig, _merge(storage_layers, storage_root), errors
    )

    if errors:
        raise _first(errors)
    config = ResilienceConfig(
        version=1,
        platform=platform,
        path=doc.source,
        storage=storage,
        policies=policies,
    )
    config._source = _Source(doc, platform, dict(environ), pending)
    return config


_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_a_file(mode: int) -> str | None:
    """Why a file of *mode* is not read as a configuration, if it is not."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    kind = next((name for test, name in _FILE_KINDS if test(mode)), None)
    return f"is {kind or 'not a regular file'}, not a file"


def _too_large(size: int) -> str:
    return (
        f"too large ({size:,} bytes); a configuration file holds at most "
        f"{MAX_CONFIG_BYTES:,}"
    )


def _read_bytes(source: str) -> bytes:
    # Checked before reading: a FIFO would block for ever, /dev/zero would
    # fill the memory. The file is opened without blocking and checked
    # again, so nothing swapped in between is read either.
    try:
        problem = _not_a_file(Path(source).stat().st_mode)
        if problem is not None:
            raise ConfigError(problem, path=source)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(source, flags | getattr(os, "O_BINARY", 0))
    except FileNotFoundError as exc:
        raise ConfigError("no such file", path=source) from exc
    except OSError as exc:
        raise ConfigError(
            f"cannot read the file: {exc.strerror or exc}", path=source
        ) from exc
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        problem = _not_a_file(info.st_mode)
        if problem is not None:
            raise ConfigError(problem, path=source)
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(_too_large(info.st_size), path=source)
        try:
            data = file.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ConfigError(
                f"cannot read the file: {exc.strerror or exc}", path=source
            ) from exc
    if len(data) > MAX_CONFIG_BYTES:  # it grew while being read
        raise ConfigError(_too_large(len(data)), path=source)
    return data


def _read_text(source: str) -> str:
    """The text of a configuration file: a regular, UTF-8 file of 1 MB."""
    data = _read_bytes(source)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text (bad byte at offset {exc.start})",
            path=source,
            line=data.count(b"\n", 0, exc.start) + 1,
        ) from exc


def default_config_path() -> Path:
    """The shipped default configuration file.

    Returns:
        ``sage_resilience/_data/resilience.yaml`` inside an installed wheel,
        else ``config/resilience.yaml`` of the source tree (editable
        install).

    .. versionadded:: 0.1.0
    """
    packaged = importlib.resources.files("sage_resilience").joinpath(
        "_data", "resilience.yaml"
    )
    if packaged.is_file():
        return Path(str(packaged))
    return (
        Path(__file__).resolve().parent.parent / "config" / "resilience.yaml"
    )


def load_config_text(
    text: str,
    *,
    source: str = "<string>",
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ResilienceConfig:
    """Load a configuration from YAML text (tests, hot reload).

    Args:
        text: The YAML document.
        source: How messages name the text (a file name, or ``<string>``).
        platform: Whose ``platforms:`` overrides apply; default: env
            ``SAGE_RESILIENCE_PLATFORM``, else the running system.
        environ: Where ``SAGE_RESILIENCE_*`` variables are read; default
            ``os.environ``. Pass ``{}`` to ignore the environment.

    Returns:
        The resolved configuration.

    Raises:
        ConfigError: The first problem in file order; nothing is applied.

    .. versionadded:: 0.1.0
    """
    env = os.environ if environ is None else environ
    doc = _read_document(text, source)
    return _resolve(doc, _choose_platform(doc, platform, env), env)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ResilienceConfig:
    """Load, merge and validate a configuration file.

    Args:
        path: The YAML file; default: env ``SAGE_RESILIENCE_CONFIG``, else
            :func:`default_config_path`. Messages name it as given.
        platform: Whose ``platforms:`` overrides apply; default: env
            ``SAGE_RESILIENCE_PLATFORM``, else the running system
            (``linux``, ``darwin``, ``windows``). ``macos``/``osx`` and
            ``win32``/``win`` are aliases. A name given here must be one of
            those three or appear under ``platforms:``.
        environ: Where ``SAGE_RESILIENCE_*`` variables are read; default
            ``os.environ``.

    Returns:
        The resolved configuration: ``.platform`` (canonical name),
        ``.policies`` (name -> fully resolved :class:`PolicyConfig`),
        ``.storage`` and ``.path``.

    Raises:
        ConfigError: The file cannot be read, or the first problem in file
            order (``file:line: dotted.key: problem``); environment
            problems name the variable.

    .. versionadded:: 0.1.0
    """
    env = os.environ if environ is None else environ
    from_env = path is None and bool(env.get(CONFIG_ENV))
    if path is None:
        path = env.get(CONFIG_ENV) or default_config_path()
    source = os.fspath(path)
    try:
        text = _read_text(source)
    except ConfigError as exc:
        if not from_env:
            raise
        raise ConfigError(
            f"{exc.problem} (named by {CONFIG_ENV})", path=source
        ) from exc
    return load_config_text(
        text, source=source, platform=platform, environ=env
    )


def validate_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    environ: Mapping[str, str] | None = None,
) -> list[tuple[str, ConfigError | None]]:
    """Validate files for every platform they mention, and the usual three.

    Args:
        paths: The files to check.
        environ: Override variables to apply as well; default none, so the
            verdict is about the files alone.

    Returns:
        One ``(path, error or None)`` per file, in the order given. A
        problem that shows on one platform only says which.

    .. versionadded:: 0.1.0
    """
    env: Mapping[str, str] = {} if environ is None else environ
    results: list[tuple[str, ConfigError | None]] = []
    for path in paths:
        source = os.fspath(path)
        try:
            doc = _read_document(_read_text(source), source)
        except ConfigError as exc:
            results.append((source, exc))
            continue
        failures: list[tuple[str, ConfigError]] = []
        names = sorted({*PLATFORMS, *doc.platforms})
        for name in names:
            try:
                _resolve(doc, name, env)
            except ConfigError as exc:
                failures.append((name, exc))
        if not failures:
            results.append((source, None))
            continue
        name, error = failures[0]
        if len(failures) < len(names) and "platforms." not in (
            error.key or ""
        ):
            error = ConfigError(
                f"{error.problem} (with the {name!r} platform overrides)",
                path=error.path,
                line=error.line,
                key=error.key,
            )
        results.append((source, error))
    return results


def self_tripping(config: ResilienceConfig) -> list[str]:
    """Policies where one call's attempts can open their own circuit.

    With ``retry.attempts >= failure_threshold`` a single caller retrying
    into a brief outage opens the circuit for every other caller.

    Returns:
        One message per such policy, naming the file and the key.
    """
    where = f"{config.path}: " if config.path else ""
    return [
        f"{where}policies.{name}.retry.attempts: {p.retry.attempts} >= "
        f"failure_threshold {p.failure_threshold} (platform "
        f"{config.platform}): one call's retries can open its own circuit "
        "for every caller; make failure_threshold larger than attempts"
        for name, p in sorted(config.policies.items())
        if p.retry.attempts > 1 and p.retry.attempts >= p.failure_threshold
    ]


# --------------------------------------------------------------------------
# Schema and dump
# --------------------------------------------------------------------------

_SCHEMA_ID = "urn:sage-resilience:config:1"
_DOTTED_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$"


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

    def nullable(name: str) -> dict[str, Any]:
        return {"anyOf": [{"$ref": f"#/$defs/{name}"}, {"type": "null"}]}

    policies = {
        "type": "object",
        "description": "Policies by name.",
        "additionalProperties": nullable("PolicyConfig"),
    }
    defs["PlatformConfig"] = {
        "type": "object",
        "title": "PlatformConfig",
        "description": "Overrides applied on one platform (linux, darwin, "
        "windows or a name of your own).",
        "additionalProperties": False,
        "properties": {
            "defaults": nullable("PolicyConfig"),
            "policies": policies,
            "storage": nullable("StorageConfig"),
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": _SCHEMA_ID,
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
            "storage": nullable("StorageConfig"),
            "defaults": nullable("PolicyConfig"),
            "policies": policies,
            "platforms": {
                "type": "object",
                "description": "Overrides by platform; macos/osx mean "
                "darwin, win32/win mean windows.",
                "additionalProperties": nullable("PlatformConfig"),
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

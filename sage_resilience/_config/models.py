"""The models of a resolved configuration: the one place a key is added.

The models are the single description of the YAML: validation, defaults and
the JSON Schema (``sage-resilience config schema``) all come from them.

To add a key to a policy (or to ``storage:``):

* add a field to :class:`PolicyConfig` (or a model it holds, or
  :class:`StorageConfig`) with its default, its bounds (``ge``/``le``,
  the ``_MAX_*`` caps below) and a ``description`` (the schema's text);
* a check that relates two keys is a ``model_validator`` whose message
  starts with (or names) the key it is about: the loader reports it at
  that key's line, after the merge; a ``field_validator`` of one value
  raises :func:`_problem` with the final wording;
* nothing else in the package changes: the layers, the environment
  (``SAGE_RESILIENCE__<POLICY>__<KEY>``), the messages and the JSON
  Schema follow the models (``config_schema`` patches only what pydantic
  cannot say, in :mod:`.schema`). Then update the code that reads the
  value, ``config/resilience.yaml`` if the shipped file should show it,
  and ``docs/configuration.md``.

A new top-level section of the file also needs ``_TOP_KEYS`` (and, for
``platforms.<p>``, ``_PLATFORM_KEYS``) in :mod:`.document`, its merge in
:mod:`.resolve` and its schema in :mod:`.schema`.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sage_resilience._config.errors import _first, _problem, _validate
from sage_resilience._config.layers import Declaration, _merge
from sage_resilience._config.wording import _number_kind, _show
from sage_resilience._exception_names import lookup_exception
from sage_resilience.exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

#: Upper bounds that keep every number usable by timers, sleeps and
#: counters (30 days of seconds; a million calls; a thousand attempts).
_MAX_SECONDS = 2_592_000
_MAX_COUNT = 1_000_000
_MAX_ATTEMPTS = 1_000
_MAX_MULTIPLIER = 1_000


class _Model(BaseModel):
    model_config: ClassVar[ConfigDict] = ConfigDict(
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
        default="exponential",
        description="How waits grow: times multiplier (exponential), "
        "always initial (fixed), initial x n (linear), initial x fib(n) "
        "(fibonacci).",
    )
    initial: float = Field(
        default=0.1, ge=0, le=_MAX_SECONDS, description="First wait, seconds."
    )
    multiplier: float = Field(
        default=2.0,
        ge=1,
        le=_MAX_MULTIPLIER,
        description="Each wait is the previous one times this.",
    )
    max: float = Field(
        default=10.0,
        ge=0,
        le=_MAX_SECONDS,
        description="Longest wait, seconds.",
    )
    jitter: float = Field(
        default=0.1,
        ge=0,
        le=_MAX_SECONDS,
        description="Up to this many seconds are added at random to each "
        "wait.",
    )


class RetryConfig(_Model):
    """Retries of counted failures (tenacity)."""

    attempts: int = Field(
        default=1,
        ge=1,
        le=_MAX_ATTEMPTS,
        description="Every attempt, the first included; 1: no retry.",
    )
    backoff: BackoffConfig = Field(
        default_factory=BackoffConfig,
        description="Waits between attempts.",
    )
    respect_retry_after: bool = Field(
        default=True,
        description="Wait as long as a 429/503 Retry-After asks (capped by "
        "backoff.max).",
    )
    deadline: float | None = Field(
        default=None,
        gt=0,
        le=_MAX_SECONDS,
        description="Stop retrying once this many seconds have passed since "
        "the first attempt started.",
    )


class TripConfig(_Model):
    """Trip on failure or slow-call rates over a sliding time window."""

    failure_rate: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Open when at least this fraction of the window's calls "
        "failed; null: off.",
    )
    window: float = Field(
        default=60.0,
        gt=0,
        le=_MAX_SECONDS,
        description="Window length, seconds.",
    )
    minimum_calls: int = Field(
        default=20,
        ge=1,
        le=_MAX_COUNT,
        description="Rates are judged only once the window holds this many "
        "calls.",
    )
    slow_call_duration: float | None = Field(
        default=None,
        gt=0,
        le=_MAX_SECONDS,
        description="An attempt slower than this many seconds is slow.",
    )
    slow_call_rate: float | None = Field(
        default=None,
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
        default=2.0,
        ge=1,
        le=_MAX_MULTIPLIER,
        description="Each re-trip multiplies the open time by this.",
    )
    max: float = Field(
        default=600.0,
        gt=0,
        le=_MAX_SECONDS,
        description="Longest open time, seconds; >= recovery_timeout.",
    )


class ChaosConfig(_Model):
    """Fault injection for game days; off unless ``enabled``."""

    enabled: bool = Field(default=False, description="Inject faults at all.")
    failure_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Fraction of calls replaced by a ChaosError.",
    )
    latency: float = Field(
        default=0.0,
        ge=0,
        le=_MAX_SECONDS,
        description="Injected delay, seconds.",
    )
    latency_rate: float = Field(
        default=0.0, ge=0, le=1, description="Fraction of calls delayed."
    )


StatusSpec = int | Literal["4xx", "5xx"]


class PolicyConfig(_Model):
    """One dependency's fully resolved resilience policy."""

    kind: Literal["postgres", "http"] | None = Field(
        default=None,
        description="Which integration and diagnosis apply: postgres, http "
        "or null.",
    )
    failure_threshold: int = Field(
        default=5,
        ge=1,
        le=_MAX_COUNT,
        description="Consecutive counted failures that open it.",
    )
    recovery_timeout: float = Field(
        default=60.0,
        gt=0,
        le=_MAX_SECONDS,
        description="Seconds open before a half-open probe is allowed.",
    )
    success_threshold: int = Field(
        default=1,
        ge=1,
        le=_MAX_COUNT,
        description="Probe successes that close it again.",
    )
    half_open_max_calls: int = Field(
        default=1,
        ge=1,
        le=_MAX_COUNT,
        description="Probes allowed at once while half-open.",
    )
    half_open_max_wait: float | None = Field(
        default=None,
        gt=0,
        le=_MAX_SECONDS,
        description="Seconds a half-open circuit waits for its probes' "
        "verdict before it opens again (a hung probe loses its slot); "
        "null: max(2, timeout or recovery_timeout).",
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        le=_MAX_SECONDS,
        description="Seconds each async attempt may take; null: no limit.",
    )
    critical: bool = Field(
        default=False,
        description="health() is 'down' while this circuit is open.",
    )
    ignore_exceptions: tuple[str, ...] = Field(
        default=(),
        description="Dotted class names (module.Class) that count as a "
        "success and are never retried.",
    )
    record_exceptions: tuple[str, ...] | None = Field(
        default=None,
        description="Dotted class names (module.Class); when set, only "
        "these count as failures.",
    )
    failure_statuses: tuple[StatusSpec, ...] = Field(
        default=(408, 429, "5xx"),
        description="HTTP statuses that count as failures: codes 100-599, "
        "'4xx' or '5xx'.",
    )
    retry: RetryConfig = Field(
        default_factory=RetryConfig,
        description="Retries (tenacity).",
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Free mapping for integrations (host, port, database, "
        "user, base_url...).",
    )
    trip: TripConfig | None = Field(
        default=None,
        description="Also trip on failure or slow-call rates; null: only "
        "consecutive failures.",
    )
    recovery_backoff: RecoveryBackoffConfig | None = Field(
        default=None,
        description="Grow the open time on re-trips; null: constant.",
    )
    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=_MAX_COUNT,
        description="Bulkhead: calls in flight at most; null: unlimited.",
    )
    max_wait: float = Field(
        default=0.0,
        ge=0,
        le=_MAX_SECONDS,
        description="Seconds a call waits for a bulkhead slot before "
        "BulkheadFullError.",
    )
    chaos: ChaosConfig = Field(
        default_factory=ChaosConfig,
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


#: What a storage backend needs beyond the core install: the module it
#: imports and the extra that installs it (``pip install
#: 'sage-resilience[redis]'``).
BACKEND_EXTRAS: Final[dict[str, tuple[str, str]]] = {
    "redis": ("redis", "redis"),
}


def _installed(module: str) -> bool:
    """Whether *module* can be imported (never importing it)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class StorageConfig(_Model):
    """Where circuit state lives."""

    backend: Literal["memory", "sqlite", "redis"] = Field(
        default="memory",
        description="memory (per process), sqlite (path) or redis (url, "
        "namespace).",
    )
    path: str | None = Field(
        default=None, description="SQLite database file (backend sqlite)."
    )
    url: str | None = Field(
        default=None, description="redis://... URL (backend redis)."
    )
    namespace: str = Field(
        default="sage_resilience",
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

    def missing_extra(self) -> str | None:
        """Why the backend cannot run here (its extra is missing), if so.

        Returns:
            The problem, naming the ``pip install`` that fixes it; None
            when the backend's library is installed (or it needs none).

        .. versionadded:: 0.1.0
        """
        needed = BACKEND_EXTRAS.get(self.backend)
        if needed is None or _installed(needed[0]):
            return None
        module, extra = needed
        return (
            f"the {self.backend} backend needs the {module!r} package, "
            f"which is not installed: pip install 'sage-resilience[{extra}]'"
        )


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


def _redis_url_problem(url: str) -> str | None:  # noqa: PLR0911 - one return per problem found
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


class _Variable(Protocol):
    """An environment override, as a configuration reports it."""

    @property
    def variable(self) -> str:
        """The variable's name."""
        ...


class _Source(Protocol):
    """What a loaded configuration was resolved from.

    Attached by the loader (:class:`.resolve._Source`): the document, the
    platform and the environment, able to resolve the policies code
    declares later with the same layers.
    """

    @property
    def pending(self) -> Mapping[str, Sequence[_Variable]]:
        """Environment overrides by the (lower-cased) policy they name."""
        ...

    def resolve(
        self, declared: Mapping[str, Sequence[Declaration]]
    ) -> ResilienceConfig:
        """The configuration resolved again, *declared* included."""
        ...

    def storage_error(self, problem: str) -> ConfigError:
        """*problem* about ``storage.backend``, where it was written."""
        ...


class ResilienceConfig(_Model):
    """A whole, resolved configuration for one platform."""

    version: Literal[1] = 1
    platform: str = "linux"
    path: str | None = Field(
        default=None, description="The file it was loaded from, if any."
    )
    storage: StorageConfig = Field(default_factory=StorageConfig)
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

    def require_extras(self) -> None:
        """Check that the storage backend's library is installed.

        Raises:
            ConfigError: It is not; the message names ``storage.backend``
                (file and line where it was written) and the ``pip
                install`` of the extra.

        .. versionadded:: 0.1.0
        """
        problem = self.storage.missing_extra()
        if problem is None:
            return
        if self._source is not None:
            raise self._source.storage_error(problem)
        raise ConfigError(problem, path=self.path, key="storage.backend")

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
        resolved = source.resolve(declared)
        # Only the declared names change: policies of this object that
        # code does not declare stay as they are (a model_copy keeps its
        # edits).
        policies = dict(self.policies)
        policies.update({name: resolved.policies[name] for name in declared})
        return self.model_copy(update={"policies": policies})

"""Configuration models: what a resolved policy looks like.

The models are the single description of the YAML: validation, defaults and
the JSON Schema (``sage-resilience config schema``) all come from them.
Loading (line numbers, platform and environment merge) lives below them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BackoffConfig",
    "ChaosConfig",
    "PolicyConfig",
    "RecoveryBackoffConfig",
    "ResilienceConfig",
    "RetryConfig",
    "StorageConfig",
    "TripConfig",
]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=False, validate_default=True
    )


class BackoffConfig(_Model):
    """Exponential backoff between attempts, with random jitter."""

    initial: float = Field(0.1, ge=0, description="First wait, seconds.")
    multiplier: float = Field(
        2.0, ge=1, description="Each wait is the previous one times this."
    )
    max: float = Field(10.0, ge=0, description="Longest wait, seconds.")
    jitter: float = Field(
        0.1,
        ge=0,
        description="Up to this many seconds are added at random to each "
        "wait.",
    )


class RetryConfig(_Model):
    """Retries of counted failures (tenacity)."""

    attempts: int = Field(
        1, ge=1, description="Every attempt, the first included; 1: no retry."
    )
    backoff: BackoffConfig = Field(default_factory=BackoffConfig)  # type: ignore[arg-type]
    respect_retry_after: bool = Field(
        default=True,
        description="Wait as long as a 429/503 Retry-After asks (capped by "
        "backoff.max).",
    )
    deadline: float | None = Field(
        None,
        gt=0,
        description="Stop retrying once this many seconds have passed since "
        "the first attempt started.",
    )


class TripConfig(_Model):
    """Trip on failure or slow-call rates over a sliding time window."""

    failure_rate: float | None = Field(None, gt=0, le=1)
    window: float = Field(60.0, gt=0, description="Window length, seconds.")
    minimum_calls: int = Field(20, ge=1)
    slow_call_duration: float | None = Field(None, gt=0)
    slow_call_rate: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _slow_rate_needs_duration(self) -> TripConfig:
        if self.slow_call_rate is not None and self.slow_call_duration is None:
            msg = "slow_call_rate needs slow_call_duration"
            raise ValueError(msg)
        return self


class RecoveryBackoffConfig(_Model):
    """Grow the open time on each re-trip without a stable close."""

    multiplier: float = Field(2.0, ge=1)
    max: float = Field(600.0, gt=0)


class ChaosConfig(_Model):
    """Fault injection for game days; off unless ``enabled``."""

    enabled: bool = False
    failure_rate: float = Field(0.0, ge=0, le=1)
    latency: float = Field(0.0, ge=0, description="Injected delay, seconds.")
    latency_rate: float = Field(0.0, ge=0, le=1)


StatusSpec = int | Literal["4xx", "5xx"]


class PolicyConfig(_Model):
    """One dependency's fully resolved resilience policy."""

    kind: Literal["postgres", "http"] | None = None
    failure_threshold: int = Field(5, ge=1)
    recovery_timeout: float = Field(60.0, gt=0)
    success_threshold: int = Field(1, ge=1)
    half_open_max_calls: int = Field(1, ge=1)
    timeout: float | None = Field(None, gt=0)
    critical: bool = False
    ignore_exceptions: tuple[str, ...] = ()
    record_exceptions: tuple[str, ...] | None = None
    failure_statuses: tuple[StatusSpec, ...] = (408, 429, "5xx")
    retry: RetryConfig = Field(default_factory=RetryConfig)  # type: ignore[arg-type]
    settings: dict[str, Any] = Field(default_factory=dict)
    trip: TripConfig | None = None
    recovery_backoff: RecoveryBackoffConfig | None = None
    max_concurrency: int | None = Field(None, ge=1)
    max_wait: float = Field(0.0, ge=0)
    chaos: ChaosConfig = Field(default_factory=ChaosConfig)  # type: ignore[arg-type]

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

    backend: Literal["memory", "sqlite", "redis"] = "memory"
    path: str | None = None
    url: str | None = None
    namespace: str = "sage_resilience"

    @model_validator(mode="after")
    def _backend_needs_location(self) -> StorageConfig:
        if self.backend == "sqlite" and not self.path:
            msg = "the sqlite backend needs a path"
            raise ValueError(msg)
        if self.backend == "redis" and not self.url:
            msg = "the redis backend needs a url"
            raise ValueError(msg)
        return self


class ResilienceConfig(_Model):
    """A whole, resolved configuration for one platform."""

    version: Literal[1] = 1
    platform: str = "linux"
    path: str | None = Field(
        None, description="The file it was loaded from, if any."
    )
    storage: StorageConfig = Field(default_factory=StorageConfig)  # type: ignore[arg-type]
    policies: dict[str, PolicyConfig] = Field(default_factory=dict)

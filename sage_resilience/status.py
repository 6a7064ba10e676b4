"""Status of every breaker and the service's health.

The shapes are typed: :class:`StatusEntry` (``p.status()``,
``breaker_status()[name]``), :class:`HealthReport` (``health()``),
:data:`State` and :data:`HealthStatus`, so a type checker knows
``health()["status"]`` and flags a misspelt key.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

# typing_extensions: pydantic (FastAPI response models) reads it on 3.11.
from typing_extensions import TypedDict

from sage_resilience._names import CLOSED, OPEN, State
from sage_resilience._registry import current_config, policies
from sage_resilience._stats import StatusEntry
from sage_resilience._window import WindowFigures

__all__ = [
    "HealthReport",
    "HealthStatus",
    "State",
    "StatusEntry",
    "WindowFigures",
    "breaker_status",
    "health",
]

HealthStatus: TypeAlias = Literal["ok", "degraded", "down"]
"""``health()["status"]``."""


class HealthReport(TypedDict):
    """What :func:`health` returns (and ``GET /health`` answers).

    .. versionadded:: 0.1.0
    """

    status: HealthStatus
    platform: str
    breakers: dict[str, StatusEntry]


def breaker_status() -> dict[str, StatusEntry]:
    """The status entry of every policy, by name.

    .. versionadded:: 0.1.0
    """
    return {name: p.status() for name, p in sorted(policies().items())}


def health() -> HealthReport:
    """``{"status": "ok" | "degraded" | "down", "platform", "breakers"}``.

    Down when a ``critical`` policy is open; degraded when any policy is open
    or half-open; ok otherwise.

    .. versionadded:: 0.1.0
    """
    breakers = breaker_status()
    status: HealthStatus = "ok"
    for entry in breakers.values():
        if entry["state"] == CLOSED:
            continue
        if entry["state"] == OPEN and entry["critical"]:
            status = "down"
            break
        status = "degraded"
    return {
        "status": status,
        "platform": current_config().platform,
        "breakers": breakers,
    }

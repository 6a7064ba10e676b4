"""Status of every breaker and the service's health."""

from __future__ import annotations

from typing import Any

from sage_resilience._registry import current_config, policies

__all__ = ["breaker_status", "health"]


def breaker_status() -> dict[str, dict[str, Any]]:
    """The status entry of every policy, by name.

    .. versionadded:: 0.1.0
    """
    return {name: p.status() for name, p in sorted(policies().items())}


def health() -> dict[str, Any]:
    """``{"status": "ok" | "degraded" | "down", "platform", "breakers"}``.

    Down when a ``critical`` policy is open; degraded when any policy is open
    or half-open; ok otherwise.

    .. versionadded:: 0.1.0
    """
    breakers = breaker_status()
    status = "ok"
    for entry in breakers.values():
        if entry["state"] == "closed":
            continue
        if entry["state"] == "open" and entry["critical"]:
            status = "down"
            break
        status = "degraded"
    return {
        "status": status,
        "platform": current_config().platform,
        "breakers": breakers,
    }

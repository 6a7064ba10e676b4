"""Circuit state storage backends, chosen by ``storage:`` in the YAML."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pybreaker

if TYPE_CHECKING:
    from sage_resilience._config import StorageConfig

__all__ = ["make_storage"]


def make_storage(
    config: StorageConfig, name: str
) -> pybreaker.CircuitBreakerStorage:
    """The pybreaker storage for policy *name*."""
    del name
    if config.backend == "memory":
        return pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
    msg = f"storage backend {config.backend!r} is not available yet"
    raise NotImplementedError(msg)

"""sage_resilience.testing: one reset for every piece of process-wide state."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import CollectorRegistry
from sage_resilience import (
    Policy,
    PolicyConfig,
    _attempt,
    _registry,
    _storage,
    configure,
    policy,
    testing,
)
from sage_resilience._config import StorageConfig
from sage_resilience._storage import make_storage
from sage_resilience._window import TICKER
from sage_resilience.metrics import register_metrics


def test_reset_forgets_every_process_wide_state(tmp_path: Path) -> None:
    configure()
    policy("database_connection")
    register_metrics(CollectorRegistry())  # installs the attempt observer
    windowed = Policy("w", PolicyConfig.model_validate({"trip": {}}))
    shared = Policy(
        "s",
        PolicyConfig.model_validate({}),
        storage=make_storage(
            StorageConfig(backend="sqlite", path=str(tmp_path / "s.db")), "s"
        ),
    )
    timed = Policy("t", PolicyConfig.model_validate({"timeout": 5}))

    async def ok() -> str:
        return "ok"

    async def calls() -> None:
        await windowed.acall(ok)
        await shared.acall(ok)
        await timed.acall(ok)  # a timeout: the loop gets a wheel
        assert _attempt._wheels

    asyncio.run(calls())
    assert _registry.configured()
    assert _attempt.attempt_observer is not None
    assert len(TICKER._gates) > 0
    assert _storage._backends

    testing.reset()

    assert not _registry.configured()
    assert not _registry._policies
    assert _attempt.attempt_observer is None
    assert not _attempt._wheels
    assert len(TICKER._gates) == 0
    assert _storage._backends == {}
    # Policies built before keep working on their local state.
    assert asyncio.run(shared.acall(ok)) == "ok"

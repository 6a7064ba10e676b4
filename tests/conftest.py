"""Shared fixtures: a fresh registry and no retry sleeps for every test."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import structlog
from sage_resilience import testing
from structlog.testing import capture_logs

if TYPE_CHECKING:
    from collections.abc import Iterator, MutableMapping


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in (
        "SAGE_RESILIENCE_CONFIG",
        "SAGE_RESILIENCE_PLATFORM",
        "SAGE_RESILIENCE_ADMIN_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)
    testing.reset()
    testing.set_testing(True)
    yield
    testing.set_testing(False)
    testing.reset()
    # The CLI configures structlog for the process (JSON lines to files
    # that pytest closes after the test): undo it.
    structlog.reset_defaults()


@pytest.fixture
def events() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every structlog event logged during the test."""
    with capture_logs() as logs:
        yield logs

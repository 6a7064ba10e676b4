"""The package's background threads: named, daemonic, started at once."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


def start_daemon(target: Callable[[], object], name: str) -> threading.Thread:
    """Run *target* on a started daemon thread ``sage-resilience-{name}``."""
    thread = threading.Thread(
        target=target, name=f"sage-resilience-{name}", daemon=True
    )
    thread.start()
    return thread

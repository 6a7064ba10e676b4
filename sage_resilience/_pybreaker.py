"""pybreaker, imported without importing redis.

pybreaker imports redis at import time for its own ``CircuitRedisStorage``,
which this library does not use (its shared storage has its own Redis
backend); with redis 7 that import alone costs some 90 ms, paid by every
process that imports a policy. So the first import of pybreaker here hides
redis from it, and pybreaker's redis support is restored the first time a
``CircuitRedisStorage`` is built, for code that uses it directly.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

if "pybreaker" in sys.modules or "redis" in sys.modules:
    import pybreaker as pybreaker  # noqa: PLC0414 - re-exported
else:
    sys.modules["redis"] = None  # type: ignore[assignment]
    try:
        import pybreaker as pybreaker  # noqa: PLC0414
    finally:
        del sys.modules["redis"]

__all__ = ["pybreaker"]


def _restore_redis_support() -> None:
    """Give pybreaker the redis names its eager import would have set."""
    if pybreaker.HAS_REDIS_SUPPORT:
        return
    try:
        from redis import Redis  # noqa: PLC0415
        from redis.client import Pipeline  # noqa: PLC0415
        from redis.exceptions import RedisError  # noqa: PLC0415
    except ImportError:
        return
    module: Any = pybreaker
    module.Redis, module.Pipeline, module.RedisError = (
        Redis,
        Pipeline,
        RedisError,
    )
    module.HAS_REDIS_SUPPORT = True


if not pybreaker.HAS_REDIS_SUPPORT:
    _init = pybreaker.CircuitRedisStorage.__init__

    @functools.wraps(_init)
    def _init_with_redis(self: Any, *args: Any, **kwargs: Any) -> None:
        _restore_redis_support()
        _init(self, *args, **kwargs)

    pybreaker.CircuitRedisStorage.__init__ = _init_with_redis  # type: ignore[method-assign]

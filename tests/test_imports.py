"""What importing a policy costs a process: no redis, no structlog.

pybreaker imports redis eagerly for its own Redis storage, which this
library does not use; structlog is only needed once an application has
configured it (then it has imported it). Both are checked in a fresh
interpreter, and pybreaker's Redis storage still works for code that uses
it directly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.support import need_binary
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, sys
from sage_resilience import policy

@policy("database_connection")
def read():
    return 1

print(json.dumps(sorted(m for m in ("redis", "structlog") if m in sys.modules)))
"""


def test_a_policy_imports_neither_redis_nor_structlog() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    assert [] == json.loads(done.stdout)


@pytest.fixture(scope="module")
def redis_server() -> Any:
    binary = need_binary(
        "redis-server", "install it with: apt-get install redis-server"
    )
    with RedisServer(binary) as server:
        yield server


DIRECT = """
import sys
import sage_resilience.exceptions  # pybreaker, imported the library's way
import pybreaker
import redis

storage = pybreaker.CircuitRedisStorage(
    pybreaker.STATE_CLOSED, redis.Redis.from_url(sys.argv[1]), namespace="direct"
)
breaker = pybreaker.CircuitBreaker(fail_max=1, state_storage=storage)
try:
    breaker.call(lambda: 1 / 0)
except (ZeroDivisionError, pybreaker.CircuitBreakerError):
    pass
print(storage.state)
"""


def test_pybreakers_own_redis_storage_still_works(
    redis_server: RedisServer,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", DIRECT, redis_server.url],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    assert "open" == done.stdout.strip()

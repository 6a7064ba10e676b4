"""A wall clock stepped under a running process moves no deadline.

The gate keeps its times on the monotonic clock; only what it shows and
what it shares with a store is on the wall clock. The wall clock is
stepped for real: each scenario runs in a child process under
libfaketime, whose offset file the child rewrites mid-run (only the wall
clock is faked; the monotonic clock is the machine's).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support import unavailable

_LIBFAKETIME = [
    Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
    Path("/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"),
]

#: The child: open a circuit, step the wall clock by STEP seconds, then
#: report what a call gets. It never calls time.sleep (libfaketime breaks
#: it); waiting is done with Event.wait.
_CHILD = """
import json, sys, threading, datetime as dt
from pathlib import Path
from sage_resilience import CircuitOpenError, Policy, PolicyConfig
from sage_resilience._config import StorageConfig
from sage_resilience._storage import make_storage

offsets, backend, step, recovery, db = sys.argv[1:6]
config = PolicyConfig(failure_threshold=1, recovery_timeout=float(recovery))
if backend == "memory":
    p = Policy("dep", config)
else:
    storage = StorageConfig(backend="sqlite", path=db)
    p = Policy("dep", config, storage=make_storage(storage, "dep"),
               storage_name="sqlite")

def fail():
    raise ConnectionError("down")

try:
    p.call(fail)
except ConnectionError:
    pass
Path(offsets).write_text(step + "\\n")  # the wall clock jumps now
threading.Event().wait(0.7)
try:
    p.call(lambda: "ok")
    outcome = "called"
except CircuitOpenError as exc:
    outcome = f"refused retry_after={exc.retry_after:.0f}"
status = p.status()
opened = status["opened_at"]
print(json.dumps({
    "outcome": outcome,
    "state": status["state"],
    "opened_at": opened,
    "wall": dt.datetime.now(dt.UTC).isoformat(),
}))
"""


def _faketime() -> Path:
    for path in _LIBFAKETIME:
        if path.exists():
            return path
    unavailable("libfaketime", "apt-get install faketime")
    raise AssertionError  # unreachable: unavailable() fails or skips


def _run(
    tmp_path: Path, backend: str, step: str, recovery: float
) -> dict[str, str]:
    offsets = tmp_path / "offset"
    offsets.write_text("+0\n")
    env = {
        **os.environ,
        "LD_PRELOAD": str(_faketime()),
        "FAKETIME_TIMESTAMP_FILE": str(offsets),
        "FAKETIME_NO_CACHE": "1",
        "DONT_FAKE_MONOTONIC": "1",
    }
    args = [str(offsets), backend, step, str(recovery)]
    args.append(str(tmp_path / "state.sqlite"))
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_wall_clock_stepped_back_keeps_a_short_open_period_short(
    tmp_path: Path, backend: str
) -> None:
    # Open for 0.3 s; the wall clock goes back an hour meanwhile: the
    # probe still runs 0.3 s later (it used to wait an hour).
    result = _run(tmp_path, backend, "-3600", 0.3)
    assert result["outcome"] == "called", result
    assert result["state"] == "closed"


def test_wall_clock_stepped_forward_does_not_end_a_long_open_period(
    tmp_path: Path,
) -> None:
    # Open for an hour; the wall clock jumps two hours ahead: the circuit
    # stays open for the hour it planned (it used to half-open at once).
    # (With a shared store the deadline is a wall-clock time the fleet
    # agrees on: a process whose clock jumps ahead sees it pass.)
    result = _run(tmp_path, "memory", "+7200", 3600)
    assert result["outcome"].startswith("refused"), result
    retry_after = float(result["outcome"].split("=")[1])
    assert 3590 <= retry_after <= 3600
    assert result["state"] == "open"


def test_shown_times_follow_the_wall_clock(tmp_path: Path) -> None:
    # What status shows is on the wall clock as it reads now: after a
    # two-hour step forward, an opening a moment ago is shown a moment
    # before the new wall-clock time (not two hours before it).
    result = _run(tmp_path, "memory", "+7200", 3600)
    opened = dt.datetime.fromisoformat(result["opened_at"])
    wall = dt.datetime.fromisoformat(result["wall"])
    assert dt.timedelta(0) <= wall - opened < dt.timedelta(seconds=30)

"""Every benchmark runs to its end, on small numbers.

The benchmarks are how performance is shown (README, CHANGELOG), so one
that no longer runs is a broken claim: each is run here as a user would,
``python benchmarks/NAME.py``, with arguments that keep it to seconds. Its
figures are not judged (that would be a timed assertion); only that it
completes without a traceback and prints its report. Slow (some 90 s in
all), marked ``slow``; it runs in CI like every other test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

#: name -> (arguments, a line its report prints, whether its exit code is
#: its verdict on goals measured in time, which a loaded machine may miss).
CASES: dict[str, tuple[list[str], str, bool]] = {
    "peers": (
        ["--calls", "2000", "--trials", "1"],
        "async success path",
        False,
    ),
    "overhead": (
        ["--calls", "2000", "--trials", "1"],
        "Rejection while open",
        False,
    ),
    "window": (
        ["--calls", "2000", "--trials", "1", "--memory-calls", "2000"],
        "Memory retained by a policy with trip:",
        False,
    ),
    "storage": (
        [
            "--calls",
            "2000",
            "--trials",
            "1",
            "--trips",
            "5",
            "--lag-seconds",
            "0.3",
            "--lag-trials",
            "1",
        ],
        "trip propagation to another process",
        False,
    ),
    "flood": (["--seconds", "0.2"], "dead/memory", False),
    "redact": (["--trials", "1"], "describe", False),
    "openai_calls": ([], "hang     after", False),
    "outage": (
        ["--down", "2", "--before", "0.3", "--after", "2.5"],
        "goals for (e)",
        True,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_runs(name: str) -> None:
    arguments, report, judged_on_time = CASES[name]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode in ((0, 1) if judged_on_time else (0,)), (
        done.returncode,
        done.stderr[-2000:],
    )
    assert report in done.stdout, done.stdout[-2000:]


def _logs_benchmark(
    tmp_path: Path, *options: str
) -> subprocess.CompletedProcess[str]:
    """benchmarks/logs.py on 2 MB logs kept in *tmp_path*."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "logs.py"),
            *options,
            "--size-mb",
            "2",
            "--keep",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert 0 == done.returncode, done.stderr[-2000:] + done.stdout[-2000:]
    return done


def test_logs_benchmark_runs(tmp_path: Path) -> None:
    """Two small logs generated, summarized and compared with grep -c."""
    done = _logs_benchmark(tmp_path)
    assert "logs summarize / grep -c (MB/s)" in done.stdout, done.stdout
    assert 2 == len(list(tmp_path.glob("*.jsonl")))


def test_logs_benchmark_shapes_run(tmp_path: Path) -> None:
    """The standard log in three shapes: the same figures in each."""
    done = _logs_benchmark(tmp_path, "--shapes")
    assert "the same figures per breaker" in done.stdout, done.stdout
    assert 3 == len(list(tmp_path.glob("*.jsonl")))

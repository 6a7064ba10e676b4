"""Benchmark ``logs summarize`` against ``grep -c`` (and jq) on the same logs.

Generates two JSON-lines logs of the requested size (default 1 GB each)
the way a Sage service writes them through structlog (request lines,
retries, circuit transitions of four breakers):

* the standard log (98.8 % request lines, 1 % retries, some rejections and
  transitions),
* a log where 99 % of the lines are request lines (--request-share), the
  other 1 % split as in the standard log,

then times, each in a child process on the same file:

* ``sage-resilience logs summarize FILE --format json`` (the whole
  analysis),
* ``grep -c circuit_state_changed FILE`` (one substring, counted),
* ``jq -c 'select(.event=="circuit_state_changed")'`` (only a filter,
  when jq is installed),
* ``wc -l`` (reading the file, for reference),

and prints throughput (MB/s), CPU seconds, peak memory (max RSS of the
child) and the ratio of ``logs summarize``'s MB/s to ``grep -c``'s: the
machine's speed divides out of it.

    python benchmarks/logs.py                  # 1 GB logs
    python benchmarks/logs.py --size-mb 200 --repeat 3
    python benchmarks/logs.py --keep /tmp/logs # keep (and reuse) the logs
    python benchmarks/logs.py --file app.log   # only this log
    python benchmarks/logs.py --shapes --size-mb 100

``--shapes`` times the standard log as three logging stacks write it:
structlog (``event``, canonical ``timestamp``), python-json-logger
(``asctime`` first, ``message``) and ecs-logging (``@timestamp`` first,
``message``, compact), and checks that the three give the same trips.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BREAKERS = (
    "database_connection",
    "memory_save",
    "vectorizer",
    "siliconflow_api",
)
FAILURES = {
    "database_connection": (
        "ConnectionRefusedError: [Errno 111] Connect call failed "
        "('127.0.0.1', {port})"
    ),
    "memory_save": "QueryCanceledError: canceling statement due to "
    "statement timeout ({ms} ms)",
    "vectorizer": "ReadTimeout: timed out after {ms} ms",
    "siliconflow_api": "HTTPStatusError: Server error '503 Service "
    "Unavailable' for url 'https://api.example/v1/chat/completions'",
}
PATHS = ("/api/memories", "/api/search", "/api/chat", "/health", "/api/embed")
NEXT = {"closed": "open", "open": "half-open"}

# The command, as installed; `python -m sage_resilience` runs the same.
OUR_COMMAND = [sys.executable, "-m", "sage_resilience", "logs", "summarize"]

BASELINE_CODE = "import sage_resilience._logs"


# Shares of the lines of the standard log: transitions, retries, rejections
# (the rest are request lines).
SHARES = (0.0005, 0.0095, 0.002)


def generate(
    path: Path, size: int, seed: int = 1, events: float = sum(SHARES)
) -> dict[str, int]:
    """Write a log of about *size* bytes; return what it holds.

    *events* is the share of lines that are resilience events (split as
    in the standard log); the others are request lines.
    """
    rng = random.Random(seed)
    scale = events / sum(SHARES)
    transitions = SHARES[0] * scale
    retries = transitions + SHARES[1] * scale
    rejections = retries + SHARES[2] * scale
    moment = dt.datetime(2026, 11, 27, 20, 0, tzinfo=dt.UTC)
    states = dict.fromkeys(BREAKERS, "closed")
    counts = {"lines": 0, "transitions": 0, "retries": 0}
    written = 0
    batch: list[str] = []
    with path.open("w", encoding="utf-8") as out:
        while written < size:
            moment += dt.timedelta(microseconds=rng.randint(50, 8000))
            ts = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            roll = rng.random()
            breaker = BREAKERS[rng.randrange(4)]
            if roll < transitions:
                old = states[breaker]
                new = NEXT.get(old) or rng.choice(("open", "closed"))
                states[breaker] = new
                event = {
                    "breaker": breaker,
                    "old_state": old,
                    "new_state": new,
                    "reason": "consecutive_failures",
                    "failure_count": 3,
                    "failure_threshold": 3,
                    "recovery_timeout": 30,
                    "recent_failures": [ts, ts, ts],
                    "failure_rate_per_min": 3,
                    "last_failure": FAILURES[breaker].format(
                        port=rng.randint(5432, 5440), ms=rng.randint(1, 9999)
                    ),
                    "last_cause": None,
                    "platform": "linux",
                }
                if old == "open":
                    event["rejected_while_open"] = rng.randint(0, 500)
                event.update(
                    event="circuit_state_changed",
                    level="warning" if new == "open" else "info",
                    logger="sage_resilience",
                    timestamp=ts,
                )
                text = json.dumps(event)
                counts["transitions"] += 1
            elif roll < retries:
                text = (
                    f'{{"breaker": "{breaker}", "attempt": 1, '
                    f'"max_attempts": 3, "wait": {rng.random():.3f}, '
                    '"error": "ConnectError: All connection attempts '
                    'failed", "event": "retry_scheduled", "level": '
                    f'"warning", "logger": "sage_resilience", '
                    f'"timestamp": "{ts}"}}'
                )
                counts["retries"] += 1
            elif roll < rejections:
                text = (
                    f'{{"breaker": "{breaker}", "retry_after": '
                    f'{rng.random() * 30:.2f}, "event": "call_rejected", '
                    '"level": "info", "logger": "sage_resilience", '
                    f'"timestamp": "{ts}"}}'
                )
            else:
                text = (
                    f'{{"method": "GET", "path": "{PATHS[rng.randrange(5)]}",'
                    f' "status": 200, "duration_ms": {rng.random() * 90:.2f},'
                    f' "request_id": "{rng.getrandbits(128):032x}", '
                    '"user_agent": "sage-client/1.4", "event": '
                    '"request_finished", "level": "info", "logger": '
                    f'"sage.api", "timestamp": "{ts}"}}'
                )
            batch.append(text)
            written += len(text) + 1
            if len(batch) >= 20_000:
                out.write("\n".join(batch) + "\n")
                counts["lines"] += len(batch)
                batch.clear()
        if batch:
            out.write("\n".join(batch) + "\n")
            counts["lines"] += len(batch)
    return counts


def _hwm_kb(pid: int, exe: str) -> int | None:
    """VmHWM of *pid* once it runs *exe* (after exec), else None."""
    try:
        if os.path.realpath(f"/proc/{pid}/exe") != exe:
            return None
        with Path(f"/proc/{pid}/status").open(encoding="ascii") as status:
            for entry in status:
                if entry.startswith("VmHWM:"):
                    return int(entry.split()[1])
    except OSError:
        return None
    return None


def measure(argv: list[str]) -> tuple[float, float, float, int, str]:
    """Run *argv*: (seconds, CPU seconds, peak RSS MB, exit code, stderr).

    Peak memory is the child's VmHWM read from /proc while it runs (after
    exec). getrusage's ru_maxrss of a child is not used alone: it keeps the
    high-water mark of the image before exec, i.e. this (larger) process
    at fork time. It is the fallback for children too quick to sample.
    """
    exe = os.path.realpath(shutil.which(argv[0]) or argv[0])
    # Output to a file, not /dev/null: GNU grep stops at the first match
    # when its output is /dev/null.
    with (
        tempfile.TemporaryFile() as output,
        tempfile.TemporaryFile() as errors,
    ):
        started = time.perf_counter()
        child = subprocess.Popen(argv, stdout=output, stderr=errors)
        peak_kb = 0
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            peak_kb = max(peak_kb, _hwm_kb(child.pid, exe) or 0)
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        message = errors.read().decode(errors="replace").strip()
    if not peak_kb:
        peak_kb = usage.ru_maxrss
    cpu = usage.ru_utime + usage.ru_stime
    return elapsed, cpu, peak_kb / 1024, child.returncode, message


def _best(argv: list[str], repeat: int) -> tuple[float, float, float]:
    """(seconds, CPU seconds, peak RSS MB): the fastest of *repeat* runs."""
    best = None
    for _ in range(repeat):
        result = measure(argv)
        if result[3] != 0:
            print(
                f"{argv[0]} failed (exit {result[3]}): {result[4]}",
                file=sys.stderr,
            )
        if best is None or result[0] < best[0]:
            best = result
    assert best is not None
    return best[0], best[1], best[2]


def bench(path: Path, repeat: int) -> dict[str, tuple[float, float, float]]:
    """Time every tool on *path*: name -> (seconds, CPU s, peak RSS MB)."""
    runs: list[tuple[str, list[str]]] = [
        ("wc -l (read only)", ["wc", "-l", str(path)]),
        (
            "grep -c circuit_state_changed",
            ["grep", "-c", "circuit_state_changed", str(path)],
        ),
        (
            "sage-resilience logs summarize",
            [*OUR_COMMAND, str(path), "--format", "json"],
        ),
    ]
    jq = shutil.which("jq")
    if jq:
        runs.append(
            (
                "jq select(circuit_state_changed)",
                [
                    jq,
                    "-c",
                    'select(.event=="circuit_state_changed")',
                    str(path),
                ],
            )
        )
    return {name: _best(argv, repeat) for name, argv in runs}


def report(path: Path, rows: dict[str, tuple[float, float, float]]) -> float:
    """Print one log's table; return summarize's MB/s over grep -c's."""
    size_mb = path.stat().st_size / 1e6
    print(f"\nlog: {size_mb:,.0f} MB ({path.name})")
    print(
        f"{'tool':34} {'seconds':>8} {'MB/s':>8} {'CPU s':>7} {'peak RSS MB':>12}"
    )
    for name, (seconds, cpu, rss) in rows.items():
        print(
            f"{name:34} {seconds:8.2f} {size_mb / seconds:8.1f} {cpu:7.2f} {rss:12.1f}"
        )
    ours = rows["sage-resilience logs summarize"]
    grep = rows["grep -c circuit_state_changed"]
    ratio = grep[0] / ours[0]
    print(
        f"logs summarize: {size_mb / ours[0]:.0f} MB/s, {ratio:.2f} x grep -c "
        f"({size_mb / grep[0]:.0f} MB/s); peak memory goal < 100 MB: "
        f"{'met' if ours[2] < 100 else 'MISSED'}"
    )
    return ratio


#: --shapes: the other logging stacks, as they write the standard log.
SHAPES = ("python-json-logger", "ecs-logging")


def _reshaped(entry: dict[str, object], shape: str) -> str:
    """One structlog line's entry as *shape* writes the same event."""
    stamp = str(entry.pop("timestamp"))
    event, level, name = (
        entry.pop("event"),
        entry.pop("level"),
        entry.pop("logger"),
    )
    when = dt.datetime.fromisoformat(stamp)
    if shape == "python-json-logger":  # logging's asctime: local, ms
        asctime = (
            when.strftime("%Y-%m-%d %H:%M:%S,")
            + f"{when.microsecond // 1000:03d}"
        )
        return json.dumps(
            {
                "asctime": asctime,
                "levelname": str(level).upper(),
                "name": name,
                "message": event,
                **entry,
            }
        )
    at = (
        when.strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{when.microsecond // 1000:03d}Z"
    )
    return json.dumps(
        {
            "@timestamp": at,
            "log.level": level,
            "message": event,
            "log.logger": name,
            **entry,
        },
        separators=(",", ":"),
    )


def reshape(source: Path, target: Path, shape: str) -> None:
    """Write *source* (a structlog log) as the logging stack *shape*."""
    with (
        source.open(encoding="utf-8") as lines,
        target.open("w", encoding="utf-8") as out,
    ):
        batch: list[str] = []
        for line in lines:
            batch.append(_reshaped(json.loads(line), shape))
            if len(batch) >= 20_000:
                out.write("\n".join(batch) + "\n")
                batch.clear()
        if batch:
            out.write("\n".join(batch) + "\n")


#: What --shapes compares: every figure but the times, which the other
#: stacks write to the millisecond (compared within TIME_TOLERANCE).
FIGURES = (
    "trips",
    "final_state",
    "rejected",
    "retries_scheduled",
    "retries_exhausted",
    "top_causes",
)
TIME_TOLERANCE = 0.01


def figures(path: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    """``logs summarize --format json`` on *path*: lines, and per breaker
    its figures and total time open."""
    done = subprocess.run(
        [*OUR_COMMAND, str(path), "--format", "json"],
        capture_output=True,
        check=True,
    )
    report = json.loads(done.stdout)
    return report["lines"], {
        name: {key: entry[key] for key in (*FIGURES, "time_open_total_s")}
        for name, entry in report["breakers"].items()
    }


def same_figures(
    one: tuple[int, dict[str, dict[str, Any]]],
    other: tuple[int, dict[str, dict[str, Any]]],
) -> bool:
    """The same lines, breakers and figures; times within the tolerance."""
    if one[0] != other[0] or one[1].keys() != other[1].keys():
        return False
    for name, mine in one[1].items():
        theirs = other[1][name]
        if any(mine[key] != theirs[key] for key in FIGURES):
            return False
        gap = float(mine["time_open_total_s"]) - float(
            theirs["time_open_total_s"]
        )
        if abs(gap) > TIME_TOLERANCE:
            return False
    return True


def _logs(args: argparse.Namespace, directory: Path) -> list[Path]:
    """The logs to time, generated when missing."""
    if args.file is not None:
        wanted = [(args.file, sum(SHARES))]
    else:
        wanted = [
            (directory / f"standard-{args.size_mb}mb.jsonl", sum(SHARES)),
            (
                directory / f"requests-{args.size_mb}mb.jsonl",
                1 - args.request_share,
            ),
        ]
    if args.shapes:  # the standard log only, in three shapes below
        wanted = wanted[:1]
    for path, events in wanted:
        if path.exists():
            continue
        started = time.perf_counter()
        counts = generate(path, args.size_mb * 1024 * 1024, events=events)
        print(
            f"generated {path} in {time.perf_counter() - started:.1f}s: "
            f"{counts['lines']:,} lines, {counts['transitions']:,} "
            f"transitions, {counts['retries']:,} retries",
            file=sys.stderr,
        )
    paths = [path for path, _ in wanted]
    if args.shapes:  # the standard log, as the other stacks write it
        standard = paths[0]
        paths = [standard]
        for shape in SHAPES:
            target = standard.with_name(f"{shape}-{standard.name}")
            if not target.exists():
                reshape(standard, target, shape)
            paths.append(target)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size-mb", type=int, default=1024, help="size of each log"
    )
    parser.add_argument("--repeat", type=int, default=1, help="best of N")
    parser.add_argument(
        "--request-share",
        type=float,
        default=0.99,
        help="share of request lines in the second log (default 0.99)",
    )
    parser.add_argument(
        "--keep", type=Path, help="keep (and reuse) the logs in this directory"
    )
    parser.add_argument(
        "--file", type=Path, help="time only this log (generated if missing)"
    )
    parser.add_argument(
        "--shapes",
        action="store_true",
        help="the standard log as structlog, python-json-logger and "
        "ecs-logging write it (instead of the 99 %% requests log)",
    )
    args = parser.parse_args()
    if not shutil.which("jq"):
        print("jq not found (apt-get install jq): not timed", file=sys.stderr)

    directory = args.keep or Path(tempfile.mkdtemp(prefix="sage-logs-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        paths = _logs(args, directory)
        ratios = [report(path, bench(path, args.repeat)) for path in paths]
        if args.shapes:
            found = [figures(path) for path in paths]
            same = all(same_figures(found[0], other) for other in found[1:])
            total = sum(int(entry["trips"]) for entry in found[0][1].values())
            print(
                f"\nshapes: structlog, {', '.join(SHAPES)}: {total} trips; "
                f"{'the same' if same else 'NOT the same'} figures per breaker"
            )
            if not same:
                return 1
        baseline_rss = measure([sys.executable, "-c", BASELINE_CODE])[2]
        print(
            f"\nbest of {args.repeat}; python + import sage_resilience alone: "
            f"{baseline_rss:.1f} MB"
        )
        print(
            "logs summarize / grep -c (MB/s): "
            + ", ".join(f"{ratio:.2f}" for ratio in ratios)
        )
    finally:
        if args.keep is None:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Tests for log analysis: ``sage-resilience logs summarize`` (_logs, cli.logs)."""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import io
import json
import logging
import random
import re
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ecs_logging
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pythonjsonlogger.json import JsonFormatter
from sage_resilience import _logs, _terminal
from sage_resilience._logs import model as logs_model
from sage_resilience._logs import (
    normalise_cause,
    parse_time,
    parse_timestamp,
    render_html,
    render_table,
    summarize,
)
from sage_resilience._logs import read as logs_read
from sage_resilience._logs import times as logs_times
from sage_resilience.cli.logs import add_summarize_arguments, summarize_command
from tests.support import need_binary

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

BASE = dt.datetime(2026, 11, 27, 22, 0, tzinfo=dt.UTC)

CAUSE_DB = (
    "ConnectionRefusedError: [Errno <n>] Connect call failed ('<ip>', <n>)"
)
CAUSE_API = "HTTPStatusError: Server error '<str>' for url '<str>'"


def at(seconds: float) -> str:
    """Canonical structlog timestamp BASE + seconds."""
    moment = BASE + dt.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def line(seconds: float | None, event: str, **keys: Any) -> str:
    """One JSON line the way structlog's JSONRenderer writes it."""
    data: dict[str, Any] = dict(keys)
    data["event"] = event
    data["level"] = "info"
    data["logger"] = "sage_resilience"
    if seconds is not None:
        data["timestamp"] = at(seconds)
    return json.dumps(data)


def change(
    seconds: float,
    breaker: str,
    old: str,
    new: str,
    *,
    rejected: int | None = None,
    last_failure: str | None = None,
    **keys: Any,
) -> str:
    """A circuit_state_changed line with the contract's keys."""
    data: dict[str, Any] = {
        "breaker": breaker,
        "old_state": old,
        "new_state": new,
        "reason": "consecutive_failures" if new == "open" else "x",
        "failure_count": 3,
        "failure_threshold": 3,
        "recovery_timeout": 30,
        "recent_failures": [at(seconds)],
        "failure_rate_per_min": 3,
        "last_failure": last_failure,
        "last_cause": None,
        "platform": "linux",
    }
    if rejected is not None:
        data["rejected_while_open"] = rejected
    data.update(keys)
    return line(seconds, "circuit_state_changed", **data)


REFUSED_1 = (
    "ConnectionRefusedError: [Errno 111] Connect call failed "
    "('127.0.0.1', 5432)"
)
REFUSED_2 = (
    "ConnectionRefusedError: [Errno 111] Connect call failed "
    "('10.0.0.7', 6432)"
)
HTTP_503 = (
    "HTTPStatusError: Server error '503 Service Unavailable' for url "
    "'https://api.example/v1/chat'\nFor more information check: "
    "https://developer.example/503"
)

# The reference log: every number in EXPECTED is worked out by hand.
REFERENCE = [
    line(0, "service_started", version="1.0"),  # 1: start of the log
    "INFO:     Uvicorn running on 0.0.0.0:8000",  # 2: skipped, not JSON
    change(
        10, "database_connection", "closed", "open", last_failure=REFUSED_1
    ),
    line(
        11,
        "retry_scheduled",
        breaker="database_connection",
        attempt=1,
        max_attempts=3,
        wait=0.2,
        error="ConnectionRefusedError: ...",
    ),
    line(12, "call_rejected", breaker="database_connection", retry_after=28),
    change(40, "database_connection", "open", "half-open", rejected=7),
    change(
        41, "database_connection", "half-open", "open", last_failure=REFUSED_2
    ),
    change(101, "database_connection", "open", "half-open", rejected=3),
    change(102, "database_connection", "half-open", "closed"),
    line(
        110,
        "retry_scheduled",
        breaker="database_connection",
        attempt=1,
        max_attempts=3,
        wait=0.21,
        error="x",
    ),
    line(
        111,
        "retry_scheduled",
        breaker="database_connection",
        attempt=2,
        max_attempts=3,
        wait=0.4,
        error="x",
    ),
    line(
        112,
        "retry_exhausted",
        breaker="database_connection",
        attempts=3,
        error="x",
    ),
    change(300, "siliconflow_api", "closed", "open", last_failure=HTTP_503),
    line(600, "request_finished", path="/api/chat", status=503),  # 14: end
]

EXPECTED = {
    "lines": 14,
    "skipped": 1,
    "skipped_examples": [{"line": 2, "reason": "not JSON"}],
    "breakers": {
        "database_connection": {
            "trips": 2,
            "time_open_total_s": 90.0,
            "longest_open_s": 60.0,
            "final_state": "closed",
            "rejected": 10,
            "retries_scheduled": 3,
            "retries_exhausted": 1,
            "flapping": False,
            "top_causes": [{"cause": CAUSE_DB, "count": 2}],
        },
        "siliconflow_api": {
            "trips": 1,
            "time_open_total_s": 300.0,
            "longest_open_s": 300.0,
            "final_state": "open",
            "rejected": 0,
            "retries_scheduled": 0,
            "retries_exhausted": 0,
            "flapping": False,
            "top_causes": [{"cause": CAUSE_API, "count": 1}],
        },
    },
    "timeline": [
        {
            "time": "2026-11-27T22:00:10Z",
            "breaker": "database_connection",
            "old_state": "closed",
            "new_state": "open",
        },
        {
            "time": "2026-11-27T22:00:40Z",
            "breaker": "database_connection",
            "old_state": "open",
            "new_state": "half-open",
        },
        {
            "time": "2026-11-27T22:00:41Z",
            "breaker": "database_connection",
            "old_state": "half-open",
            "new_state": "open",
        },
        {
            "time": "2026-11-27T22:01:41Z",
            "breaker": "database_connection",
            "old_state": "open",
            "new_state": "half-open",
        },
        {
            "time": "2026-11-27T22:01:42Z",
            "breaker": "database_connection",
            "old_state": "half-open",
            "new_state": "closed",
        },
        {
            "time": "2026-11-27T22:05:00Z",
            "breaker": "siliconflow_api",
            "old_state": "closed",
            "new_state": "open",
        },
    ],
}


def text_of(lines: Iterable[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def summary_of(*files: bytes | list[str], **options: Any) -> _logs.Summary:
    """summarize() over in-memory files named a.log, b.log, ..."""
    sources = []
    for index, content in enumerate(files):
        data = content if isinstance(content, bytes) else text_of(content)
        sources.append((f"{'abcdef'[index]}.log", io.BytesIO(data)))
    return summarize(sources, **options)


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(prog="summarize")
    add_summarize_arguments(result)
    return result


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple:
    """summarize_command(argv) -> (exit code, stdout, stderr)."""
    code = summarize_command(parser().parse_args(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write(path: Path, lines: Iterable[str]) -> str:
    path.write_bytes(text_of(lines))
    return str(path)


class TestParseTimestamp:
    """Every timestamp form the logs may use."""

    EXPECTED_US = 1_795_817_109_123_456  # 2026-11-27T22:05:09.123456Z

    @pytest.mark.parametrize(
        "value",
        [
            "2026-11-27T22:05:09.123456Z",
            "2026-11-27T22:05:09.123456z",
            "2026-11-27T22:05:09.123456+00:00",
            "2026-11-27T23:05:09.123456+01:00",
            "2026-11-27T22:05:09.123456",  # naive means UTC
            "2026-11-27 22:05:09.123456",
            1_795_817_109.123456,
            "1795817109.123456",
            b"2026-11-27T22:05:09.123456Z",
        ],
    )
    def test_forms(self, value: object) -> None:
        """ISO-8601 with/without zone and epoch seconds give the same time."""
        assert self.EXPECTED_US == parse_timestamp(value)

    def test_epoch_ms_us_ns(self) -> None:
        """Epoch milliseconds, microseconds, nanoseconds told by size."""
        expected = 1_795_817_109_123_000
        assert expected == parse_timestamp(1_795_817_109_123)
        assert expected == parse_timestamp("1795817109123")
        assert expected == parse_timestamp(1_795_817_109_123_000)
        assert expected == parse_timestamp(1_795_817_109_123_000_000)

    @pytest.mark.parametrize(
        "value",
        [None, True, "", "yesterday", "2026-13-45T00:00:00Z", 12.5, [1], {}],
    )
    def test_not_timestamps(self, value: object) -> None:
        """Garbage, booleans and durations (small numbers) are refused."""
        assert parse_timestamp(value) is None


class TestParseTime:
    """--since/--until values."""

    NOW = 1_795_817_109.0

    @pytest.mark.parametrize(
        ("text", "seconds_ago"),
        [("2h", 7200), ("30m", 1800), ("1h30m", 5400), ("1d ago", 86400)],
    )
    def test_relative(self, text: str, seconds_ago: int) -> None:
        """Relative times count back from now."""
        expected = round((self.NOW - seconds_ago) * 1_000_000)
        assert expected == parse_time(text, now=self.NOW)

    def test_absolute_and_now(self) -> None:
        """Absolute forms are the timestamp forms; now is now."""
        assert parse_timestamp("2026-11-27T22:00Z") == parse_time(
            "2026-11-27T22:00Z", now=self.NOW
        )
        assert round(self.NOW * 1_000_000) == parse_time("now", now=self.NOW)

    def test_invalid(self) -> None:
        """A value that is no time raises ValueError naming it."""
        with pytest.raises(ValueError, match="last night"):
            parse_time("last night")


class TestNormaliseCause:
    """Root causes group failures that differ only in details."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (REFUSED_1, CAUSE_DB),
            (REFUSED_2, CAUSE_DB),
            (HTTP_503, CAUSE_API),
            (
                (
                    "TimeoutError: request 3f2a9c1e-1111-4222-8333-123456789abc "
                    "took 30.5s at 0x7f3a2b"
                ),
                "TimeoutError: request <uuid> took <n>s at <hex>",
            ),
            (
                'UndefinedTableError: relation "users" does not exist',
                'UndefinedTableError: relation "<str>" does not exist',
            ),
            (
                "OSError: Connect call failed ('::1', 5432, 0, 0)",
                "OSError: Connect call failed ('<ip>', <n>, <n>, <n>)",
            ),
            (
                "ConnectError: [fe80::1%eth0]:443 down, id deadbeef01",
                "ConnectError: <ip> down, id <hex>",
            ),
        ],
    )
    def test_normalised(self, text: str, expected: str) -> None:
        """Numbers, ids, quoted strings, addresses and UUIDs are hidden."""
        assert expected == normalise_cause(text)

    def test_secrets_are_redacted(self) -> None:
        """A password in a DSN never reaches the report."""
        cause = normalise_cause(
            "OSError: cannot reach postgresql://sage:hunter2@db/sage"
        )
        assert "hunter2" not in cause


class TestMetrics:
    """Each metric of the reference log, worked out by hand."""

    def test_reference_log(self) -> None:
        """The JSON output has exactly the contract's shape and numbers."""
        assert EXPECTED == summary_of(REFERENCE).to_json()

    def test_still_open_counts_to_last_line(self) -> None:
        """A circuit open at the end is open until the last timestamp."""
        log = [
            change(0, "api", "closed", "open"),
            line(250.5, "request_finished"),
            line(100, "request_finished"),  # out of order: not the end
        ]
        breaker = summary_of(log).breakers["api"]
        assert (250.5, 250.5, "open") == (
            breaker.time_open_total_s,
            breaker.longest_open_s,
            breaker.final_state,
        )

    def test_half_open_is_not_open_time(self) -> None:
        """Only time in state open counts; reopening from half-open trips."""
        log = [
            change(0, "db", "closed", "open"),
            change(10, "db", "open", "half-open"),
            change(100, "db", "half-open", "open"),
            change(105, "db", "open", "half-open"),
            change(106, "db", "half-open", "closed"),
        ]
        breaker = summary_of(log).breakers["db"]
        assert (2, 15.0, 10.0) == (
            breaker.trips,
            breaker.time_open_total_s,
            breaker.longest_open_s,
        )

    def test_log_starting_mid_outage(self) -> None:
        """An open circuit at the start counts from the first line."""
        log = [
            line(0, "service_started"),
            change(20, "db", "open", "half-open", rejected=4),
            change(21, "db", "half-open", "closed"),
        ]
        breaker = summary_of(log).breakers["db"]
        assert (0, 20.0, 4) == (
            breaker.trips,
            breaker.time_open_total_s,
            breaker.rejected,
        )

    def test_only_retries(self) -> None:
        """A breaker with retries but no transition is reported closed."""
        log = [
            line(1, "retry_scheduled", breaker="api", attempt=1, wait=1.0),
            line(2, "retry_exhausted", breaker="api", attempts=2),
        ]
        assert {
            "trips": 0,
            "time_open_total_s": 0.0,
            "longest_open_s": 0.0,
            "final_state": "closed",
            "rejected": 0,
            "retries_scheduled": 1,
            "retries_exhausted": 1,
            "flapping": False,
            "top_causes": [],
        } == summary_of(log).to_json()["breakers"]["api"]

    def test_a_nearby_copy_of_an_old_line_counts_once(self) -> None:
        """A duplicate a few lines away is recognised even when a line in
        between is minutes newer (the two-minute horizon alone missed it)."""
        log = [
            line(1, "retry_scheduled", breaker="api", attempt=1, wait=1.0),
            line(300, "retry_scheduled", breaker="api", attempt=2, wait=1.0),
            line(1, "retry_scheduled", breaker="api", attempt=1, wait=1.0),
        ]
        breaker = summary_of(log).to_json()["breakers"]["api"]
        assert 2 == breaker["retries_scheduled"]

    def test_top_causes_sorted_and_capped(self) -> None:
        """At most five causes, most frequent first, ties by name."""
        log = []
        seconds = 0
        for number, count in enumerate([1, 3, 2, 1, 1, 1, 4]):
            for _ in range(count):
                log.append(
                    change(
                        seconds,
                        "db",
                        "closed",
                        "open",
                        last_failure=f"Error{number}: failed after {seconds}s",
                    )
                )
                log.append(change(seconds + 1, "db", "open", "closed"))
                seconds += 1000
        causes = summary_of(log).to_json()["breakers"]["db"]["top_causes"]
        assert [
            {"cause": "Error6: failed after <n>s", "count": 4},
            {"cause": "Error1: failed after <n>s", "count": 3},
            {"cause": "Error2: failed after <n>s", "count": 2},
            {"cause": "Error0: failed after <n>s", "count": 1},
            {"cause": "Error3: failed after <n>s", "count": 1},
        ] == causes

    def test_forced_and_unknown_causes(self) -> None:
        """A forced open and a trip without last_failure still have a cause."""
        log = [
            change(0, "db", "closed", "open", reason="forced"),
            change(1, "db", "open", "closed"),
            change(2, "db", "closed", "open", last_cause="pg_refused"),
            change(3, "db", "open", "closed"),
            change(4, "db", "closed", "open"),
        ]
        causes = summary_of(log).to_json()["breakers"]["db"]["top_causes"]
        assert [
            {"cause": "(forced open)", "count": 1},
            {"cause": "(pg_refused)", "count": 1},
            {"cause": "(unknown)", "count": 1},
        ] == causes

    def test_state_spellings(self) -> None:
        """half_open and HALF-OPEN mean half-open."""
        log = [
            change(0, "db", "CLOSED", "OPEN"),
            change(5, "db", "open", "half_open"),
            change(6, "db", "HALF_OPEN", "open"),
        ]
        summary = summary_of(log)
        assert ["open", "half-open", "open"] == [
            t["new_state"] for t in summary.to_json()["timeline"]
        ]
        assert 2 == summary.breakers["db"].trips


class TestFlapping:
    """Flapping: N trips within a window (default 3 in 10 minutes)."""

    @staticmethod
    def trips_at(*seconds: float) -> list[str]:
        log = []
        for second in seconds:
            log.append(change(second, "db", "closed", "open"))
            log.append(change(second + 1, "db", "open", "closed"))
        return log

    def test_default_three_in_ten_minutes(self) -> None:
        """Three trips 600 s apart end to end flap; 601 s do not."""
        assert summary_of(self.trips_at(0, 300, 600)).breakers["db"].flapping
        assert (
            not summary_of(self.trips_at(0, 300, 601)).breakers["db"].flapping
        )

    def test_configurable(self) -> None:
        """Both the count and the window can be set."""
        log = self.trips_at(0, 50)
        assert not summary_of(log).breakers["db"].flapping
        assert summary_of(log, flapping_trips=2).breakers["db"].flapping
        assert (
            not summary_of(log, flapping_trips=2, flapping_window=49)
            .breakers["db"]
            .flapping
        )

    def test_cli_options(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--flapping-trips/--flapping-window reach the analysis."""
        path = write(tmp_path / "a.log", self.trips_at(0, 100))
        argv = [path, "--format", "json", "--flapping-trips", "2"]
        code, out, _ = run([*argv, "--flapping-window", "120"], capsys)
        assert (0, True) == (
            code,
            json.loads(out)["breakers"]["db"]["flapping"],
        )
        code, out, _ = run([*argv, "--flapping-window", "60"], capsys)
        assert (0, False) == (
            code,
            json.loads(out)["breakers"]["db"]["flapping"],
        )


class TestInputs:
    """Compressed input, stdin, several files, disorder, duplicates."""

    def test_gzip_detected_by_magic(self, tmp_path: Path) -> None:
        """A gzip file named .log is read like the plain one."""
        data = gzip.compress(text_of(REFERENCE))
        assert EXPECTED == summary_of(data).to_json()
        path = tmp_path / "app.log"
        path.write_bytes(data)
        with path.open("rb") as stream:
            assert EXPECTED == summarize([("x", stream)]).to_json()

    def test_concatenated_gzip_members(self) -> None:
        """cat a.gz b.gz is valid gzip and reads as both."""
        data = gzip.compress(text_of(REFERENCE[:7])) + gzip.compress(
            text_of(REFERENCE[7:])
        )
        assert EXPECTED == summary_of(data).to_json()

    def test_truncated_gzip_keeps_what_was_read(self) -> None:
        """A cut gzip stream is used up to the cut and reported."""
        big = [line(i, "request_finished", n=i) for i in range(2000)]
        log = [change(0.5, "db", "closed", "open"), *big]
        data = gzip.compress(text_of(log))
        summary = summary_of(data[: len(data) // 2])
        assert "db" in summary.breakers
        assert "truncated gzip data" == summary.skipped_examples[-1].reason

    def test_corrupt_gzip(self) -> None:
        """Garbage after a gzip header is reported, not raised."""
        data = gzip.compress(text_of(REFERENCE))
        corrupt = data[:10] + b"\xff" * 40 + data[50:]
        summary = summary_of(corrupt)
        assert summary.skipped >= 1
        assert summary.skipped_examples[-1].reason.startswith("corrupt gzip")

    def test_stdin(
        self,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """FILE - reads stdin, gzip or not."""
        for data in (text_of(REFERENCE), gzip.compress(text_of(REFERENCE))):
            stdin = io.TextIOWrapper(io.BytesIO(data))
            monkeypatch.setattr(sys, "stdin", stdin)
            code, out, err = run(["-", "--format", "json"], capsys)
            assert (0, EXPECTED, "") == (code, json.loads(out), err)

    def test_files_in_any_order(self, tmp_path: Path) -> None:
        """Files given newest first are merged in time order."""
        first = REFERENCE[:8]
        second = REFERENCE[8:]
        forward = summary_of(first, second).to_json()
        backward = summary_of(second, first).to_json()
        expected = dict(EXPECTED)
        expected["skipped_examples"] = [
            {"line": 2, "reason": "not JSON", "file": "a.log"}
        ]
        assert expected == forward
        backward["skipped_examples"] = forward["skipped_examples"]
        assert forward == backward

    def test_skipped_examples_in_time_order_of_files(self) -> None:
        """Examples come from the earliest file first, whatever argv says."""
        late = [
            line(500, "x"),
            "late garbage",
            change(501, "a", "closed", "open"),
        ]
        early = [line(0, "x"), "early garbage"]
        summary = summary_of(late, early)
        assert [("b.log", 2), ("a.log", 2)] == [
            (e.file, e.line) for e in summary.skipped_examples
        ]

    def test_duplicates_counted_once(self) -> None:
        """Repeated lines and a file given twice change nothing."""
        doubled = []
        for entry in REFERENCE:
            doubled += [entry, entry] if "event" in entry else [entry]
        summary = summary_of(doubled).to_json()
        assert EXPECTED["breakers"] == summary["breakers"]
        assert EXPECTED["timeline"] == summary["timeline"]
        twice = summary_of(REFERENCE, REFERENCE).to_json()
        assert EXPECTED["breakers"] == twice["breakers"]
        assert EXPECTED["timeline"] == twice["timeline"]
        assert 28 == twice["lines"]

    def test_lines_out_of_order(self) -> None:
        """Shuffled lines give the same analysis."""
        shuffled = REFERENCE[:]
        random.Random(7).shuffle(shuffled)
        summary = summary_of(shuffled).to_json()
        assert EXPECTED["breakers"] == summary["breakers"]
        assert EXPECTED["timeline"] == summary["timeline"]

    def test_timestamp_keys_and_forms(self) -> None:
        """time/ts keys, epoch numbers, offsets and compact JSON."""
        start = (BASE - logs_times._EPOCH).total_seconds()
        log = [
            json.dumps({"event": "boot", "ts": start}, separators=(",", ":")),
            json.dumps(
                {
                    "event": "circuit_state_changed",
                    "breaker": "db",
                    "old_state": "closed",
                    "new_state": "open",
                    "time": int((start + 10) * 1000),  # epoch ms
                }
            ),
            json.dumps(
                {
                    "event": "circuit_state_changed",
                    "breaker": "db",
                    "old_state": "open",
                    "new_state": "closed",
                    "timestamp": "2026-11-27T23:00:40+01:00",
                },
                separators=(",", ":"),
            ),
            json.dumps({"event": "bye", "timestamp": str(start + 100)}),
        ]
        summary = summary_of(log)
        assert (30.0, "closed") == (
            summary.breakers["db"].time_open_total_s,
            summary.breakers["db"].final_state,
        )
        assert (start + 100) * 1_000_000 == summary.end_us

    def test_crlf_and_blank_lines(self) -> None:
        """Windows line ends are fine; blank lines are not 'skipped'."""
        data = ("\r\n\r\n".join(REFERENCE) + "\r\n").encode()
        summary = summary_of(data).to_json()
        assert (27, 1) == (summary["lines"], summary["skipped"])
        assert EXPECTED["breakers"] == summary["breakers"]

    def test_no_final_newline(self) -> None:
        """The last line counts even without a newline."""
        data = "\n".join(REFERENCE).encode()
        assert EXPECTED == summary_of(data).to_json()

    def test_memory_does_not_grow_with_the_log(self) -> None:
        """Reading 30 MB of log keeps well under 8 MB of Python memory."""

        block = text_of(
            [
                change(0, "db", "closed", "open"),
                *(
                    line(i, "request_finished", path="/a" * 320, i=i)
                    for i in range(1, 299)
                ),
                change(299, "db", "open", "closed"),
            ]
        )

        class Repeated(io.RawIOBase):
            """The same 300 lines again and again, made on demand."""

            def __init__(self, times: int) -> None:
                self.left = times
                self.pending = memoryview(b"")

            def readable(self) -> bool:
                return True

            def readinto(self, buffer: Any) -> int:
                if not self.pending and self.left:
                    self.left -= 1
                    self.pending = memoryview(block)
                size = min(len(buffer), len(self.pending))
                buffer[:size] = self.pending[:size]
                self.pending = self.pending[size:]
                return size

        stream = Repeated(150)
        assert len(block) * 150 > 30_000_000
        tracemalloc.start()
        try:
            summary = summarize([("gen", io.BufferedReader(stream))])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # The repeated transitions are duplicates: two distinct ones.
        assert (45_000, 2) == (summary.lines, len(summary.timeline))
        assert peak < 8 * 1024 * 1024

    def test_memory_does_not_grow_with_the_number_of_files(self) -> None:
        """Twenty 1.2 MB files merged: no block per file is kept."""
        template = line(0, "request_finished", path="/a" * 320)

        def content(number: int) -> bytes:
            # Events interleaved in time across files: the merge takes
            # turns, so every file's reader pauses mid-file.
            return text_of(
                line(i * 20 + number, "retry_scheduled", breaker="db")
                if i % 40 == 0
                else template.replace(at(0), at(i * 20 + number))
                for i in range(1600)
            )

        streams = [(f"f{i}.log", io.BytesIO(content(i))) for i in range(16)]
        streams += [
            (f"g{i}.log.gz", io.BytesIO(gzip.compress(content(16 + i))))
            for i in range(4)
        ]
        assert len(content(0)) > logs_read._BLOCK
        tracemalloc.start()
        try:
            summary = summarize(streams)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert (20 * 1600, 20 * 40) == (
            summary.lines,
            summary.breakers["db"].retries_scheduled,
        )
        # Holding one block per file would take more than 20 MB.
        assert peak < 10 * 1024 * 1024


class TestSkipped:
    """Unusable lines are counted and explained, never fatal."""

    GARBAGE = (
        "plain text from the app",  # 1 not JSON
        '{"event": "circuit_state_changed", "breaker": "db", "old_st',  # 2
        "[1, 2, 3]",  # 3 not a JSON object
        '"just a string"',  # 4 not a JSON object
        '{"event": "circuit_state_changed", "breaker": "db"}',  # 5 no ts
        '{"event": "retry_scheduled", "breaker": "db", "timestamp": "soon"}',
        '{"event": "retry_scheduled", "timestamp": "2026-11-27T22:00:00Z"}',
        '{"event": "call_rejected", "breaker": "db", bad json}',  # 8
        "",  # 9 blank: ignored
        "\x00\xff\xfe binary",  # 10 not JSON
        "42",  # 11 not a JSON object
        "{not json at all, retry_ but no quote}",  # 12: an ordinary line
    )

    def test_reasons_and_line_numbers(self) -> None:
        """Each kind of garbage has its reason and 1-based line number."""
        summary = summary_of([*self.GARBAGE, *REFERENCE])
        assert 11 == summary.skipped
        assert [
            (1, "not JSON"),
            (2, "truncated JSON"),
            (3, "not a JSON object"),
            (4, "not a JSON object"),
            (5, "missing timestamp"),
        ] == [(e.line, e.reason) for e in summary.skipped_examples]
        assert EXPECTED["breakers"] == summary.to_json()["breakers"]

    def test_later_reasons(self) -> None:
        """Reasons for events with a bad timestamp or no breaker."""
        summary = summary_of(self.GARBAGE[5:])
        assert [
            (1, "unparsable timestamp"),
            (2, "retry_scheduled without a breaker"),
            (3, "invalid JSON"),
            (5, "not JSON"),
            (6, "not a JSON object"),
        ] == [(e.line, e.reason) for e in summary.skipped_examples]
        assert 0 == summary.events

    def test_too_long_line(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A line beyond the limit is skipped without being kept."""
        monkeypatch.setattr(logs_read, "_BLOCK", 64)
        monkeypatch.setattr(logs_read, "_MAX_LINE", 1000)
        log = [REFERENCE[0], "x" * 5000, *REFERENCE[1:]]
        summary = summary_of(log)
        assert (15, 2) == (summary.lines, summary.skipped)
        assert (2, "line too long") == (
            summary.skipped_examples[0].line,
            summary.skipped_examples[0].reason,
        )
        assert EXPECTED["breakers"] == summary.to_json()["breakers"]

    def test_small_blocks_same_result(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Lines cut across read blocks are joined correctly."""
        monkeypatch.setattr(logs_read, "_BLOCK", 7)
        assert EXPECTED == summary_of(REFERENCE).to_json()
        assert (
            EXPECTED == summary_of(gzip.compress(text_of(REFERENCE))).to_json()
        )

    def test_only_garbage_exits_1(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Nothing usable: exit 1 and one line on stderr, no traceback."""
        path = write(tmp_path / "junk.log", self.GARBAGE)
        code, out, err = run([path], capsys)
        assert (1, "") == (code, out)
        assert "no circuit breaker event found" in err
        assert 1 == len(err.strip().splitlines())

    def test_garbage_with_one_event_exits_0(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """One usable event among garbage is enough."""
        path = write(
            tmp_path / "mixed.log",
            [*self.GARBAGE, change(0, "db", "closed", "open")],
        )
        code, out, _ = run([path, "--format", "json"], capsys)
        assert (0, 1) == (code, json.loads(out)["breakers"]["db"]["trips"])

    def test_binary_file(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Random bytes: exit 1, no traceback."""
        path = tmp_path / "random.bin"
        path.write_bytes(random.Random(3).randbytes(300_000))
        code, _, err = run([str(path)], capsys)
        assert 1 == code
        assert "Traceback" not in err

    def test_event_name_in_a_message_is_not_an_event(self) -> None:
        """A line that merely mentions an event name is an ordinary line."""
        log = [
            line(0, "debug", message='saw "circuit_state_changed" twice'),
            change(5, "db", "closed", "open"),
        ]
        summary = summary_of(log)
        assert (0, 1) == (summary.skipped, summary.events)
        assert 0 == summary.start_us - _logs.parse_timestamp(at(0))


class TestFilters:
    """--since, --until and --breaker."""

    def test_since_until_window(self) -> None:
        """Only transitions inside the window; open time clipped to it."""
        summary = summary_of(REFERENCE, since=at(30), until=at(400)).to_json()
        db = summary["breakers"]["database_connection"]
        api = summary["breakers"]["siliconflow_api"]
        # db: open from 30 (state carried from the trip at 10) to 40, then
        # 41 to 101: 10 + 60 s; trips: only the one at 41.
        assert (1, 70.0, 60.0, 10) == (
            db["trips"],
            db["time_open_total_s"],
            db["longest_open_s"],
            db["rejected"],
        )
        # api: open from 300 to --until (the log goes on past it).
        assert (1, 100.0) == (api["trips"], api["time_open_total_s"])
        assert [
            "2026-11-27T22:00:40Z",
            "2026-11-27T22:00:41Z",
            "2026-11-27T22:01:41Z",
            "2026-11-27T22:01:42Z",
            "2026-11-27T22:05:00Z",
        ] == [t["time"] for t in summary["timeline"]]
        assert 14 == summary["lines"]

    def test_until_before_a_trip(self) -> None:
        """--until cuts the log: later trips are not counted."""
        summary = summary_of(REFERENCE, until=at(200))
        assert ["database_connection"] == list(summary.breakers)
        # The log goes on after --until: the period ends there.
        assert parse_timestamp(at(200)) == summary.end_us
        assert (
            parse_timestamp(at(112))
            == summary_of(REFERENCE[:12], until=at(200)).end_us
        )

    def test_breaker_filter(self) -> None:
        """Names and shell patterns select breakers."""
        only_api = summary_of(REFERENCE, breakers=["siliconflow_api"])
        assert ["siliconflow_api"] == list(only_api.breakers)
        assert 1 == len(only_api.timeline)
        pattern = summary_of(REFERENCE, breakers=["data*"])
        assert ["database_connection"] == list(pattern.breakers)
        both = summary_of(
            REFERENCE, breakers=["database_connection", "silicon*"]
        )
        assert EXPECTED == both.to_json()

    def test_cli_filters(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The CLI options reach the analysis."""
        path = write(tmp_path / "a.log", REFERENCE)
        code, out, _ = run(
            [
                path,
                "--since",
                "2026-11-27T22:04:00Z",
                "--breaker",
                "siliconflow_api",
                "--format",
                "json",
            ],
            capsys,
        )
        result = json.loads(out)
        assert (0, ["siliconflow_api"], 300.0) == (
            code,
            list(result["breakers"]),
            result["breakers"]["siliconflow_api"]["time_open_total_s"],
        )

    def test_relative_since(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--since 2h keeps the last two hours only."""
        now = time.time()
        log = [
            json.dumps(
                {
                    "event": "circuit_state_changed",
                    "breaker": name,
                    "old_state": "closed",
                    "new_state": "open",
                    "timestamp": now - age,
                }
            )
            for name, age in (("old", 3 * 3600), ("recent", 3600))
        ]
        log.append(
            json.dumps(
                {
                    "event": "circuit_state_changed",
                    "breaker": "old",
                    "old_state": "open",
                    "new_state": "closed",
                    "timestamp": now - 2.5 * 3600,
                }
            )
        )
        path = write(tmp_path / "a.log", log)
        code, out, _ = run([path, "--since", "2h", "--format", "json"], capsys)
        assert (0, ["recent"]) == (code, list(json.loads(out)["breakers"]))

    def test_filters_leave_nothing(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """No event in the window: exit 1, the message names the filter."""
        path = write(tmp_path / "a.log", REFERENCE)
        code, out, err = run([path, "--breaker", "nope"], capsys)
        assert (1, "") == (code, out)
        assert "for breaker nope" in err


class TestCommand:
    """Exit codes, outputs and messages of summarize_command."""

    def test_table(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The default output is an aligned plain-text table."""
        path = write(tmp_path / "a.log", REFERENCE)
        code, out, err = run([path], capsys)
        assert (0, "") == (code, err)
        row = next(r for r in out.splitlines() if "database_connection" in r)
        assert [
            "database_connection",
            "2",
            "1m",
            "30s",
            "1m",
            "00s",
            "closed",
            "10",
            "3",
            "1",
            "no",
        ] == row.split()
        assert "22:05:00Z" in out
        assert CAUSE_DB in out
        assert "a.log:2: not JSON" in out

    def test_table_escapes_control_characters(self) -> None:
        """Terminal escape sequences from the logs are shown, not run."""
        log = [change(0, "evil\x1b[2J\x1b]0;pwned\x07", "closed", "open")]
        table = render_table(summary_of(log))
        assert "\x1b" not in table
        assert "\\x1b[2J" in table

    def test_json_to_file(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--output writes the report there; stdout stays empty."""
        path = write(tmp_path / "a.log", REFERENCE)
        target = tmp_path / "out.json"
        code, out, _ = run(
            [path, "--format", "json", "--output", str(target)], capsys
        )
        assert (0, "") == (code, out)
        assert EXPECTED == json.loads(target.read_text())

    def test_html_default_path(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Without --output the HTML report goes to resilience-report.html."""
        path = write(tmp_path / "a.log", REFERENCE)
        monkeypatch.chdir(tmp_path)
        code, out, err = run([path, "--format", "html"], capsys)
        assert (0, "") == (code, out)
        assert "resilience-report.html" in err
        assert (
            (tmp_path / "resilience-report.html")
            .read_text()
            .startswith("<!DOCTYPE html>")
        )

    def test_unreadable_file(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A missing file: exit 1, one line naming it."""
        missing = str(tmp_path / "missing.log")
        code, out, err = run([missing], capsys)
        assert (1, "") == (code, out)
        assert missing in err
        assert 1 == len(err.strip().splitlines())

    def test_directory(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A directory given as FILE: exit 1, no traceback."""
        code, _, err = run([str(tmp_path)], capsys)
        assert 1 == code
        assert "Traceback" not in err

    @pytest.mark.parametrize(
        "argv", [["--since", "last tuesday"], ["--until", "soon"]]
    )
    def test_bad_times_exit_2(
        self,
        argv: list[str],
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Unparsable --since/--until: argparse exits 2, one line."""
        path = write(tmp_path / "a.log", REFERENCE)
        with pytest.raises(SystemExit) as exc:
            parser().parse_args([path, *argv])
        out, err = capsys.readouterr()
        assert (2, "") == (exc.value.code, out)
        assert 1 == len(err.strip().splitlines())
        assert "not a time" in err

    def test_inverted_times_exit_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--since after --until: exit 2, one line."""
        path = write(tmp_path / "a.log", REFERENCE)
        argv = ["--since", "2026-11-28T00:00Z", "--until", "2026-11-27T00:00Z"]
        code, out, err = run([path, *argv], capsys)
        assert (2, "") == (code, out)
        assert 1 == len(err.strip().splitlines())

    def test_bad_flapping_values(self) -> None:
        """Argument types refuse nonsense (argparse exits 2)."""
        with pytest.raises(SystemExit) as exc:
            parser().parse_args(["a.log", "--flapping-trips", "0"])
        assert 2 == exc.value.code
        with pytest.raises(SystemExit):
            parser().parse_args(["a.log", "--flapping-window", "-5"])

    def test_unwritable_output(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An output path that cannot be written: exit 1."""
        path = write(tmp_path / "a.log", REFERENCE)
        target = str(tmp_path / "no" / "such" / "dir" / "r.json")
        code, _, err = run(
            [path, "--format", "json", "--output", target], capsys
        )
        assert 1 == code
        assert "cannot write" in err

    def test_closed_pipe(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A reader that went away (| head): exit 1, no traceback."""

        class ClosedPipe(io.StringIO):
            def write(self, text: str) -> int:
                raise BrokenPipeError(32, "Broken pipe")

            def fileno(self) -> int:
                raise io.UnsupportedOperation("no fd in tests")

        path = write(tmp_path / "a.log", REFERENCE)
        monkeypatch.setattr(sys, "stdout", ClosedPipe())
        assert 1 == summarize_command(parser().parse_args([path]))


class TestRealStructlog:
    """Logs written by structlog itself, and by real policies."""

    def test_json_renderer_output(self) -> None:
        """JSONRenderer + TimeStamper(iso, utc) lines are understood."""
        out = io.StringIO()
        log = structlog.wrap_logger(
            structlog.PrintLogger(file=out),
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(),
            ],
        ).bind(logger="sage_resilience")
        log.info("config_loaded", path="x.yaml", platform="linux", policies=[])
        log.warning(
            "circuit_state_changed",
            breaker="vectorizer",
            old_state="closed",
            new_state="open",
            failure_count=3,
            failure_threshold=3,
            recovery_timeout=60,
            recent_failures=[],
            failure_rate_per_min=3,
            last_failure="ReadTimeout: timed out after 20.0s",
            last_cause="http_timeout",
            platform="linux",
            reason="consecutive_failures",
        )
        log.info("call_rejected", breaker="vectorizer", retry_after=59.9)
        log.info(
            "retry_scheduled",
            breaker="vectorizer",
            attempt=1,
            max_attempts=3,
            wait=0.5,
            error="ReadTimeout: timed out",
        )
        log.info(
            "circuit_state_changed",
            breaker="vectorizer",
            old_state="open",
            new_state="half-open",
            rejected_while_open=12,
        )
        summary = summary_of(out.getvalue().encode())
        assert {
            "trips": 1,
            "final_state": "half-open",
            "rejected": 12,
            "retries_scheduled": 1,
            "top_causes": [
                {"cause": "ReadTimeout: timed out after <n>s", "count": 1}
            ],
        } == {
            key: value
            for key, value in summary.to_json()["breakers"][
                "vectorizer"
            ].items()
            if key
            in {
                "trips",
                "final_state",
                "rejected",
                "retries_scheduled",
                "top_causes",
            }
        }
        assert (5, 0) == (summary.lines, summary.skipped)

    def test_real_policy_run(self) -> None:
        """Events of a real policy that trips, recovers and trips again."""
        out = io.StringIO()
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.PrintLoggerFactory(file=out),
            cache_logger_on_first_use=False,
        )
        trip_a_real_policy()
        assert_flaky_story(summary_of(out.getvalue().encode()))


def trip_a_real_policy() -> None:
    """A real policy trips, recovers and trips again, logging its events.

    Through whatever structlog (or logging) configuration is in force; the
    conftest resets structlog afterwards.
    """
    from sage_resilience import (  # noqa: PLC0415
        CircuitOpenError,
        configure,
        policy,
    )
    from sage_resilience._config import load_config_text  # noqa: PLC0415

    config = load_config_text(
        "version: 1\n"
        "policies:\n"
        "  flaky:\n"
        "    failure_threshold: 2\n"
        "    recovery_timeout: 0.05\n"
        "    retry: {attempts: 2}\n"
    )
    configure(config)
    flaky = policy("flaky")

    def fail() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    for _ in range(3):
        with pytest.raises((ConnectionRefusedError, CircuitOpenError)):
            flaky.call(fail)
    time.sleep(0.08)
    assert "ok" == flaky.call(lambda: "ok")
    for _ in range(2):
        with pytest.raises((ConnectionRefusedError, CircuitOpenError)):
            flaky.call(fail)


def assert_flaky_story(summary: _logs.Summary) -> None:
    """What trip_a_real_policy() logged, as the summary must tell it."""
    breaker = summary.to_json()["breakers"]["flaky"]
    # Two calls failed twice (one retry each) and tripped the circuit.
    assert (2, "open", 2) == (
        breaker["trips"],
        breaker["final_state"],
        breaker["retries_scheduled"],
    )
    assert ["open", "half-open", "closed", "open"] == [
        t["new_state"] for t in summary.to_json()["timeline"]
    ]
    assert [
        {
            "cause": "ConnectionRefusedError: [Errno <n>] Connection refused",
            "count": 2,
        }
    ] == breaker["top_causes"]
    assert 0 == summary.skipped


# ---------------------------------------------------------------------------
# Logs of other shapes: python-json-logger, EventRenamer, ECS, stdlib JSON


class ScriptedClock(logging.Filter):
    """Stamps record n at BASE + n * step seconds: known timestamps.

    The formatters read the time from ``record.created`` (and ``msecs``),
    so every shape below carries the same, known times.
    """

    def __init__(self, step: float) -> None:
        super().__init__()
        self.step = step
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        created = (BASE - logs_times._EPOCH).total_seconds()
        created += self.count * self.step
        self.count += 1
        record.created = created
        record.msecs = round(created * 1000) % 1000
        return True


class StdlibJsonFormatter(logging.Formatter):
    """A hand-written stdlib JSON formatter: ``msg`` and epoch ``ts``."""

    def __init__(self, *, milliseconds: bool = False) -> None:
        super().__init__()
        self.milliseconds = milliseconds

    def format(self, record: logging.LogRecord) -> str:
        standard = logging.LogRecord("", 0, "", 0, "", None, None).__dict__
        data = {
            "ts": round(record.created * 1000)
            if self.milliseconds
            else record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update(
            (key, value)
            for key, value in record.__dict__.items()
            if key not in standard and key != "message"
        )
        return json.dumps(data)


def pjl_asctime() -> logging.Formatter:
    """python-json-logger with asctime ("2026-11-27 22:00:10,000"), UTC."""
    formatter = JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    formatter.converter = time.gmtime
    return formatter


def pjl_timestamp() -> logging.Formatter:
    """python-json-logger's own ISO timestamp (+00:00)."""
    return JsonFormatter("%(levelname)s %(name)s %(message)s", timestamp=True)


def pjl_renamed() -> logging.Formatter:
    """python-json-logger with fields renamed to msg and time."""
    formatter = JsonFormatter(
        "%(asctime)s %(message)s",
        rename_fields={"message": "msg", "asctime": "time"},
    )
    formatter.converter = time.gmtime
    return formatter


FORMATTERS = {
    "python-json-logger asctime": pjl_asctime,
    "python-json-logger timestamp": pjl_timestamp,
    "python-json-logger msg/time": pjl_renamed,
    "ecs-logging stdlib": ecs_logging.StdlibFormatter,
    "stdlib json ts seconds": StdlibJsonFormatter,
    "stdlib json ts ms": lambda: StdlibJsonFormatter(milliseconds=True),
}


def emit_story(stdlib_logger: logging.Logger) -> None:
    """A trip and a recovery, one record every 10 s from BASE.

    The keys are the library's events', passed as
    ``extra`` as an application logging through stdlib would.
    """
    stdlib_logger.info("service_started", extra={"version": "1.0"})
    stdlib_logger.warning(
        "circuit_state_changed",
        extra={
            "breaker": "database_connection",
            "old_state": "closed",
            "new_state": "open",
            "reason": "consecutive_failures",
            "failure_count": 3,
            "last_failure": REFUSED_1,
            "platform": "linux",
        },
    )
    stdlib_logger.warning(
        "retry_scheduled",
        extra={
            "breaker": "database_connection",
            "attempt": 1,
            "max_attempts": 3,
            "wait": 0.2,
            "error": "ConnectionRefusedError: ...",
        },
    )
    stdlib_logger.info(
        "call_rejected",
        extra={"breaker": "database_connection", "retry_after": 28},
    )
    stdlib_logger.info(
        "circuit_state_changed",
        extra={
            "breaker": "database_connection",
            "old_state": "open",
            "new_state": "half-open",
            "rejected_while_open": 7,
        },
    )
    stdlib_logger.info(
        "circuit_state_changed",
        extra={
            "breaker": "database_connection",
            "old_state": "half-open",
            "new_state": "closed",
        },
    )
    stdlib_logger.info("request_finished", extra={"status": 200})


STORY = {
    "lines": 7,
    "skipped": 0,
    "skipped_examples": [],
    "breakers": {
        "database_connection": {
            "trips": 1,
            "time_open_total_s": 30.0,
            "longest_open_s": 30.0,
            "final_state": "closed",
            "rejected": 7,
            "retries_scheduled": 1,
            "retries_exhausted": 0,
            "flapping": False,
            "top_causes": [{"cause": CAUSE_DB, "count": 1}],
        }
    },
    "timeline": [
        {
            "time": "2026-11-27T22:00:10Z",
            "breaker": "database_connection",
            "old_state": "closed",
            "new_state": "open",
        },
        {
            "time": "2026-11-27T22:00:40Z",
            "breaker": "database_connection",
            "old_state": "open",
            "new_state": "half-open",
        },
        {
            "time": "2026-11-27T22:00:50Z",
            "breaker": "database_connection",
            "old_state": "half-open",
            "new_state": "closed",
        },
    ],
}


@pytest.fixture
def stdlib_log(tmp_path: Path) -> Iterator[tuple[logging.Logger, Path]]:
    """The stdlib logger sage_resilience, writing to a file only.

    Yields the logger and the file; the caller sets the formatter.
    """
    path = tmp_path / "app.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    log = logging.getLogger("sage_resilience")
    saved = (log.level, log.propagate, log.handlers[:])
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield log, path
    finally:
        handler.close()
        log.level, log.propagate, log.handlers[:] = saved


class TestLogShapes:
    """Event name under event/message/msg, time under five keys."""

    @pytest.mark.parametrize("shape", list(FORMATTERS))
    def test_stdlib_formatters(
        self,
        shape: str,
        stdlib_log: tuple[logging.Logger, Path],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A file written by a real stdlib JSON formatter summarises."""
        log, path = stdlib_log
        handler = log.handlers[0]
        handler.setFormatter(FORMATTERS[shape]())
        handler.addFilter(ScriptedClock(10))
        emit_story(log)
        handler.flush()
        code, out, err = run([str(path), "--format", "json"], capsys)
        assert (0, "", STORY) == (code, err, json.loads(out))

    def test_rendered_message_with_event_in_extra(
        self, stdlib_log: tuple[logging.Logger, Path]
    ) -> None:
        """A rendered message ("name key=value ...") and the name under
        "event" in extra, as the library logs through stdlib logging when
        structlog is not configured: the event key is read."""
        log, path = stdlib_log
        handler = log.handlers[0]
        handler.setFormatter(pjl_asctime())
        handler.addFilter(ScriptedClock(10))
        for state, (old, new) in enumerate(
            [
                ("closed", "open"),
                ("open", "half-open"),
                ("half-open", "closed"),
            ]
        ):
            keys = {"breaker": "db", "old_state": old, "new_state": new}
            if state == 1:
                keys["rejected_while_open"] = 4
            rendered = " ".join(f"{k}={v!r}" for k, v in keys.items())
            log.info(
                "%s",
                f"circuit_state_changed {rendered}",
                extra={"event": "circuit_state_changed", **keys},
            )
        handler.flush()
        with path.open("rb") as stream:
            breaker = summarize([("app.log", stream)]).breakers["db"]
        assert (1, 10.0, 4, "closed") == (
            breaker.trips,
            breaker.time_open_total_s,
            breaker.rejected,
            breaker.final_state,
        )

    def test_the_shapes_are_what_they_claim(
        self, stdlib_log: tuple[logging.Logger, Path]
    ) -> None:
        """Each formatter really puts the name and time where we say."""
        log, path = stdlib_log
        handler = log.handlers[0]
        handler.addFilter(ScriptedClock(10))
        keys = {}
        for shape, make in FORMATTERS.items():
            handler.setFormatter(make())
            log.warning("circuit_state_changed", extra={"breaker": "x"})
            handler.flush()
            last = path.read_text(encoding="utf-8").splitlines()[-1]
            obj = json.loads(last)
            keys[shape] = (
                next(k for k in ("event", "message", "msg") if k in obj),
                next(k for k in _logs.TIME_KEYS if k in obj),
            )
        assert {
            "python-json-logger asctime": ("message", "asctime"),
            "python-json-logger timestamp": ("message", "timestamp"),
            "python-json-logger msg/time": ("msg", "time"),
            "ecs-logging stdlib": ("message", "@timestamp"),
            "stdlib json ts seconds": ("msg", "ts"),
            "stdlib json ts ms": ("msg", "ts"),
        } == keys

    def test_real_policy_through_stdlib_and_python_json_logger(
        self, stdlib_log: tuple[logging.Logger, Path]
    ) -> None:
        """structlog -> stdlib -> python-json-logger (asctime) -> file."""
        log, path = stdlib_log
        handler = log.handlers[0]
        handler.setFormatter(pjl_asctime())
        # asctime has millisecond resolution: a scripted clock keeps
        # the retries (same attempt, same error) one from the other.
        handler.addFilter(ScriptedClock(0.25))
        structlog.configure(
            processors=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.render_to_log_kwargs,
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=False,
        )
        trip_a_real_policy()
        handler.flush()
        trip = next(
            json.loads(text)
            for text in path.read_text(encoding="utf-8").splitlines()
            if "circuit_state_changed" in text
        )
        assert {"asctime", "message", "breaker"} <= set(trip)
        assert "event" not in trip
        with path.open("rb") as stream:
            assert_flaky_story(summarize([("app.log", stream)]))

    def test_real_policy_with_event_renamer(self) -> None:
        """structlog with EventRenamer("message") and epoch seconds."""
        out = io.StringIO()
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt=None, key="ts"),
                structlog.processors.EventRenamer("message"),
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.PrintLoggerFactory(file=out),
            cache_logger_on_first_use=False,
        )
        trip_a_real_policy()
        first = json.loads(out.getvalue().splitlines()[0])
        assert "event" not in first
        assert isinstance(first["ts"], float)
        assert_flaky_story(summary_of(out.getvalue().encode()))

    def test_real_policy_with_ecs_structlog_formatter(self) -> None:
        """structlog with ecs-logging's formatter (@timestamp, log.level)."""
        out = io.StringIO()
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                ecs_logging.StructlogFormatter(),
            ],
            logger_factory=structlog.PrintLoggerFactory(file=out),
            cache_logger_on_first_use=False,
        )
        trip_a_real_policy()
        first = json.loads(out.getvalue().splitlines()[0])
        assert {"@timestamp", "log.level", "message"} <= set(first)
        assert_flaky_story(summary_of(out.getvalue().encode()))

    @pytest.mark.parametrize(
        ("keys", "expected_us"),
        [
            ({"event": "circuit_state_changed", "timestamp": at(10)}, 10),
            ({"message": "circuit_state_changed", "time": at(10)}, 10),
            ({"msg": "circuit_state_changed", "ts": at(10)}, 10),
            (
                {"message": "circuit_state_changed", "@timestamp": at(10)},
                10,
            ),
            (
                {
                    "message": "circuit_state_changed",
                    "asctime": "2026-11-27 22:00:10,250",
                },
                10.25,
            ),
            (
                {
                    "message": "circuit_state_changed",
                    "@timestamp": "2026-11-27T23:00:10.5+01:00",
                },
                10.5,
            ),
            # ECS keeps an object under "event": the message names it.
            (
                {
                    "event": {"dataset": "sage.app", "kind": "event"},
                    "message": "circuit_state_changed",
                    "@timestamp": at(10),
                },
                10,
            ),
            # A duration under "time" does not hide the real time.
            (
                {
                    "msg": "circuit_state_changed",
                    "time": 0.25,
                    "asctime": "2026-11-27 22:00:10,000",
                },
                10,
            ),
        ],
    )
    def test_keys(self, keys: dict[str, Any], expected_us: float) -> None:
        """Each place for the name and the time is read."""
        data = {"breaker": "db", "old_state": "closed", "new_state": "open"}
        data.update(keys)
        summary = summary_of([json.dumps(data)])
        assert [(BASE + dt.timedelta(seconds=expected_us), "open")] == [
            (
                logs_times._EPOCH + dt.timedelta(microseconds=t.time_us),
                t.new_state,
            )
            for t in summary.timeline
        ]

    def test_message_that_is_not_a_name(self) -> None:
        """A message merely containing an event name is no event."""
        log = [
            json.dumps(
                {
                    "message": "circuit_state_changed for db",
                    "breaker": "db",
                    "new_state": "open",
                    "asctime": "2026-11-27 22:00:10,000",
                }
            )
        ]
        assert 0 == summary_of(log).events

    def test_non_event_lines_give_the_period(self) -> None:
        """asctime, @timestamp, ts of ordinary lines bound the period."""
        log = [
            json.dumps({"msg": "boot", "asctime": "2026-11-27 22:00:00,000"}),
            json.dumps(
                {
                    "message": "circuit_state_changed",
                    "breaker": "db",
                    "old_state": "closed",
                    "new_state": "open",
                    "@timestamp": at(10),
                }
            ),
            json.dumps({"message": "tick", "@timestamp": at(70)}),
            json.dumps({"msg": "bye", "ts": at(100)}),
        ]
        summary = summary_of(log)
        assert (0, 100.0) == (
            summary.start_us - parse_timestamp(at(0)),
            summary.breakers["db"].time_open_total_s + 10,
        )


class TestSortableShapes:
    """Ordinary lines' times compared as bytes, exactly as if parsed."""

    @pytest.mark.parametrize("form", [0, 4, 5, 6])
    @pytest.mark.parametrize(
        ("extra", "expected_start", "expected_end"),
        [
            # Every line inside the window: the period is the lines' span.
            ((), 10.001, 29.999),
            # A line half a millisecond before --since, or after --until:
            # the period is widened to that bound.
            ((10.000,), 10.0005, 29.999),
            ((30.000,), 10.001, 29.9995),
            ((10.000, 30.000), 10.0005, 29.9995),
        ],
    )
    def test_window_edges(
        self,
        form: int,
        extra: tuple[float, ...],
        expected_start: float,
        expected_end: float,
    ) -> None:
        """Lines a fraction of the shape's resolution off the bounds."""
        base = parse_timestamp(at(0))
        assert base is not None
        times = [10.001, 20.0, 29.999, *extra]
        log = [
            json.dumps({"msg": "tick", **stamp(base + round(t * 1e6), form)})
            for t in times
        ]
        log.append(change(15, "db", "closed", "open"))
        for block in (1 << 20, 64):  # one block; a block per line or two
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(logs_read, "_BLOCK", block)
                summary = summary_of(log, since=at(10.0005), until=at(29.9995))
            assert (expected_start, expected_end) == (
                (summary.start_us - base) / 1e6,
                (summary.end_us - base) / 1e6,
            )

    def test_garbage_in_the_shape_is_read_exactly(self) -> None:
        """A value shaped like a time but not one is not a time."""
        log = [
            json.dumps({"msg": "a", "asctime": "2026-11-27 22:00:01,000"}),
            json.dumps({"msg": "b", "asctime": "2026-19-99 99:99:99,999"}),
            json.dumps({"msg": "c", "asctime": "2026-11-27 22:00:09,000"}),
            change(5, "db", "closed", "open"),
        ]
        summary = summary_of(log)
        assert (1.0, 9.0) == (
            (summary.start_us - parse_timestamp(at(0))) / 1e6,
            (summary.end_us - parse_timestamp(at(0))) / 1e6,
        )


def line_by_line(
    files: list[bytes], block: int = 1 << 20, **options: Any
) -> _logs.Summary:
    """summary_of(*files) with every line looked at one by one.

    The scanner's other path, checking whole runs of regular lines at once
    (logs_read.regular), is turned off: the results must be the same.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logs_read, "_BLOCK", block)
        patch.setattr(logs_read, "regular", lambda _data, _count: None)
        return summary_of(*files, **options)


def by_blocks(
    files: list[bytes], block: int = 1 << 20, **options: Any
) -> _logs.Summary:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logs_read, "_BLOCK", block)
        return summary_of(*files, **options)


def request(seconds: float, **keys: Any) -> str:
    """An ordinary request line, its canonical timestamp last."""
    return line(seconds, "request_finished", path="/api/chat", **keys)


# Lines of every kind the block scanner must tell from regular ones; {t}
# is a canonical timestamp.
ODD_LINES = (
    '{{"path": "/a", "timestamp": "{t}", "status": 200}}',  # not last
    '{{"path": "/a"}}',  # no timestamp
    '{{"timestamp": "timestamp": "{t}"}}',  # an overlapping key first
    '{{"timestamp": "{t}", "timestamp": "{t}"}}',  # two keys
    '{{"x": "\\"timestamp\\": \\"", "timestamp": "{t}"}}',  # escaped key
    '{{"timestamp": "9999-99-99T99:99:99.999999Z"}}',  # shaped, not a time
    '{{"timestamp": "0000000000T00000000.000000Z"}}',  # shaped, not a time
    '{{"timestamp": "{t}X"}}',  # one byte too many
    # The value's fixed bytes, one at a time not what they should be.
    '{{"timestamp": "2026-11-27X22:00:00.000000Z"}}',
    '{{"timestamp": "2026-11-27T22:00:00X000000Z"}}',
    '{{"timestamp": "2026-11-27T22:00:00.0000000"}}',
    '{{"timestamp": "{t}"]',
    '["timestamp": "{t}"}}',
    '{{"asctime": "2026-11-27 22:00:05,000", "msg": "x"}}',
    '{{"@timestamp":"2026-11-27T22:00:07.000Z", "m": 1}}',
    '{{"ts": "x", "timestamp": "{t}"}}',
    '{{"msg": "retry_ later", "timestamp": "{t}"}}',  # names an event
    '{{"event": "retry_scheduled", "breaker": "db", "timestamp": "{t}"}}',
    '{{"event": "call_rejected", "timestamp": "{t}"}}',  # no breaker
    '{{"event": "circuit_state_changed", "timestamp": "{t}", bad}}',
    ' {{"timestamp": "{t}"}} ',  # stripped
    '{{"timestamp": "{t}"}}\r',
    "{{",
    "plain text",
    "",
)


class TestBlockScanner:
    """Regular lines checked a block at once, the rest one by one: the same."""

    def test_regular_blocks_are_read_at_once(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A structlog log goes through the block path (not line by line)."""
        calls = []
        original = logs_read._Source._lines

        def spy(source: Any, lines: list[bytes], *rest: Any) -> None:
            calls.append(len(lines))
            original(source, lines, *rest)

        monkeypatch.setattr(logs_read._Source, "_lines", spy)
        log = [request(i / 10) for i in range(5000)]
        log[2500] = change(250, "db", "closed", "open")
        summary = summary_of(log)
        assert (5000, 0, 1) == (summary.lines, summary.skipped, summary.events)
        assert [] == calls

    @pytest.mark.parametrize("odd", ODD_LINES)
    @pytest.mark.parametrize("where", [0, 1, 150, 298, 299])
    def test_an_odd_line_among_regular_ones(
        self, odd: str, where: int
    ) -> None:
        """One odd line anywhere in a run of regular lines."""
        log = [request(i / 2) for i in range(300)]
        log[where] = odd.format(t=at(200 - where))
        for newline, block in (
            ("\n", 1 << 20),
            ("\r\n", 1 << 20),
            ("\n", 997),
        ):
            data = (newline.join(log) + newline).encode()
            for options in ({}, {"since": at(40.25), "until": at(120.75)}):
                assert line_by_line([data], block, **options) == by_blocks(
                    [data], block, **options
                )

    @pytest.mark.parametrize("block", [7, 64, 1000, 1 << 20])
    @pytest.mark.parametrize("newline", ["\n", "\r\n"])
    @pytest.mark.parametrize("final_newline", [True, False])
    def test_odd_lines_among_regular_ones(
        self, block: int, newline: str, *, final_newline: bool
    ) -> None:
        """Each odd line at the start, middle and end of regular runs."""
        log = [request(i) for i in range(300)]
        for position, odd in enumerate(ODD_LINES):
            log.insert(position * 15 % 300, odd.format(t=at(position)))
        log.insert(0, ODD_LINES[position % len(ODD_LINES)].format(t=at(1)))
        log.append(ODD_LINES[0].format(t=at(400)))
        text = newline.join(log) + (newline if final_newline else "")
        data = text.encode()
        for options in ({}, {"since": at(100), "until": at(200)}):
            expected = line_by_line([data], block, **options)
            assert expected == by_blocks([data], block, **options)
        assert expected.skipped > 0

    def test_a_line_across_blocks(self) -> None:
        """Lines cut by every block boundary, and one longer than a block."""
        log = [request(i) for i in range(200)]
        log[100] = request(100, padding="x" * 5000)
        data = text_of(log)
        for block in (50, 255, 256, 257, 4096):
            expected = line_by_line([data], block)
            assert expected == by_blocks([data], block)
            assert (200, 0) == (expected.lines, expected.skipped)

    def test_huge_line(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A line over the limit is skipped; the regular runs around it not.

        (The limit applies to a line that outgrows its block.)
        """
        monkeypatch.setattr(logs_read, "_MAX_LINE", 3000)
        log = [request(i) for i in range(100)]
        log[50] = request(50, padding="x" * 10_000)
        for block, skipped in ((1000, [(51, "line too long")]), (1 << 20, [])):
            expected = line_by_line([text_of(log)], block)
            assert expected == by_blocks([text_of(log)], block)
            assert skipped == [
                (e.line, e.reason) for e in expected.skipped_examples
            ]

    @pytest.mark.parametrize(
        ("since", "until", "period"),
        [
            (2.5, 6.5, (2.5, 6.5)),
            (3, 6, (3, 6)),
            (-1, 6.5, (0, 6.5)),
            (2.5, 20, (2.5, 9)),
            (-5, -1, None),
            (20, 30, None),
        ],
    )
    def test_window_across_a_regular_run(
        self, since: float, until: float, period: tuple[float, float] | None
    ) -> None:
        """Lines before --since and after --until inside one regular run."""
        log = [request(i) for i in range(10)]
        log.append(change(4.5, "db", "closed", "open"))
        options = {"since": at(since), "until": at(until)}
        summary = summary_of(log, **options)
        assert summary == line_by_line([text_of(log)], **options)
        if period is not None:
            start = parse_timestamp(at(0))
            assert start is not None
            assert summary.start_us is not None
            assert summary.end_us is not None
            assert period == (
                (summary.start_us - start) / 1_000_000,
                (summary.end_us - start) / 1_000_000,
            )

    def test_lines_out_of_order_give_the_period(self) -> None:
        """The period is the lines' extremes, wherever they are."""
        log = [request(50 - i % 7) for i in range(1000)]
        log[500] = request(-30)
        log[700] = request(900)
        log.append(change(10, "db", "closed", "open"))
        summary = summary_of(log)
        assert (-30, 900) == (
            (summary.start_us - parse_timestamp(at(0))) // 1_000_000,
            (summary.end_us - parse_timestamp(at(0))) // 1_000_000,
        )
        assert summary == line_by_line([text_of(log)])

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(ODD_LINES) | st.just("{regular}"),
                st.integers(min_value=-100, max_value=100),
            ),
            max_size=60,
        ),
        st.sampled_from([16, 64, 300, 1 << 20]),
        st.sampled_from(["\n", "\r\n"]),
        st.booleans(),
        st.none() | st.integers(min_value=-100, max_value=100),
        st.none() | st.integers(min_value=-100, max_value=100),
    )
    def test_same_results_as_line_by_line(
        self,
        lines: list[tuple[str, int]],
        block: int,
        newline: str,
        final_newline: bool,
        since: int | None,
        until: int | None,
    ) -> None:
        """Random logs, mostly regular lines: the same Summary either way."""
        text = newline.join(
            request(t) if shape == "{regular}" else shape.format(t=at(t))
            for shape, t in lines
            for _ in range(3 if shape == "{regular}" else 1)
        )
        data = (text + (newline if final_newline else "")).encode()
        options = {
            "since": None if since is None else at(since),
            "until": None if until is None else at(until),
        }
        assert line_by_line([data], block, **options) == by_blocks(
            [data], block, **options
        )


TIME_FIRST_SHAPES = ("python-json-logger", "ecs-logging")


def time_first(
    shape: str, seconds: float, message: str = "request_finished", **keys: Any
) -> str:
    """A line as python-json-logger (asctime first) or ecs-logging writes it.

    ecs-logging's: ``@timestamp`` first, compact separators. Both to the
    millisecond.
    """
    moment = BASE + dt.timedelta(seconds=seconds)
    ms = f"{moment.microsecond // 1000:03d}"
    if shape == "python-json-logger":
        asctime = moment.strftime("%Y-%m-%d %H:%M:%S,") + ms
        return json.dumps(
            {
                "asctime": asctime,
                "levelname": "INFO",
                "name": "sage.api",
                "message": message,
                **keys,
            }
        )
    return json.dumps(
        {
            "@timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.") + ms + "Z",
            "log.level": "info",
            "message": message,
            "log.logger": "sage.api",
            **keys,
        },
        separators=(",", ":"),
    )


def time_first_change(shape: str, seconds: float, new: str) -> str:
    return time_first(
        shape,
        seconds,
        "circuit_state_changed",
        breaker="db",
        old_state="closed",
        new_state=new,
    )


def fill(template: str, seconds: float, other: float) -> str:
    """*template* with the times of *seconds* ({a}: asctime, {e}: ECS, {c}:
    canonical) and of *other* ({a2}, {e2}, {c2})."""
    times = {}
    for suffix, value in (("", seconds), ("2", other)):
        moment = BASE + dt.timedelta(seconds=value)
        ms = f"{moment.microsecond // 1000:03d}"
        times["a" + suffix] = moment.strftime("%Y-%m-%d %H:%M:%S,") + ms
        times["e" + suffix] = moment.strftime("%Y-%m-%dT%H:%M:%S.") + ms + "Z"
        times["c" + suffix] = at(value)
    return template.format(**times)


# Lines the block scanner must tell from regular ones of each shape, their
# key first; {a}/{e}/{c}: times of the odd line, {a2}/{e2}/{c2} another.
TIME_FIRST_ODD = {
    "python-json-logger": (
        # structlog's key, canonical: the line scanner's time, wherever.
        '{{"asctime": "{a}", "message": "x", "timestamp": "{c2}"}}',
        '{{"asctime": "{a}", "timestamp": "{c2}", "status": 200}}',
        '{{"asctime": "{a}", "timestamp": "{c2}X"}}',  # not canonical
        '{{"asctime": "{a}", "asctime": "{a2}"}}',  # two: the first
        '{{"asctime": "{a}", "@timestamp":"{e2}"}}',
        '{{"asctime": "{a}7", "message": "x"}}',  # one byte too many
        '{{"asctime": "{a}"}}',
        # The value's fixed bytes and digits, one at a time wrong.
        '{{"asctime": "2026-11-27T21:50:00,000", "message": "x"}}',
        '{{"asctime": "2026-11-27 21:50:00.000", "message": "x"}}',
        '{{"asctime": "2026-11-27 21:50:0x,000", "message": "x"}}',
        '{{"asctime": "2026-11-27 21:50:00,00", "message": "x"}}',
        '{{"asctime": "2026-19-99 99:99:99,999", "message": "x"}}',
        '{{"asctime": "{a}", "message": "x"]',
        '{{"message": "x", "asctime": "{a}"}}',  # not first
        '{{"asctime":"{a}", "message": "x"}}',  # compact
        '{{"asctime": "{a}", "message": "retry_ later"}}',  # names an event
        '{{"asctime": "{a}", "message": "call_rejected"}}',  # no breaker
        ' {{"asctime": "{a}", "message": "x"}} ',  # stripped
        '{{"asctime": "{a}", "message": "x"}}\r',
        '{{"@timestamp":"{e}","message":"x"}}',
        '{{"event": "x", "timestamp": "{c}"}}',
        "plain text",
        "",
    ),
    "ecs-logging": (
        # asctime is looked for before @timestamp: its time, or none.
        '{{"@timestamp":"{e}","message":"x","asctime": "{a2}"}}',
        '{{"@timestamp":"{e}","message":"x","asctime": "junk"}}',
        '{{"@timestamp":"{e}","message":"x","timestamp": "{c2}"}}',
        '{{"@timestamp":"{e}","@timestamp":"{e2}"}}',  # two: the first
        '{{"@timestamp": "{e}","message":"x"}}',  # spaced
        '{{"@timestamp":"{e}0","message":"x"}}',  # one byte too many
        '{{"@timestamp":"{e}"}}',
        '{{"@timestamp":"2026-11-27T21:50:00.000","message":"x"}}',
        '{{"@timestamp":"2026-11-27T21:50:00.000z","message":"x"}}',
        '{{"@timestamp":"2026-11-27 21:50:00.000Z","message":"x"}}',
        '{{"@timestamp":"2026-11-27T21:50:0x.000Z","message":"x"}}',
        '{{"@timestamp":"2026-19-99T99:99:99.999Z","message":"x"}}',
        '{{"message":"x","@timestamp":"{e}"}}',  # not first
        '{{"@timestamp":"{e}","message":"retry_scheduled","breaker":"db"}}',
        '{{"@timestamp":"{e}","message":"circuit_state_changed",bad}}',
        '{{"@timestamp":"{e}","message":"x"}}\r',
        '{{"asctime": "{a}", "message": "x"}}',
        "{{",
        "",
    ),
}


def period_of(summary: _logs.Summary) -> tuple[float, float]:
    """The analysed period, in seconds from at(0)."""
    zero = parse_timestamp(at(0))
    assert zero is not None
    assert summary.start_us is not None
    assert summary.end_us is not None
    return (summary.start_us - zero) / 1e6, (summary.end_us - zero) / 1e6


def time_first_log(shape: str, count: int) -> list[str]:
    """*count* ordinary lines of *shape*, 0.5 s apart, and a trip."""
    log = [time_first(shape, i / 2) for i in range(count)]
    log[count // 2] = time_first_change(shape, count / 4 + 0.25, "open")
    return log


class TestTimeFirstBlocks:
    """Lines with their time first (python-json-logger, ecs-logging) read a
    block at once: the same results as one line at a time."""

    @pytest.mark.parametrize("shape", ["pjl asctime", "ecs-logging"])
    def test_real_formatters_blocks_are_read_at_once(
        self,
        shape: str,
        stdlib_log: tuple[logging.Logger, Path],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """What the libraries write goes through the block path."""
        log, path = stdlib_log
        handler = log.handlers[0]
        formatter = (
            pjl_asctime()
            if shape == "pjl asctime"
            else ecs_logging.StdlibFormatter()
        )
        handler.setFormatter(formatter)
        handler.addFilter(ScriptedClock(0.25))
        for index in range(4000):
            log.info("request_finished", extra={"path": "/api/chat"})
            if index == 2000:
                emit_story(log)
        handler.flush()
        data = path.read_bytes()
        calls = []
        original = logs_read._Source._lines

        def spy(source: Any, lines: list[bytes], *rest: Any) -> None:
            calls.append(len(lines))
            original(source, lines, *rest)

        with monkeypatch.context() as patch:
            patch.setattr(logs_read._Source, "_lines", spy)
            summary = summary_of(data)
        assert [] == calls
        assert summary == line_by_line([data])
        assert summary.start_us == parse_timestamp(at(0))
        assert summary.end_us == parse_timestamp(
            at(summary.lines * 0.25 - 0.25)
        )

    @pytest.mark.parametrize("shape", TIME_FIRST_SHAPES)
    def test_keys_the_line_scanner_tries_first(self, shape: str) -> None:
        """A line of the run holding a key looked for before its own: the
        time is that key's, the block is not read at once."""
        log = time_first_log(shape, 300)
        if shape == "python-json-logger":
            odd = '{{"asctime": "{a}", "timestamp": "{c2}"}}'
        else:
            odd = '{{"@timestamp":"{e}","asctime": "{a2}"}}'
        log[100] = fill(odd, 50, -600.5)
        summary = by_blocks([text_of(log)])
        assert summary == line_by_line([text_of(log)])
        assert (-600.5, 149.5) == period_of(summary)

    @pytest.mark.parametrize("shape", TIME_FIRST_SHAPES)
    @pytest.mark.parametrize("where", [0, 1, 150, 299])
    def test_an_odd_line_among_time_first_ones(
        self, shape: str, where: int
    ) -> None:
        """Each odd line anywhere in a run, its times the run's extremes."""
        for odd in TIME_FIRST_ODD[shape]:
            for seconds, other in ((-500, 900), (900, -500.25)):
                log = time_first_log(shape, 300)
                log[where] = fill(odd, seconds, other)
                for newline, block in (
                    ("\n", 1 << 20),
                    ("\r\n", 1 << 20),
                    ("\n", 997),
                ):
                    data = (newline.join(log) + newline).encode()
                    for options in (
                        {},
                        {"since": at(40.25), "until": at(120.7505)},
                        {"since": at(-1), "until": at(200)},
                    ):
                        assert line_by_line(
                            [data], block, **options
                        ) == by_blocks([data], block, **options), odd

    @pytest.mark.parametrize(
        "odd",
        [
            '{"asctime": "2026-11-27 21:50:0x,000", "message": "x"}',
            '{"asctime": "2026-11-27 21:50:00,000x", "message": "x"}',
            '{"@timestamp":"2026-11-27T21:50:0x.000Z","message":"x"}',
            '{"@timestamp":"2026-11-27T21:50:00.0x0Z","message":"x"}',
        ],
    )
    def test_no_time_in_the_shape_before_since(self, odd: str) -> None:
        """A value of the shape's width but not of its shape is no time
        (read exactly): it does not widen the period to --since."""
        shape = "ecs-logging" if "@timestamp" in odd else "python-json-logger"
        log = time_first_log(shape, 300)
        log[150] = odd
        options: dict[str, Any] = {"since": at(-1), "until": at(200)}
        summary = by_blocks([text_of(log)], **options)
        assert summary == line_by_line([text_of(log)], **options)
        assert (0, 149.5) == period_of(summary)

    @pytest.mark.parametrize("shape", TIME_FIRST_SHAPES)
    @pytest.mark.parametrize(
        ("since", "until", "period"),
        [
            # Inside the run: lines outside widen the period to the bounds.
            (10.0002, 20.0007, (10.0002, 20.0007)),
            (9.9995, 20.0, (9.9995, 20.0)),
            # A fraction of a millisecond past the first and the last line:
            # they are inside.
            (-0.0003, 149.5007, (0, 149.5)),
            # Outside: the run's own extremes.
            (-5, 500, (0, 149.5)),
            (None, None, (0, 149.5)),
        ],
    )
    def test_window_across_a_time_first_run(
        self,
        shape: str,
        since: float | None,
        until: float | None,
        period: tuple[float, float],
    ) -> None:
        """Bounds between two lines, and on one, to the microsecond."""
        log = time_first_log(shape, 300)
        log[30] = time_first_change(shape, 15.0, "closed")
        options: dict[str, Any] = {
            "since": None if since is None else at(since),
            "until": None if until is None else at(until),
        }
        summary = by_blocks([text_of(log)], **options)
        assert summary == line_by_line([text_of(log)], **options)
        assert period == period_of(summary)

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        st.sampled_from(TIME_FIRST_SHAPES),
        st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=len(TIME_FIRST_ODD) + 40),
                st.integers(min_value=-100, max_value=100),
            ),
            max_size=60,
        ),
        st.sampled_from([16, 64, 300, 1 << 20]),
        st.sampled_from(["\n", "\r\n"]),
        st.none() | st.integers(min_value=-100, max_value=100),
        st.none() | st.integers(min_value=-100, max_value=100),
    )
    def test_same_results_as_line_by_line(
        self,
        shape: str,
        lines: list[tuple[int, int]],
        block: int,
        newline: str,
        since: int | None,
        until: int | None,
    ) -> None:
        """Random logs of regular lines of one shape, odd lines among them."""
        odd = TIME_FIRST_ODD[shape]
        text = newline.join(
            fill(odd[pick], t, -t / 3)
            if pick < len(odd)
            else time_first(shape, t + pick / 1000)
            if pick % 7
            else time_first_change(shape, t, "open")
            for pick, t in lines
        )
        data = (text + newline).encode()
        options = {
            "since": None if since is None else at(since),
            "until": None if until is None else at(until),
        }
        assert line_by_line([data], block, **options) == by_blocks(
            [data], block, **options
        )


class TestNoEventMessage:
    """Exit 1 names the keys looked for and the keys found instead."""

    LOOKED_FOR = (
        "looked for the event name (call_rejected, circuit_state_changed, "
        'retry_exhausted, retry_scheduled) under "event", "message" or '
        '"msg" and the time under "timestamp", "time", "ts", "@timestamp" '
        'or "asctime"'
    )

    def message(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        lines: list[str],
        *options: str,
    ) -> str:
        path = write(tmp_path / "app.log", lines)
        code, out, err = run([path, *options], capsys)
        assert (1, "", 1) == (code, out, len(err.splitlines()))
        return err.strip().replace(path, "app.log")

    def test_first_keys(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """No event anywhere: the first JSON object's keys."""
        log = [
            "starting",
            json.dumps({"when": at(0), "lvl": "info", "text": "hello"}),
            json.dumps({"when": at(1), "text": "bye"}),
        ]
        assert (
            "sage-resilience logs summarize: no circuit breaker event found "
            f"in app.log (3 lines read, 1 skipped): {self.LOOKED_FOR}; the "
            'first JSON object (app.log:2) has the keys "when", "lvl", "text"'
        ) == self.message(tmp_path, capsys, log)

    def test_event_name_under_another_key(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An event name under an unknown key: that key is named."""
        log = [
            json.dumps({"when": at(0), "text": "hello"}),
            json.dumps(
                {
                    "when": at(1),
                    "evt": "circuit_state_changed",
                    "breaker": "db",
                }
            ),
        ]
        assert (
            "sage-resilience logs summarize: no circuit breaker event found "
            f"in app.log (2 lines read, 0 skipped): {self.LOOKED_FOR}; "
            'app.log:2 has an event name under the key "evt"; its keys: '
            '"when", "evt", "breaker"'
        ) == self.message(tmp_path, capsys, log)

    def test_time_under_another_key(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Events without a known time key: the reason and their keys."""
        log = [
            json.dumps(
                {"event": "circuit_state_changed", "breaker": "db", "at": 5}
            )
        ] * 2
        assert (
            "sage-resilience logs summarize: no circuit breaker event found "
            "in app.log (2 lines read, 2 skipped): 2 lines name one but "
            "were skipped; the first, app.log:1, missing timestamp; looked "
            'for the time under "timestamp", "time", "ts", "@timestamp" or '
            '"asctime"; its keys: "event", "breaker", "at"'
        ) == self.message(tmp_path, capsys, log)

    def test_nothing_like_json(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Plain text only: said so."""
        assert self.message(tmp_path, capsys, ["a", "b"]).endswith(
            f"{self.LOOKED_FOR}; no line is a JSON object"
        )

    def test_filters_keep_their_message(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Events there but filtered out: the filters are named instead."""
        message = self.message(
            tmp_path, capsys, REFERENCE, "--breaker", "nope"
        )
        assert (
            "sage-resilience logs summarize: no circuit breaker event found "
            "in app.log for breaker nope (14 lines read, 1 skipped)"
        ) == message

    def test_keys_cannot_steer_the_terminal(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Keys from the log are escaped in the message."""
        log = [json.dumps({"\x1b]0;owned\x07": 1, "\u202eabc": 2})]
        message = self.message(tmp_path, capsys, log)
        assert "\x1b" not in message
        assert "\u202e" not in message
        assert '"\\u001b]0;owned\\u0007", "\\u202eabc"' in message


LAST_NIGHT = Path(__file__).parent / "data" / "logs" / "last-night.log.gz"


class TestLastNight:
    """The night told in tests/data/logs/make_last_night.py."""

    def test_story(self) -> None:
        """Each figure of the story, from the gzip fixture."""
        with LAST_NIGHT.open("rb") as stream:
            summary = summarize([("last-night.log.gz", stream)])
        result = summary.to_json()
        assert {
            "database_connection": {
                "trips": 1,
                "time_open_total_s": 30.0,
                "longest_open_s": 30.0,
                "final_state": "closed",
                "rejected": 14,
                "retries_scheduled": 2,
                "retries_exhausted": 1,
                "flapping": False,
                "top_causes": [{"cause": CAUSE_DB, "count": 1}],
            },
            "siliconflow_api": {
                "trips": 4,
                "time_open_total_s": 480.0,
                "longest_open_s": 120.0,
                "final_state": "closed",
                "rejected": 343,
                "retries_scheduled": 4,
                "retries_exhausted": 1,
                "flapping": True,
                "top_causes": [
                    {"cause": CAUSE_API, "count": 3},
                    {"cause": "ReadTimeout: timed out after <n>s", "count": 1},
                ],
            },
        } == result["breakers"]
        # Two uvicorn lines and a four-line traceback are plain text.
        assert (6, 13) == (result["skipped"], len(result["timeline"]))

    def test_html_bands(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The report draws every state stretch of both breakers."""
        target = tmp_path / "night.html"
        code, _, _ = run(
            [str(LAST_NIGHT), "--format", "html", "--output", str(target)],
            capsys,
        )
        page = target.read_text(encoding="utf-8")
        states = re.findall(
            r'class="band band-[a-z-]+" data-state="([a-z-]+)"', page
        )
        assert 0 == code
        # database_connection: closed, open, half-open, closed; then the API:
        # closed, (open, half-open) x 3, closed, open, half-open, closed.
        assert [
            "closed",
            "open",
            "half-open",
            "closed",
            "closed",
            *["open", "half-open"] * 3,
            "closed",
            "open",
            "half-open",
            "closed",
        ] == states


# ---------------------------------------------------------------------------
# Hostile input: a bad line is skipped and counted, never a traceback


def event_line(**keys: Any) -> str:
    """A circuit_state_changed line at 50 s, with *keys* overriding."""
    data: dict[str, Any] = {
        "event": "circuit_state_changed",
        "breaker": "db",
        "old_state": "open",
        "new_state": "half-open",
        "timestamp": at(50),
    }
    data.update(keys)
    return json.dumps(data)


def with_raw(text: str, key: str, raw: str) -> str:
    """*text* with the JSON value of *key* replaced by *raw* JSON text."""
    return re.sub(rf'"{key}": [^,}}]+', f'"{key}": {raw}', text, count=1)


DEEP = 100_000
HOSTILE_LINES: dict[str, tuple[bytes, str | None]] = {
    "nested event": (
        (
            '{"event": "circuit_state_changed", "breaker": "db", "x": '
            + "[" * DEEP
            + "]" * DEEP
            + "}"
        ).encode(),
        "JSON nested too deeply",
    ),
    "nested array": (
        ("[" * DEEP + "]" * DEEP).encode(),
        "JSON nested too deeply",
    ),
    "nested ordinary object": (
        ('{"event": "tick", "x": ' + "[" * DEEP + "]" * DEEP + "}").encode(),
        None,
    ),
    "year 0 after the offset": (
        event_line(timestamp="0001-01-01T00:00:00+01:00").encode(),
        "unparsable timestamp",
    ),
    "year 10000 after the offset": (
        event_line(timestamp="9999-12-31T23:59:59-01:00").encode(),
        "unparsable timestamp",
    ),
    "epoch 1e30": (
        with_raw(event_line(), "timestamp", "1e30").encode(),
        "unparsable timestamp",
    ),
    "epoch 4000 digits": (
        with_raw(event_line(), "timestamp", "9" * 4000).encode(),
        "unparsable timestamp",
    ),
    "epoch NaN": (
        with_raw(event_line(), "timestamp", "NaN").encode(),
        "unparsable timestamp",
    ),
    "epoch text 30 digits": (
        event_line(timestamp="9" * 30).encode(),
        "unparsable timestamp",
    ),
    "epoch text -.5": (
        event_line(timestamp="-.5").encode(),
        "unparsable timestamp",
    ),
    "rejected 4000 digits": (
        with_raw(
            event_line(rejected_while_open=0),
            "rejected_while_open",
            "9" * 4000,
        ).encode(),
        "circuit_state_changed with rejected_while_open out of range",
    ),
    "rejected 1e400": (
        with_raw(
            event_line(rejected_while_open=0), "rejected_while_open", "1e400"
        ).encode(),
        "circuit_state_changed with rejected_while_open out of range",
    ),
    "a number of 5000 digits": (
        with_raw(
            event_line(failure_count=0), "failure_count", "9" * 5000
        ).encode(),
        "invalid JSON (a number too long)",
    ),
    "not an object": (b'["circuit_state_changed", "db"]', "not a JSON object"),
    "a string": (b'"circuit_state_changed"', "not a JSON object"),
    "invalid UTF-8": (
        event_line()
        .replace('"db"', '"db\\u0000"')
        .encode()
        .replace(b"\\u0000", b"\xff\xfe"),
        "not UTF-8",
    ),
    "breaker of 10k characters": (
        event_line(breaker="b" * 10_000).encode(),
        "circuit_state_changed with a breaker name too long",
    ),
    "breaker not a string": (
        event_line(breaker={"name": "db"}).encode(),
        "circuit_state_changed without a breaker",
    ),
    "state of 1 MB": (
        event_line(new_state="open" * 250_000).encode(),
        "circuit_state_changed with an invalid new_state",
    ),
    "state a list": (
        event_line(new_state=["open"]).encode(),
        "circuit_state_changed with an invalid new_state",
    ),
    "event an unhashable list": (
        event_line(event=["circuit_state_changed"]).encode(),
        None,
    ),
    "retry with deep keys": (
        (
            '{"event": "retry_scheduled", "breaker": "db", "timestamp": "'
            + at(50)
            + '", "attempt": '
            + "[" * 900
            + "]" * 900
            + "}"
        ).encode(),
        "maybe",  # counted as a retry, or skipped as too deep: never fatal
    ),
    "ordinary line with a time past 9999": (
        b'{"event": "tick", "timestamp": "9999-12-31T23:59:59-01:00"}',
        None,
    ),
    "ordinary line with a huge epoch": (
        b'{"event": "tick", "ts": ' + b"9" * 5000 + b"}",
        None,
    ),
    "binary": (bytes(set(range(256)) - {10}), "not JSON"),
}


class TestHostileLines:
    """Whatever one line holds, it is skipped or used: never fatal."""

    GOOD = (
        change(0, "db", "closed", "open"),
        change(100, "db", "open", "closed"),
    )

    @pytest.mark.parametrize("case", list(HOSTILE_LINES))
    def test_line_skipped_and_counted(self, case: str) -> None:
        """The bad line is skipped (with its reason) or ignored; the
        events around it are summarised as without it."""
        bad, reason = HOSTILE_LINES[case]
        data = text_of(self.GOOD[:1]) + bad + b"\n" + text_of(self.GOOD[1:])
        summary = summary_of(data)
        clean = summary_of(self.GOOD)
        if reason == "maybe":
            assert summary.skipped in {0, 1}
        elif reason is None:
            assert (0, []) == (summary.skipped, list(summary.skipped_examples))
        else:
            assert [(2, reason)] == [
                (e.line, e.reason) for e in summary.skipped_examples
            ]
        assert (
            3,
            clean.to_json()["timeline"],
            clean.start_us,
            clean.end_us,
        ) == (
            summary.lines,
            summary.to_json()["timeline"],
            summary.start_us,
            summary.end_us,
        )
        # Every output can be produced and written out as UTF-8.
        for text in (
            render_table(summary),
            render_html(summary),
            json.dumps(summary.to_json(), ensure_ascii=False),
        ):
            text.encode("utf-8")

    def test_all_at_once_through_the_command(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Every hostile line in one file: exit 0 and each counted."""
        path = tmp_path / "hostile.log"
        lines = [bad for bad, _ in HOSTILE_LINES.values()]
        path.write_bytes(
            text_of(self.GOOD[:1])
            + b"\n".join(lines)
            + b"\n"
            + text_of(self.GOOD[1:])
        )
        for fmt in ("table", "html", "json"):
            target = tmp_path / f"report.{fmt}"
            code, out, err = run(
                [str(path), "--format", fmt, "--output", str(target)], capsys
            )
            assert (0, "") == (code, out)
            assert "Traceback" not in err
        report = json.loads(
            (tmp_path / "report.json").read_text(encoding="utf-8")
        )
        bad = sum(1 for _, reason in HOSTILE_LINES.values() if reason)
        assert bad - report["skipped"] in {0, 1}  # the "maybe" line
        assert ("db", 1) == (
            next(iter(report["breakers"])),
            report["breakers"]["db"]["trips"],
        )

    def test_lone_surrogates_are_written_escaped(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A name with a lone surrogate (a bad JSON escape) still prints."""
        # json.dumps(chr(0xD800)) is the six characters \ud800 in quotes:
        # valid JSON that decodes to a string UTF-8 cannot encode.
        log = [
            change(0, chr(0xD800), "closed", "open").replace(
                '"\\ud800"', '"db\\ud800"'
            ),
            change(1, "x", "closed", "open", last_failure="E: " + chr(0xDCFF)),
        ]
        assert '"db\\ud800"' in log[0]
        assert '"E: \\udcff"' in log[1]
        path = write(tmp_path / "a.log", log)
        code, out, err = run([str(path), "--format", "json"], capsys)
        assert (0, "") == (code, err)
        report = json.loads(out)
        assert ["db\\ud800", "x"] == sorted(report["breakers"])
        assert (
            "E: \\udcff" == report["breakers"]["x"]["top_causes"][0]["cause"]
        )

    def test_times_outside_the_calendar_never_reach_the_report(self) -> None:
        """A since of year 500 works; years 1 and 9999 are fine."""
        log = [line(0, "boot"), change(5, "db", "closed", "open")]
        summary = summary_of(log, since="0500-01-01T00:00:00Z")
        assert (parse_timestamp(at(0)), 1) == (
            summary.start_us,
            len(summary.timeline),
        )
        edges = [
            json.dumps({"event": "a", "timestamp": "0001-01-01T00:00:00Z"}),
            json.dumps(
                {
                    "event": "circuit_state_changed",
                    "breaker": "db",
                    "old_state": "closed",
                    "new_state": "open",
                    "timestamp": "0001-01-01T00:00:01Z",
                }
            ),
            json.dumps(
                {"event": "b", "timestamp": "9999-12-31T23:59:59.999999Z"}
            ),
        ]
        summary = summary_of(edges)
        render_html(summary)
        assert ("0001-01-01T00:00:01Z", 1) == (
            summary.timeline[0].time,
            summary.breakers["db"].trips,
        )

    def test_huge_counts_do_not_overflow_the_report(self) -> None:
        """rejected_while_open up to 2**53 adds up and prints."""
        log = [
            change(0, "db", "closed", "open"),
            change(1, "db", "open", "half-open", rejected=2**53),
            change(2, "db", "half-open", "open"),
            change(3, "db", "open", "half-open", rejected=2**53),
        ]
        summary = summary_of(log)
        assert 2**54 == summary.breakers["db"].rejected
        assert f"{2**54:,}" in render_table(summary)

    def test_long_failure_message_in_bounded_time(
        self, tmp_path: Path
    ) -> None:
        """A trip whose last_failure is 5 MB (or 100k letters) is quick.

        Run in a child process with a timeout: redaction of the whole
        message was quadratic (minutes), a regression must not hang here.
        """
        path = tmp_path / "long.log"
        log = [
            change(
                0, "db", "closed", "open", last_failure="E: " + "a" * 100_000
            ),
            change(1, "db", "open", "closed"),
            change(
                2,
                "db",
                "closed",
                "open",
                last_failure="F: " + "b" * 5_000_000,
            ),
        ]
        write(path, log)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "sage_resilience.cli",
                "logs",
                "summarize",
                str(path),
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (0, "") == (done.returncode, done.stderr)
        assert [
            {"cause": "E: …", "count": 1},
            {"cause": "F: …", "count": 1},
        ] == json.loads(done.stdout)["breakers"]["db"]["top_causes"]

    def test_cause_is_cut_at_a_space(self) -> None:
        """A long message is cut between words, no half token kept."""
        text = "OSError: " + "word " * 300 + "postgresql://u:hunter2@db/x"
        cause = normalise_cause(text)
        assert "hunter" not in cause
        assert cause.startswith("OSError: word word")
        assert cause.endswith("…")


class TestGzipBomb:
    """Decompression stops at a ratio no log reaches."""

    @staticmethod
    def bomb(members: int) -> bytes:
        """*members* gzip members of 16 MiB of newlines (about 1000x)."""
        return gzip.compress(b"\n" * (16 << 20), 9) * members

    def test_rest_skipped_after_a_bomb(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Events before the bomb are used; the rest is skipped, said so."""
        monkeypatch.setattr(logs_read, "_GZIP_FREE", 1 << 20)
        data = gzip.compress(text_of(REFERENCE)) + self.bomb(1)
        summary = summary_of(data)
        assert EXPECTED["breakers"] == summary.to_json()["breakers"]
        assert summary.lines < 4 << 20  # far from the 16 MiB of lines
        reason = (
            "gzip data expanding more than 100 times (a decompression "
            "bomb?): the rest of the file is not read"
        )
        assert reason == summary.skipped_examples[-1].reason
        assert [("a.log", reason)] == [
            (p.file, p.reason) for p in summary.problems
        ]

    def test_ordinary_gzip_is_read_whole(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With no free allowance at all, a real log still reads whole."""
        monkeypatch.setattr(logs_read, "_GZIP_FREE", 0)
        assert (
            EXPECTED
            == summary_of(gzip.compress(text_of(REFERENCE), 9)).to_json()
        )
        with LAST_NIGHT.open("rb") as stream:
            summary = summarize([("last-night.log.gz", stream)])
        assert (749, ()) == (summary.lines, summary.problems)

    def test_bomb_in_a_child_process(self, tmp_path: Path) -> None:
        """4 GiB of newlines in 4 MB: stopped quickly, exit 0, one note.

        Without the cap this takes minutes; the timeout catches that.
        """
        path = tmp_path / "bomb.log.gz"
        path.write_bytes(gzip.compress(text_of(REFERENCE)) + self.bomb(256))
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "sage_resilience.cli",
                "logs",
                "summarize",
                str(path),
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert 0 == done.returncode
        assert EXPECTED["breakers"] == json.loads(done.stdout)["breakers"]
        note = (
            f"sage-resilience logs summarize: {path}: gzip data expanding "
            "more than 100 times (a decompression bomb?): the rest of the "
            "file is not read"
        )
        assert [note] == done.stderr.splitlines()


class TestArguments:
    """Every bad argument: exit 2, one line, no traceback."""

    @pytest.mark.parametrize(
        ("argv", "expected"),
        [
            (["--since", "9" * 30], "argument --since: not a time"),
            (["--since", "99999999999999d"], "is before the year 1"),
            (["--since", "9" * 400 + "s"], "argument --since: not a time"),
            (["--until", "9999-12-31T23:59:59-01:00"], "argument --until"),
            (["--until", "10000-01-01"], "argument --until"),
            (["--since", "\x1b[2Jsoon"], "not a time: '\\x1b[2Jsoon'"),
            (["--flapping-window", "1e308"], "argument --flapping-window"),
            (["--flapping-window", "nan"], "argument --flapping-window"),
            (["--flapping-window", "inf"], "argument --flapping-window"),
            (["--flapping-trips", "9" * 5000], "argument --flapping-trips"),
            (["--flapping-trips", "-1"], "argument --flapping-trips"),
            (["--format", "xml"], "argument --format: invalid choice"),
        ],
    )
    def test_exit_2_one_line(
        self,
        argv: list[str],
        expected: str,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """The real command line refuses it in one line."""
        from sage_resilience.cli import main  # noqa: PLC0415

        path = write(tmp_path / "a.log", REFERENCE)
        with pytest.raises(SystemExit) as exc:
            main(["logs", "summarize", path, *argv])
        out, err = capsys.readouterr()
        assert (2, "", 1) == (exc.value.code, out, len(err.splitlines()))
        assert err.startswith("sage-resilience logs summarize: error: ")
        assert expected in err
        assert "\x1b" not in err

    def test_unknown_option(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An unknown option: exit 2 from the main parser, no traceback."""
        from sage_resilience.cli import main  # noqa: PLC0415

        path = write(tmp_path / "a.log", REFERENCE)
        with pytest.raises(SystemExit) as exc:
            main(["logs", "summarize", path, "--nope"])
        _, err = capsys.readouterr()
        assert 2 == exc.value.code
        assert "unrecognized arguments: --nope" in err
        assert "Traceback" not in err

    def test_missing_file_argument(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """No FILE at all: exit 2, one line."""
        from sage_resilience.cli import main  # noqa: PLC0415

        with pytest.raises(SystemExit) as exc:
            main(["logs", "summarize"])
        _, err = capsys.readouterr()
        assert (2, 1) == (exc.value.code, len(err.splitlines()))
        assert "the following arguments are required: FILE" in err

    def test_help_still_works(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--help prints the usage, exit 0."""
        from sage_resilience.cli import main  # noqa: PLC0415

        with pytest.raises(SystemExit) as exc:
            main(["logs", "summarize", "--help"])
        out, _ = capsys.readouterr()
        assert 0 == exc.value.code
        assert "--flapping-window" in out

    def test_api_refuses_absurd_flapping_values(self) -> None:
        """summarize() raises ValueError, not OverflowError, on them."""
        for options in (
            {"flapping_window": 1e308},
            {"flapping_window": float("nan")},
            {"flapping_trips": 0},
            {"flapping_trips": True},
        ):
            with pytest.raises(ValueError, match="flapping"):
                summary_of(REFERENCE, **options)
        with pytest.raises(ValueError, match="years 1 to 9999"):
            summary_of(
                REFERENCE,
                since=dt.datetime(
                    9999,
                    12,
                    31,
                    23,
                    tzinfo=dt.timezone(-dt.timedelta(hours=2)),
                ),
            )


class TestTerminalEscapes:
    """No text from the logs reaches the terminal raw."""

    EVIL = "\x1b[2J\x1b]0;pwned\x07\x9b31m\u202egnp.exe\r"

    def test_every_field_of_the_table(self) -> None:
        """Names, states, causes and file names are shown escaped."""
        log = [
            change(
                0,
                f"db{self.EVIL}",
                "closed",
                "open",
                last_failure=f"E: {self.EVIL}",
            ),
            change(1, "x", "closed", f"weird{self.EVIL}"),
        ]
        sources = [(f"app{self.EVIL}.log", io.BytesIO(text_of(log)))]
        table = render_table(summarize(sources))
        for raw in ("\x1b", "\x07", "\x9b", "\u202e", "\r"):
            assert raw not in table
        assert (
            "db\\x1b[2J\\x1b]0;pwned\\x07\\x9b31m\\u202egnp.exe\\x0d" in table
        )

    def test_error_messages(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A file name with escapes, in an error: escaped."""
        missing = str(tmp_path / f"no{self.EVIL}.log")
        code, _, err = run([missing], capsys)
        assert 1 == code
        assert "\x1b" not in err
        assert "\\x1b[2J" in err


# ---------------------------------------------------------------------------
# Generated logs against a brute-force model


NEXT_STATES = {
    "closed": ["open"],
    "open": ["half-open"],
    "half-open": ["open", "closed"],
}


STAMP_FORMS = 7


def stamp(us: int, form: int) -> dict[str, object]:
    """A time key and value in one of the forms logs use (us in ms)."""
    moment = logs_times._EPOCH + dt.timedelta(microseconds=us)
    ms = f"{moment.microsecond // 1000:03d}"
    if form == 0:  # structlog TimeStamper(fmt="iso", utc=True)
        return {"timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
    if form == 1:
        offset = dt.timezone(dt.timedelta(hours=2))
        return {"timestamp": moment.astimezone(offset).isoformat()}
    if form == 2:
        return {
            "timestamp": us / 1_000_000
            if us % 1000 == 0
            else moment.isoformat()
        }
    if form == 4:  # python logging's asctime (UTC converter)
        return {"asctime": moment.strftime("%Y-%m-%d %H:%M:%S,") + ms}
    if form == 5:  # ecs-logging
        return {"@timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.") + ms + "Z"}
    if form == 6:  # python-json-logger timestamp=True
        return {"timestamp": moment.isoformat(timespec="microseconds")}
    return {"timestamp": moment.replace(tzinfo=None).isoformat(sep=" ")}


STAMP_FORM = st.integers(0, STAMP_FORMS - 1)
EVENT_KEY = st.sampled_from(_logs.EVENT_KEYS)


@st.composite
def generated_logs(draw: st.DrawFn) -> dict[str, Any]:
    """Breakers with consistent state chains, retries, noise, disorder."""
    start = 1_795_900_000_000_000
    names = draw(
        st.lists(
            st.sampled_from(["db", "api", "vec", "mem"]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    entries: list[tuple[int, str]] = []  # (time, line)
    model: dict[str, dict[str, Any]] = {}
    end = start
    for name in names:
        steps = draw(st.lists(st.integers(1, 90_000), min_size=0, max_size=12))
        state, now, open_since = "closed", start, None
        trips = open_total = 0
        chain = []
        for gap in steps:
            now += gap * 1000
            new = draw(st.sampled_from(NEXT_STATES[state]))
            chain.append((now, state, new))
            if new == "open":
                trips += 1
                open_since = now
            elif state == "open":
                open_total += now - open_since
            state = new
        retries = draw(st.integers(0, 6))
        for index in range(retries):
            when = start + draw(st.integers(1, 900_000)) * 1000
            entries.append(
                (
                    when,
                    json.dumps(
                        {
                            draw(EVENT_KEY): "retry_scheduled",
                            "breaker": name,
                            "attempt": index,
                            "wait": index / 10,
                            **stamp(when, draw(STAMP_FORM)),
                        }
                    ),
                )
            )
            end = max(end, when)
        for when, old, new in chain:
            entries.append(
                (
                    when,
                    json.dumps(
                        {
                            draw(EVENT_KEY): "circuit_state_changed",
                            "breaker": name,
                            "old_state": old,
                            "new_state": new,
                            "last_failure": "OSError: refused",
                            **stamp(when, draw(STAMP_FORM)),
                        }
                    ),
                )
            )
            end = max(end, when)
        model[name] = {
            "trips": trips,
            "open_us": open_total,
            "open_since": open_since if state == "open" else None,
            "final": state,
            "retries": retries,
            "seen": bool(chain) or retries > 0,
        }
    tail = end + draw(st.integers(0, 5_000)) * 1000
    entries.append(
        (
            start,
            json.dumps({"event": "boot", **stamp(start, draw(STAMP_FORM))}),
        )
    )
    entries.append(
        (tail, json.dumps({"msg": "bye", **stamp(tail, draw(STAMP_FORM))}))
    )
    for info in model.values():
        if info["open_since"] is not None:
            info["open_us"] += tail - info["open_since"]
    entries.sort(key=lambda entry: entry[0])
    lines = [text for _, text in entries]
    # Disorder: swap neighbours; duplicates: repeat a line close by.
    rng = random.Random(draw(st.integers(0, 2**32)))
    for _ in range(draw(st.integers(0, len(lines)))):
        i = rng.randrange(len(lines))
        j = min(len(lines) - 1, i + rng.randrange(1, 4))
        lines[i], lines[j] = lines[j], lines[i]
    for _ in range(draw(st.integers(0, 5))):
        i = rng.randrange(len(lines))
        lines.insert(min(len(lines), i + rng.randrange(0, 3)), lines[i])
    garbage = draw(
        st.lists(
            st.sampled_from(
                [
                    "oops",
                    "[1]",
                    "{truncated",
                    '{"event": "retry_scheduled"',
                    "  ",
                ]
            ),
            max_size=5,
        )
    )
    for text in garbage:
        lines.insert(rng.randrange(len(lines) + 1), text)
    skipped = sum(1 for text in garbage if text.strip())
    split = draw(st.integers(0, len(lines)))
    files = [lines[:split], lines[split:]] if draw(st.booleans()) else [lines]
    compress = draw(st.booleans())
    return {
        "files": files,
        "compress": compress,
        "model": model,
        "lines": len(lines),
        "skipped": skipped,
    }


class TestGeneratedLogs:
    """Hypothesis logs agree with a brute-force model."""

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(generated_logs())
    def test_against_model(self, case: dict[str, Any]) -> None:
        """Trips, open time, final state, retries, lines and skipped."""
        files = []
        for content in reversed(case["files"]):
            data = text_of(content) if content else b""
            files.append(gzip.compress(data) if case["compress"] else data)
        summary = summary_of(*files)
        expected = {
            name: (
                info["trips"],
                info["open_us"] / 1_000_000,
                info["final"],
                info["retries"],
            )
            for name, info in case["model"].items()
            if info["seen"]
        }
        actual = {
            name: (
                b.trips,
                b.time_open_total_s,
                b.final_state,
                b.retries_scheduled,
            )
            for name, b in summary.breakers.items()
        }
        assert expected == actual
        assert (case["lines"], case["skipped"]) == (
            summary.lines,
            summary.skipped,
        )
        times = [t.time_us for t in summary.timeline]
        assert sorted(times) == times


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    # float(10**400) raises OverflowError
    | st.sampled_from([10**400, -(10**400), 2**53 + 1])
    | st.floats()
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
NAMES = st.sampled_from(sorted(logs_model._EVENTS))
TIMES = st.sampled_from(
    [
        at(1),
        at(2.5),
        "2026-11-27 22:00:03,250",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "10000-01-01",
        "-.5",
        "9" * 40,
        1_795_900_000,
        1_795_900_000_123,
        1e30,
    ]
)
FUZZ_OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "event": NAMES | JSON_VALUES,
        "message": NAMES | JSON_VALUES,
        "msg": NAMES,
        "breaker": st.sampled_from(["db", "api", "", "\x1b[2J"]) | JSON_VALUES,
        "old_state": st.sampled_from(["closed", "open", "half_open"])
        | JSON_VALUES,
        "new_state": st.sampled_from(["closed", "open", "half-open"])
        | JSON_VALUES,
        "timestamp": TIMES | JSON_VALUES,
        "asctime": TIMES,
        "@timestamp": TIMES,
        "ts": TIMES | JSON_VALUES,
        "rejected_while_open": JSON_VALUES,
        "last_failure": st.text(max_size=40) | JSON_VALUES,
        "reason": st.sampled_from(["forced", "x"]),
        "attempt": JSON_VALUES,
    },
)
FUZZ_LINES = st.one_of(
    FUZZ_OBJECTS.map(lambda obj: json.dumps(obj).encode()),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    # (not at the start of a file: gzip's magic bytes there mean gzip)
    st.binary(max_size=40).map(lambda data: b"#" + data.replace(b"\n", b"")),
    FUZZ_OBJECTS.map(lambda obj: json.dumps(obj).encode()[:-3]),
)


class TestFuzz:
    """Random lines: a summary and every report, never an exception."""

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.lists(FUZZ_LINES, max_size=25), st.booleans())
    def test_never_raises(self, lines: list[bytes], compress: bool) -> None:
        """Whatever the lines, every output is produced and writable."""
        data = b"\n".join(lines)
        summary = summary_of(gzip.compress(data) if compress else data)
        trailing = 1 if lines and not lines[-1] else 0  # "a\n" is 1 line
        assert len(lines) - trailing == summary.lines
        assert summary.skipped <= summary.lines
        for text in (
            render_table(summary),
            render_html(summary),
            json.dumps(summary.to_json(), ensure_ascii=False),
        ):
            text.encode("utf-8")
        table = render_table(summary).replace("\n", "")
        assert _terminal._CONTROL.search(table) is None


# ---------------------------------------------------------------------------
# HTML


def html_summary() -> _logs.Summary:
    """db: closed 25%, open 50%, half-open 25%; api: closed throughout."""
    return summary_of(
        [
            line(0, "boot"),
            change(100, "db", "closed", "open"),
            change(300, "db", "open", "half-open", rejected=5),
            line(400, "retry_scheduled", breaker="api", attempt=1),
        ]
    )


class TestHtml:
    """The self-contained HTML report."""

    def test_self_contained(self) -> None:
        """No reference to anything outside the page, no script."""
        page = render_html(summary_of(REFERENCE))
        assert page.startswith("<!DOCTYPE html>")
        lowered = page.lower()
        for banned in (
            "http://",
            "https://",
            "<script",
            "src=",
            "href=",
            "url(",
        ):
            assert banned not in lowered, banned
        # The cause came from a log line holding a URL: still none in the page.
        assert "Server error" in page

    def test_bands(self) -> None:
        """One band per state stretch, with class and data-state."""
        page = render_html(html_summary())
        bands = re.findall(
            r'<rect class="band band-([a-z-]+)" data-state="([^"]+)"[^>]*'
            r'width="([0-9.]+)"',
            page,
        )
        # api (first by name): closed all along; db: closed, open, half-open.
        assert [
            ("closed", "closed"),
            ("closed", "closed"),
            ("open", "open"),
            ("half-open", "half-open"),
        ] == [(css, state) for css, state, _ in bands]
        widths = [float(width) for _, _, width in bands]
        assert widths[2] == pytest.approx(2 * widths[3])
        assert widths[0] == pytest.approx(sum(widths[1:]))
        assert 'class="legend"' in page
        assert "time (UTC)" in page

    def test_escapes_log_text(self) -> None:
        """Breaker names and causes from the logs cannot inject markup."""
        evil = '<img src=x onerror=alert(1)>"'
        page = render_html(
            summary_of(
                [
                    change(
                        0, evil, "closed", "open", last_failure=f"E: {evil}"
                    ),
                    change(1, "x", "closed", "<b>", last_failure=evil),
                ]
            )
        )
        assert "<img" not in page
        assert "<b>" not in page
        assert "&lt;img" in page
        assert 'class="band band-other"' in page

    def test_rendered_in_chromium(self, tmp_path: Path) -> None:
        """Headless Chromium draws the bands in proportion to the time."""
        chromium = need_binary(
            "chromium", "apt-get install chromium chromium-driver"
        )
        report = tmp_path / "report.html"
        report.write_text(render_html(html_summary()), encoding="utf-8")
        common = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={tmp_path / 'profile'}",
        ]
        dom = subprocess.run(
            [*common, "--dump-dom", report.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        assert 4 == len(re.findall(r'<rect class="band band-', dom))
        shot = tmp_path / "shot.png"
        subprocess.run(
            [
                *common,
                "--window-size=1100,1100",
                f"--screenshot={shot}",
                report.as_uri(),
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )
        colours = png_colours(shot.read_bytes())
        closed = colours[(0x3F, 0xA3, 0x4D)]
        open_ = colours[(0xD7, 0x26, 0x3D)]
        half = colours[(0xF0, 0xA2, 0x02)]
        swatch = 14 * 14
        # Bands are drawn: far more than the legend's swatch of each colour.
        assert open_ > 20 * swatch
        # ...and in proportion: open lasted twice as long as half-open, the
        # two closed stretches (api all along, db 25%) five times as long.
        assert (open_ - swatch) / (half - swatch) == pytest.approx(2, rel=0.1)
        assert (closed - swatch) / (half - swatch) == pytest.approx(5, rel=0.1)


def png_colours(data: bytes) -> Counter[tuple[int, int, int]]:
    """Count the RGB colours of a PNG (8-bit RGB/RGBA), stdlib only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, []
    width = height = channels = 0
    while position < len(data):
        (size,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + size]
        position += 12 + size
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(
                ">IIBBBBB", body
            )
            assert (8, 0) == (depth, interlace)
            channels = {2: 3, 6: 4}[colour]
        elif kind == b"IDAT":
            chunks.append(body)
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    previous = bytes(stride)
    counts: Counter[tuple[int, int, int]] = Counter()
    for row in range(height):
        offset = row * (stride + 1)
        kind = raw[offset]
        scan = raw[offset + 1 : offset + 1 + stride]
        if kind == 0:
            current = bytes(scan)
        elif kind == 2:
            current = bytes(
                (a + b) & 255 for a, b in zip(scan, previous, strict=True)
            )
        else:
            out = bytearray(scan)
            for i in range(stride):
                left = out[i - channels] if i >= channels else 0
                up = previous[i]
                corner = previous[i - channels] if i >= channels else 0
                if kind == 1:
                    guess = left
                elif kind == 3:
                    guess = (left + up) // 2
                else:
                    pa = abs(up - corner)
                    pb = abs(left - corner)
                    pc = abs(left + up - 2 * corner)
                    guess = (
                        left
                        if pa <= pb and pa <= pc
                        else up
                        if pb <= pc
                        else corner
                    )
                out[i] = (out[i] + guess) & 255
            current = bytes(out)
        counts.update(
            zip(
                current[0::channels],
                current[1::channels],
                current[2::channels],
                strict=True,
            )
        )
        previous = current
    return counts

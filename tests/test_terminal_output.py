"""What the command line shows on a terminal, and what it writes to a pipe.

Each command runs in a child process whose stdout and stderr are either a
pipe or a pseudo-terminal (``os.openpty``): events are a console view on a
terminal and JSON lines in a pipe, spinners and progress lines are drawn on
a terminal only, and stdout never holds anything but the data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from typing import IO, TYPE_CHECKING, Any

import pytest
from sage_resilience.cli._logging import configure_logging
from sage_resilience.cli._progress import ReadProgress, StatusLine, human_bytes

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

#: Any escape sequence (colours, erasing the line).
ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

#: A console event line: time, level, event name (colours removed).
CONSOLE_LINE = re.compile(
    r"^\d\d:\d\d:\d\d \[(debug|info|warning|error)\s*\] (\w+)"
)

POLICIES = """\
version: 1
storage: {{backend: sqlite, path: '{db}'}}
policies:
  api: {{failure_threshold: 2, recovery_timeout: 60}}
"""


@dataclasses.dataclass
class Run:
    code: int
    out: str
    err: str


def _drain(fd: int, into: list[bytes]) -> None:
    """Read a pty's master side until the child's side is closed."""
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed
            return
        if not data:
            return
        into.append(data)


def _pty() -> tuple[int, int]:
    """A pseudo-terminal 120 columns wide: (master, slave)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    return master, slave


def run_cli(
    *argv: str,
    tty_out: bool = False,
    tty_err: bool = False,
    env: dict[str, str] | None = None,
    feed: Sequence[tuple[float, bytes]] = (),
    timeout: float = 90,
) -> Run:
    """Run ``sage-resilience ARGV``, stdout/stderr a pty or a pipe each.

    *feed*: (seconds to wait, bytes) written to stdin one after the other.
    A pty turns each newline into CR LF; it is turned back here, so that a
    lone CR (a redrawn status line) stays visible.
    """
    children: dict[str, Any] = {}
    readers: list[threading.Thread] = []
    chunks: dict[str, list[bytes]] = {"out": [], "err": []}
    masters: list[int] = []
    for key, wanted in (("out", tty_out), ("err", tty_err)):
        if wanted:
            master, slave = _pty()
            masters.append(master)
            children[key] = slave
            reader = threading.Thread(
                target=_drain, args=(master, chunks[key]), daemon=True
            )
            readers.append(reader)
        else:
            children[key] = subprocess.PIPE
    full_env = {**os.environ, "COLUMNS": "120"}
    full_env.pop("NO_COLOR", None)
    full_env.update(env or {})
    process = subprocess.Popen(
        [sys.executable, "-m", "sage_resilience.cli", *argv],
        stdin=subprocess.PIPE,
        stdout=children["out"],
        stderr=children["err"],
        env=full_env,
    )
    for value in children.values():
        if isinstance(value, int) and value >= 0:
            os.close(value)  # the child holds its own copy
    for reader in readers:
        reader.start()
    piped = _pipe_readers(process, chunks)
    assert process.stdin is not None
    for wait, data in feed:
        time.sleep(wait)
        process.stdin.write(data)
        process.stdin.flush()
    process.stdin.close()
    code = process.wait(timeout=timeout)
    for thread in [*readers, *piped]:
        thread.join(timeout=10)
    for master in masters:
        os.close(master)

    def text(key: str, tty: bool) -> str:
        raw = b"".join(chunks[key]).decode("utf-8", "replace")
        return raw.replace("\r\n", "\n") if tty else raw

    return Run(code, text("out", tty_out), text("err", tty_err))


def _pipe_readers(
    process: subprocess.Popen[bytes], chunks: dict[str, list[bytes]]
) -> list[threading.Thread]:
    threads = []
    for key, stream in (("out", process.stdout), ("err", process.stderr)):
        if stream is None:
            continue

        def read(stream: IO[bytes] = stream, key: str = key) -> None:
            chunks[key].append(stream.read())

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        threads.append(thread)
    return threads


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line is a JSON object (else the test fails)."""
    return [json.loads(line) for line in text.splitlines() if line]


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "policies.yaml"
    path.write_text(POLICIES.format(db=tmp_path / "state.sqlite"))
    return path


# -- events: console on a terminal, JSON lines in a pipe ----------------------


@pytest.fixture(scope="module")
def on_tty() -> Run:
    """``demo --quick`` on a terminal."""
    return run_cli("demo", "--quick", tty_out=True, tty_err=True)


@pytest.fixture(scope="module")
def in_pipe() -> Run:
    """``demo --quick`` in a pipe."""
    return run_cli("demo", "--quick")


class TestDemoOutput:
    def test_console_view_on_a_terminal(self, on_tty: Run) -> None:
        """One coloured, readable line per event; no JSON."""
        assert 0 == on_tty.code, on_tty.err
        assert ESCAPE.search(on_tty.out) is not None  # colours
        plain = ESCAPE.sub("", on_tty.out)
        events = [
            match.group(2)
            for line in plain.splitlines()
            if (match := CONSOLE_LINE.match(line))
        ]
        assert "demo_step" in events
        assert "circuit_state_changed" in events
        assert "demo_finished" == events[-1]
        assert not [line for line in plain.splitlines() if line[:1] == "{"]
        assert "config_loaded" not in plain  # only with -v
        assert "breaker " in plain  # the final table

    def test_json_lines_in_a_pipe(self, in_pipe: Run) -> None:
        """The same events as JSON lines, then the table; no escape codes."""
        assert 0 == in_pipe.code, in_pipe.err
        assert "\x1b" not in in_pipe.out + in_pipe.err
        head, _, table = in_pipe.out.partition("\n\n")
        events = json_lines(head)
        assert "demo_finished" == events[-1]["event"]
        assert {"event", "level", "timestamp"} <= set(events[0])
        assert "config_loaded" not in {e["event"] for e in events}
        assert table.startswith("breaker ")

    def test_log_format_json_on_a_terminal(self) -> None:
        """--log-format json: JSON lines even on a terminal."""
        run = run_cli("demo", "--quick", "--log-format", "json", tty_out=True)
        assert 0 == run.code, run.err
        head, _, _ = run.out.partition("\n\n")
        assert "demo_finished" == json_lines(head)[-1]["event"]

    def test_log_format_console_in_a_pipe(self, tmp_path: Path) -> None:
        """--log-format console in a pipe: readable lines, no colours.

        The --log file gets every event as JSON, config_loaded included.
        """
        log = tmp_path / "demo.log"
        run = run_cli(
            "--log-format", "console", "demo", "--quick", "--log", str(log)
        )
        assert 0 == run.code, run.err
        assert "\x1b" not in run.out
        assert any(CONSOLE_LINE.match(line) for line in run.out.splitlines())
        logged = {e["event"] for e in json_lines(log.read_text())}
        assert {"config_loaded", "demo_step", "demo_finished"} <= logged

    def test_no_color(self) -> None:
        """NO_COLOR: the console view on a terminal, without colours."""
        run = run_cli("demo", "--quick", tty_out=True, env={"NO_COLOR": "1"})
        assert 0 == run.code, run.err
        assert "\x1b" not in run.out
        assert any(CONSOLE_LINE.match(line) for line in run.out.splitlines())


class TestVerbose:
    def test_config_loaded_only_with_verbose(self, tmp_path: Path) -> None:
        """config_loaded on stderr with -v/--verbose, before or after."""
        path = str(config_file(tmp_path))
        quiet = run_cli("status", "--config", path)
        assert 0 == quiet.code, quiet.err
        assert "" == quiet.err
        for argv in (
            ("-v", "status", "--config", path),
            ("status", "--config", path, "--verbose"),
        ):
            loud = run_cli(*argv)
            assert 0 == loud.code, loud.err
            (event,) = json_lines(loud.err)
            assert "config_loaded" == event["event"]
            assert loud.out.startswith("BREAKER")

    def test_verbose_on_a_terminal(self, tmp_path: Path) -> None:
        """-v on a terminal: config_loaded as a console line."""
        path = str(config_file(tmp_path))
        run = run_cli("status", "--config", path, "-v", tty_err=True)
        assert 0 == run.code, run.err
        (line,) = ESCAPE.sub("", run.err).splitlines()
        match = CONSOLE_LINE.match(line)
        assert match is not None
        assert "config_loaded" == match.group(2)
        assert "\x1b" not in run.out  # stdout is a pipe: a plain table


# -- status: the storage's events, and stdout kept clean ---------------------


def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestStatusStorageDown:
    def write(self, tmp_path: Path) -> str:
        url = f"redis://:hunter2@127.0.0.1:{refused_port()}/0"
        path = tmp_path / "redis.yaml"
        path.write_text(
            "version: 1\n"
            f"storage: {{backend: redis, url: '{url}'}}\n"
            "policies:\n  api: {failure_threshold: 2}\n"
        )
        return str(path)

    def test_on_a_terminal(self, tmp_path: Path) -> None:
        """storage_degraded as a console line; the table says unreachable."""
        run = run_cli("status", "--config", self.write(tmp_path), tty_err=True)
        assert 1 == run.code
        err = ESCAPE.sub("", run.err)
        assert "storage_degraded" in err
        assert "is unreachable" in err.splitlines()[-1]
        assert run.out.startswith("storage redis://:***@127.0.0.1:")
        assert "redis (unreachable)" in run.out
        assert "hunter2" not in run.out + run.err

    def test_json_in_a_pipe(self, tmp_path: Path) -> None:
        """--json: stdout is the JSON object alone, stderr JSON lines + 1."""
        run = run_cli("status", "--config", self.write(tmp_path), "--json")
        assert 1 == run.code
        body = json.loads(run.out)
        assert "unreachable" == body["api"]["storage_health"]
        *events, last = run.err.splitlines()
        assert ["storage_degraded"] == [
            e["event"] for e in map(json.loads, events)
        ]
        assert last.startswith("sage-resilience status: storage redis://")


# -- doctor: findings as they come, a spinner while waiting ------------------


@contextlib.contextmanager
def hung_host() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


def doctor_config(tmp_path: Path, hung: int, refused: int) -> str:
    path = tmp_path / "doctor.yaml"
    path.write_text(
        "version: 1\npolicies:\n"
        "  slow_api:\n    kind: http\n"
        f"    settings: {{base_url: 'http://127.0.0.1:{hung}/v1'}}\n"
        "  dead_api:\n    kind: http\n"
        f"    settings: {{base_url: 'http://127.0.0.1:{refused}/v1'}}\n"
    )
    return str(path)


class TestDoctorProgress:
    def test_spinner_on_a_terminal(self, tmp_path: Path) -> None:
        """While a check hangs: a spinner with the elapsed time on stderr.

        stdout (a pipe) holds the findings alone, in configuration order.
        """
        with hung_host() as hung:
            path = doctor_config(tmp_path, hung, refused_port())
            run = run_cli(
                "doctor", "--config", path, "--timeout", "1.5", tty_err=True
            )
        assert 1 == run.code
        assert ["slow_api", "dead_api"] == [
            line.split(":")[0] for line in run.out.splitlines()
        ]
        assert "\x1b" not in run.out
        frames = re.findall(r"\r\x1b\[K(. checking [^\r]*)", run.err)
        assert frames, run.err
        assert any("checking slow_api (" in frame for frame in frames)
        assert re.search(r"\(\d+\.\ds, 1 of 2 done\)", run.err)
        # the line is erased at the end, before the summary
        assert run.err.rstrip("\n").endswith("2 checked, 2 problem(s)")

    def test_findings_as_they_complete_on_a_terminal(
        self, tmp_path: Path
    ) -> None:
        """On a terminal the quick finding comes first, not after the hang."""
        with hung_host() as hung:
            path = doctor_config(tmp_path, hung, refused_port())
            run = run_cli(
                "doctor", "--config", path, "--timeout", "1.5", tty_out=True
            )
        assert 1 == run.code
        assert ["dead_api", "slow_api"] == [
            line.split(":")[0] for line in run.out.splitlines()
        ]

    def test_no_spinner_in_a_pipe(self, tmp_path: Path) -> None:
        """stderr a pipe: the summary line only, no frames, no escapes."""
        with hung_host() as hung:
            path = doctor_config(tmp_path, hung, refused_port())
            run = run_cli("doctor", "--config", path, "--timeout", "1.5")
        assert 1 == run.code
        assert "sage-resilience doctor: 2 checked, 2 problem(s)\n" == run.err
        assert "\r" not in run.out + run.err

    def test_json_stays_clean_on_a_terminal(self, tmp_path: Path) -> None:
        """--json to a pipe with stderr a terminal: stdout is the JSON."""
        with hung_host() as hung:
            path = doctor_config(tmp_path, hung, refused_port())
            run = run_cli(
                "doctor", "--config", path, "--timeout", "1", "--json",
                tty_err=True,
            )  # fmt: skip
        assert 1 == run.code
        assert ["slow_api", "dead_api"] == [
            f["policy"] for f in json.loads(run.out)
        ]
        assert "checking" in run.err


# -- logs summarize: progress on large inputs ---------------------------------


def log_lines(count: int) -> bytes:
    event = {
        "event": "circuit_state_changed",
        "breaker": "api",
        "old_state": "closed",
        "new_state": "open",
        "timestamp": "2026-01-01T00:00:00Z",
        "padding": "x" * 200,
    }
    line = (json.dumps(event) + "\n").encode()
    return line * count


class TestLogsProgress:
    def test_progress_on_a_terminal(self) -> None:
        """A slow input: 'reading: N KB (T s)' on stderr, then erased."""
        data = log_lines(2000)
        half = len(data) // 2
        run = run_cli(
            "logs", "summarize", "-", tty_err=True,
            feed=((0, data[:half]), (1.2, data[half:])),
        )  # fmt: skip
        assert 0 == run.code, run.err
        assert re.search(r"\r\x1b\[K. reading: [\d.]+ [KM]?B \(\d", run.err)
        assert run.err.endswith("\r\x1b[K")  # erased at the end
        assert "\x1b" not in run.out
        assert "api" in run.out

    def test_no_progress_in_a_pipe(self) -> None:
        """stderr a pipe: nothing on it."""
        data = log_lines(2000)
        half = len(data) // 2
        run = run_cli(
            "logs", "summarize", "-", "--format", "json",
            feed=((0, data[:half]), (1.2, data[half:])),
        )  # fmt: skip
        assert 0 == run.code, run.err
        assert "" == run.err
        assert "api" in json.loads(run.out)["breakers"]


class FakeTerminal:
    """A text stream that says it is a terminal."""

    def __init__(self) -> None:
        self.written: list[str] = []

    def write(self, text: str) -> int:
        self.written.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


class TestReadProgress:
    def test_percent_of_regular_files(self, tmp_path: Path) -> None:
        """Files of known size: the share read, drawn as it goes."""
        path = tmp_path / "app.log"
        path.write_bytes(b"x" * 300_000)
        screen = FakeTerminal()
        progress = ReadProgress(screen, delay=0)  # type: ignore[arg-type]
        with path.open("rb") as raw:
            stream = progress.track(raw)
            assert b"x" * 300_000 == stream.read()
        assert 300_000 == progress.read
        assert progress.text().startswith("reading: 100% of 293.0 KB (")
        assert any("reading: " in text for text in screen.written)
        progress.finish()
        assert "\r\x1b[K" == screen.written[-1]

    def test_off_a_terminal_nothing_is_wrapped(self, tmp_path: Path) -> None:
        """Not a terminal: the stream is returned as it is."""
        path = tmp_path / "app.log"
        path.write_bytes(b"{}\n")
        with path.open("rb") as raw:
            assert raw is ReadProgress(open(os.devnull, "w")).track(raw)  # noqa: SIM115, PTH123

    def test_status_line_off_a_terminal(self) -> None:
        """A StatusLine on a pipe draws nothing."""
        read, write = os.pipe()
        with os.fdopen(write, "w") as stream:
            line = StatusLine(stream)
            line.show("hello", force=True)
            line.clear()
        with os.fdopen(read) as back:
            assert "" == back.read()

    def test_human_bytes(self) -> None:
        assert ["512 B", "1.5 KB", "2.0 MB", "3.0 GB"] == [
            human_bytes(512),
            human_bytes(1536),
            human_bytes(2 * 1024**2),
            human_bytes(3 * 1024**3),
        ]


class TestConfigureLogging:
    def test_console_values_escaped(self) -> None:
        """A control character in an event cannot steer the terminal."""
        import structlog  # noqa: PLC0415

        screen = FakeTerminal()
        configure_logging(screen, log_format="console")  # type: ignore[arg-type]
        structlog.get_logger("t").warning("odd", error="a\x1b[2Jb")
        (line,) = screen.written
        assert "\x1b[2J" not in line
        assert "a\\x1b[2Jb" in line
        assert ESCAPE.search(line) is not None  # colours: it is a terminal

    def test_json_by_default(self) -> None:
        """configure_logging(file) alone: JSON lines, every event."""
        import structlog  # noqa: PLC0415

        screen = FakeTerminal()
        configure_logging(screen)  # type: ignore[arg-type]
        structlog.get_logger("t").debug("config_loaded", path="x")
        (line,) = screen.written
        assert {"event": "config_loaded", "path": "x", "level": "debug"} == {
            k: v for k, v in json.loads(line).items() if k != "timestamp"
        }

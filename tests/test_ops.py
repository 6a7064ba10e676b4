"""``sage-resilience status`` and ``breaker``, called with parsed args."""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
from sage_resilience import CircuitOpenError, configure, policy, testing
from sage_resilience.asgi import create_app
from sage_resilience.cli.breaker import (
    add_breaker_arguments,
    breaker_command,
)
from sage_resilience.cli.status import (
    add_status_arguments,
    format_status_table,
    status_command,
)
from tests.support.asgi_server import serving as serve_with_uvicorn

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

TOKEN = "ops-t0ken"

CONFIG = """\
version: 1
policies:
  db: {critical: true, failure_threshold: 2, recovery_timeout: 60}
  api: {failure_threshold: 2, recovery_timeout: 60}
"""

CLI = "import sys; from sage_resilience.cli import main; sys.exit(main())"

ANSI = re.compile(r"\x1b\[[0-9;]*m")

MEMORY_ONLY = (
    "sage-resilience status: the storage is 'memory': every process keeps "
    "its own breakers, so this shows this command's process only, not the "
    "application's; use --url with the running app, or a shared storage "
    "(sqlite, redis)"
)


serving = serve_with_uvicorn


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """A running app with an admin token."""
    with serving(create_app(admin_token=TOKEN)) as base:
        yield base


@pytest.fixture(scope="module")
def tokenless_url() -> Iterator[str]:
    """A running app with no token (controls disabled)."""
    with serving(create_app()) as base:
        yield base


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "resilience.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def configured(config_file: Path) -> Path:
    configure(config_file)
    return config_file


@pytest.fixture(autouse=True)
def _quiet(events: list[Any]) -> None:
    """Capture library events so that stdout holds the output alone."""


def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_status_arguments(parser)
    return status_command(parser.parse_args(argv))


def breaker(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_breaker_arguments(parser)
    return breaker_command(parser.parse_args(argv))


def boom() -> None:
    raise ZeroDivisionError("boom")


class TestStatusLocal:
    def test_table(
        self, config_file: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A plain aligned table, one line per breaker, no colours.

        With memory storage the table is this process's: said in the
        STORAGE column and in one sentence on stderr, exit 1.
        """
        assert 1 == status("--config", str(config_file))
        out, err = capsys.readouterr()
        lines = out.splitlines()
        assert lines[0].startswith("BREAKER")
        assert ["api", "db"] == [line.split()[0] for line in lines[1:]]
        assert ANSI.search(out) is None
        state_column = lines[0].index("STATE")
        assert all(
            line[state_column:].startswith("closed") for line in lines[1:]
        )
        storage_column = lines[0].index("STORAGE")
        assert all(
            line[storage_column:].startswith("memory (this process)")
            for line in lines[1:]
        )
        assert [MEMORY_ONLY] == err.splitlines()

    def test_json(
        self, config_file: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--json prints breaker_status() alone on stdout, and the scope.

        Each entry says the storage is this process's (``storage_health``);
        the sentence goes to stderr, exit 1.
        """
        assert 1 == status("--config", str(config_file), "--json")
        out, err = capsys.readouterr()
        body = json.loads(out)
        assert ["api", "db"] == list(body)
        assert "memory" == body["db"]["storage"]
        assert {("this-process", None)} == {
            (entry["storage_health"], entry["storage_error"])
            for entry in body.values()
        }
        assert [MEMORY_ONLY] == err.splitlines()

    def test_default_configuration(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without --config: the shipped configuration (memory storage)."""
        assert 1 == status("--json")
        body = json.loads(capsys.readouterr().out)
        assert "siliconflow_api" in body

    def test_invalid_configuration(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A ConfigError: exit 1, its message on stderr, nothing on stdout."""
        path = tmp_path / "bad.yaml"
        path.write_text(
            "version: 1\npolicies:\n  db: {failure_threshold: 0}\n"
        )
        assert 1 == status("--config", str(path), "--json")
        out, err = capsys.readouterr()
        assert "" == out
        assert "policies.db.failure_threshold" in err
        assert "bad.yaml" in err


class TestStatusStorage:
    """A shared storage that does not answer is said, never shown closed."""

    def write(self, tmp_path: Path, storage: str) -> Path:
        path = tmp_path / "shared.yaml"
        path.write_text(
            f"version: 1\nstorage: {storage}\n"
            + CONFIG.removeprefix("version: 1\n")
        )
        return path

    def test_redis_down_table(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Nothing at the Redis URL: a heading and the column say so, exit 1.

        The password in the URL is never shown.
        """
        port = refused_port()
        url = f"redis://:hunter2@127.0.0.1:{port}/0"
        path = self.write(tmp_path, f"{{backend: redis, url: '{url}'}}")
        assert 1 == status("--config", str(path), "--timeout", "2")
        out, err = capsys.readouterr()
        heading, header, *rows = out.splitlines()
        assert heading.startswith(
            f"storage redis://:***@127.0.0.1:{port}/0: unreachable ("
        )
        assert "ConnectionError" in heading
        assert header.startswith("BREAKER")
        storage_column = header.index("STORAGE")
        assert all(
            row[storage_column:].startswith("redis (unreachable)")
            for row in rows
        )
        (line,) = err.splitlines()
        assert line.startswith(
            f"sage-resilience status: storage redis://:***@127.0.0.1:{port}"
            "/0 is unreachable ("
        )
        assert line.endswith(
            "the states shown are this process's local fallback, not the "
            "shared state"
        )
        assert "hunter2" not in out + err

    def test_redis_down_json(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--json: the same entries, each with storage_health, exit 1."""
        port = refused_port()
        url = f"redis://:hunter2@127.0.0.1:{port}/0"
        path = self.write(tmp_path, f"{{backend: redis, url: '{url}'}}")
        assert 1 == status("--config", str(path), "--json")
        out, err = capsys.readouterr()
        body = json.loads(out)
        assert ["api", "db"] == list(body)
        assert {"unreachable"} == {e["storage_health"] for e in body.values()}
        assert all(
            e["storage_error"].startswith("ConnectionError")
            for e in body.values()
        )
        assert "is unreachable" in err
        assert "hunter2" not in out + err

    def test_sqlite_unreadable(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A sqlite file that is not a database: unreachable, exit 1."""
        db = tmp_path / "state.sqlite"
        db.write_bytes(b"not a database" * 100)
        path = self.write(tmp_path, f"{{backend: sqlite, path: '{db}'}}")
        assert 1 == status("--config", str(path))
        out, err = capsys.readouterr()
        assert out.startswith(f"storage sqlite:{db}: unreachable (")
        assert "DatabaseError" in out.splitlines()[0]
        assert "sqlite (unreachable)" in out
        assert "is unreachable" in err

    def test_sqlite_answers(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A shared storage that answers: the plain table, exit 0."""
        db = tmp_path / "state.sqlite"
        path = self.write(tmp_path, f"{{backend: sqlite, path: '{db}'}}")
        assert 0 == status("--config", str(path))
        out, err = capsys.readouterr()
        assert out.startswith("BREAKER")
        assert "unreachable" not in out
        assert "" == err
        assert 0 == status("--config", str(path), "--json")
        body = json.loads(capsys.readouterr().out)
        assert {("ok", None)} == {
            (e["storage_health"], e["storage_error"]) for e in body.values()
        }


class TestStatusRemote:
    def test_table_from_app(
        self, url: str, configured: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--url reads GET {url}/breakers of a running app."""
        policy("db").open()
        assert 0 == status("--url", url)
        lines = capsys.readouterr().out.splitlines()
        row = next(line for line in lines if line.startswith("db "))
        assert "open (forced)" in row

    def test_json_from_app(
        self, url: str, configured: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--url --json prints what the app answered."""
        policy("api").call(lambda: None)
        assert 0 == status("--url", url + "/", "--json")
        body = json.loads(capsys.readouterr().out)
        assert 1 == body["api"]["successes"]

    def test_unreachable(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Nothing listening: exit 1 with a diagnostic."""
        port = refused_port()
        assert 1 == status("--url", f"http://127.0.0.1:{port}")
        out, err = capsys.readouterr()
        assert "" == out
        assert "cannot reach" in err

    def test_wrong_base_path(
        self, url: str, configured: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An app answering 404: exit 1 naming the HTTP status."""
        assert 1 == status("--url", url + "/nowhere")
        assert "HTTP 404" in capsys.readouterr().err

    def test_malformed_url(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A URL that is not http(s): usage error, exit 2."""
        with pytest.raises(SystemExit) as exit_info:
            status("--url", "ftp://user:secret@example")
        assert 2 == exit_info.value.code
        err = capsys.readouterr().err
        assert "http(s)" in err
        assert "secret" not in err

    def test_config_and_url_exclude_each_other(self) -> None:
        """--config and --url together: argparse usage error."""
        with pytest.raises(SystemExit) as exit_info:
            status("--config", "x.yaml", "--url", "http://127.0.0.1:1")
        assert 2 == exit_info.value.code


class TestBreakerRemote:
    def test_open(
        self, url: str, configured: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """open via the app: the breaker is forced open in the app."""
        assert 0 == breaker("open", "api", "--url", url, "--token", TOKEN)
        assert "api: open (forced)" == capsys.readouterr().out.strip()
        with pytest.raises(CircuitOpenError):
            policy("api").call(lambda: None)

    def test_json_and_env_token(
        self,
        url: str,
        configured: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """The token defaults to the env; --json prints the new entry."""
        monkeypatch.setenv("SAGE_RESILIENCE_ADMIN_TOKEN", TOKEN)
        policy("api").open()
        assert 0 == breaker("close", "api", "--url", url, "--json")
        body = json.loads(capsys.readouterr().out)
        assert ("api", "closed", False) == (
            body["name"],
            body["state"],
            body["forced"],
        )

    def test_reset(
        self, url: str, configured: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """reset via the app clears the counters."""
        for _ in range(2):
            with pytest.raises(ZeroDivisionError):
                policy("api").call(boom)
        assert 0 == breaker("reset", "api", "--url", url, "--token", TOKEN)
        assert "api: closed" == capsys.readouterr().out.strip()
        assert 0 == policy("api").status()["failures"]

    def test_missing_token(
        self, url: str, configured: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """No token: HTTP 401, exit 1, a hint on stderr."""
        assert 1 == breaker("open", "api", "--url", url)
        out, err = capsys.readouterr()
        assert "" == out
        assert "HTTP 401" in err
        assert "--token" in err
        assert "closed" == policy("api").state

    def test_wrong_token(
        self, url: str, configured: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A wrong token: exit 1, and the token is not echoed."""
        assert 1 == breaker(
            "open", "api", "--url", url, "--token", "guess-123"
        )
        err = capsys.readouterr().err
        assert "HTTP 401" in err
        assert "guess-123" not in err

    def test_controls_disabled(
        self,
        tokenless_url: str,
        configured: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """An app without a token: HTTP 403, exit 1."""
        assert 1 == breaker(
            "open", "api", "--url", tokenless_url, "--token", TOKEN
        )
        err = capsys.readouterr().err
        assert "HTTP 403" in err
        assert "no admin token" in err

    def test_unknown_breaker(
        self, url: str, configured: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An unknown name with the right token: HTTP 404, exit 1."""
        assert 1 == breaker("open", "nope", "--url", url, "--token", TOKEN)
        err = capsys.readouterr().err
        assert "HTTP 404" in err
        assert "no such breaker" in err

    def test_plain_http_warning(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A token sent over plain http to a remote host is warned about."""
        assert 1 == breaker(
            "open",
            "api",
            "--url",
            "http://sage-resilience-test.invalid",
            "--token",
            TOKEN,
            "--timeout",
            "2",
        )
        err = capsys.readouterr().err
        assert "plain http" in err
        assert TOKEN not in err


class TestBreakerLocal:
    def test_memory_storage_refused(
        self, config_file: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With memory storage acting locally is pointless: exit 1."""
        assert 1 == breaker("open", "api", "--config", str(config_file))
        out, err = capsys.readouterr()
        assert "" == out
        assert "'memory'" in err
        assert "--url" in err

    def test_unknown_breaker(
        self, config_file: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An unknown name: exit 1, the known names on stderr."""
        assert 1 == breaker("open", "nope", "--config", str(config_file))
        assert "known: api, db" in capsys.readouterr().err

    def test_invalid_configuration(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A ConfigError: exit 1 with its message."""
        path = tmp_path / "bad.yaml"
        path.write_text("version: 1\npolicies:\n  db: {retry: {attemps: 2}}\n")
        assert 1 == breaker("open", "db", "--config", str(path))
        assert "policies.db.retry" in capsys.readouterr().err

    def test_usage_errors(self) -> None:
        """An unknown action or a missing name: argparse exits 2."""
        for argv in (("explode", "api"), ("open",)):
            with pytest.raises(SystemExit) as exit_info:
                breaker(*argv)
            assert 2 == exit_info.value.code

    def test_unreachable_storage_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A shared storage that does not answer: nothing done, exit 1."""
        url = f"redis://:hunter2@127.0.0.1:{refused_port()}/0"
        path = tmp_path / "redis.yaml"
        path.write_text(
            f"version: 1\nstorage: {{backend: redis, url: '{url}'}}\n"
            + CONFIG.removeprefix("version: 1\n")
        )
        assert 1 == breaker("open", "api", "--config", str(path))
        out, err = capsys.readouterr()
        assert "" == out
        assert err.startswith("sage-resilience breaker: storage redis://:***@")
        assert "is unreachable (ConnectionError" in err
        assert err.endswith("nothing was done\n")
        assert "hunter2" not in err
        assert "closed" == policy("api").state

    def test_shared_sqlite_storage(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With sqlite storage another process sees the forced open."""
        db = tmp_path / "state.sqlite"
        path = tmp_path / "shared.yaml"
        path.write_text(
            f"version: 1\nstorage: {{backend: sqlite, path: '{db}'}}\n"
            + CONFIG.removeprefix("version: 1\n")
        )
        assert 0 == breaker("open", "api", "--config", str(path))
        assert "api: open (forced)" == capsys.readouterr().out.strip()
        testing.reset()
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                CLI,
                "status",
                "--config",
                str(path),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert 0 == other.returncode, other.stderr
        assert "open" == json.loads(other.stdout)["api"]["state"]


class TestTable:
    def entry(self, name: str, state: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "state": state,
            "forced": False,
            "failure_count": 0,
            "failure_threshold": 3,
            "calls": 10,
            "successes": 10,
            "failures": 0,
            "rejections": 0,
            "retries": 0,
            "retry_after": 0.0,
            "storage": "memory",
            "last_failure": None,
            **extra,
        }

    def test_colour_keeps_alignment(self) -> None:
        """Colours wrap the state cell only; columns stay aligned."""
        table = {
            "a": self.entry("a", "closed"),
            "long_name": self.entry(
                "long_name",
                "open",
                retry_after=12.34,
                last_failure="OSError: password=hunter2 refused",
            ),
        }
        plain = format_status_table(table)
        coloured = format_status_table(table, colour=True)
        assert "\x1b[31m" in coloured
        assert "\x1b[32m" in coloured
        assert plain == ANSI.sub("", coloured)
        assert "12.3s" in plain
        assert "hunter2" not in plain

    def test_empty(self) -> None:
        """No breakers: a one-line message."""
        assert "no breakers configured" == format_status_table({})

"""The sage-resilience command line: config commands and the demo."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from sage_resilience import _demo
from sage_resilience.cli import main
from tests.support.pg import require_pgserver

ROOT = Path(__file__).resolve().parents[1]


class TestConfigCommands:
    def test_show_resolves_a_platform(self, capsys):
        """config show --platform windows --format json: the resolved file."""
        assert 0 == main(
            ["config", "show", "--platform", "windows", "--format", "json"]
        )
        shown = json.loads(capsys.readouterr().out)
        database = shown["policies"]["database_connection"]
        assert (10, "127.0.0.1") == (
            database["timeout"],
            database["settings"]["host"],
        )

    def test_show_yaml_by_default(self, capsys):
        """The default format is YAML, with the macOS overrides applied."""
        assert 0 == main(["config", "show", "--platform", "macos"])
        shown = yaml.safe_load(capsys.readouterr().out)
        assert 5 == shown["policies"]["siliconflow_api"]["retry"]["attempts"]

    def test_show_notes_an_override_waiting_for_code(
        self, monkeypatch, capsys
    ):
        """An env override for a code-only name: stdout clean, a note."""
        monkeypatch.setenv("SAGE_RESILIENCE__DATABASE_RETRY__TIMEOUT", "3")
        assert 0 == main(["config", "show", "--format", "json"])
        out, err = capsys.readouterr()
        assert "database_retry" not in json.loads(out)["policies"]
        from sage_resilience._config import default_config_path  # noqa: PLC0415

        assert (
            f"note: using {default_config_path()} (the shipped default)\n"
            "note: SAGE_RESILIENCE__DATABASE_RETRY__TIMEOUT set(s) policy "
            "'database_retry', which no file declares: it applies when "
            "code declares that policy\n"
        ) == err

    def test_validate_warns_when_one_call_can_trip(self, tmp_path, capsys):
        """attempts >= failure_threshold: ok, plus a warning naming the key."""
        path = tmp_path / "trip.yaml"
        path.write_text(
            "version: 1\npolicies:\n  api:\n    failure_threshold: 3\n"
            "    retry: {attempts: 3}\n"
        )
        assert 0 == main(["config", "validate", str(path)])
        out, err = capsys.readouterr()
        assert f"{path}: ok\n" == out
        assert (
            f"warning: {path}: policies.api.retry.attempts: 3 >= "
            "failure_threshold 3 (platform darwin): one call's retries can "
            "open its own circuit for every caller; make failure_threshold "
            "larger than attempts\n"
        ) == err.splitlines(keepends=True)[0]

    def test_the_shipped_file_has_no_warning(self, capsys):
        """The shipped configuration validates without a warning."""
        from sage_resilience._config import default_config_path  # noqa: PLC0415

        assert 0 == main(["config", "validate", str(default_config_path())])
        assert "" == capsys.readouterr().err

    def test_show_reports_a_bad_file(self, tmp_path, capsys):
        """An invalid file: exit 1, the error on stderr, nothing on stdout."""
        bad = tmp_path / "bad.yaml"
        bad.write_text("version: 1\npolicies:\n  api:\n    timout: 3\n")
        assert 1 == main(["config", "show", "--config", str(bad)])
        out, err = capsys.readouterr()
        assert "" == out
        assert (
            f"sage-resilience: {bad}:4: policies.api.timout: unknown key "
            "'timout'; did you mean 'timeout'?\n"
        ) == err

    def test_validate(self, tmp_path, capsys):
        """config validate: ok lines, errors on stderr, exit 1 on any."""
        good = tmp_path / "good.yaml"
        good.write_text("version: 1\npolicies:\n  api: {timeout: 3}\n")
        bad = tmp_path / "bad.yaml"
        bad.write_text("version: 1\npolicies:\n  api: {timeout: -3}\n")
        assert 0 == main(["config", "validate", str(good)])
        assert f"{good}: ok\n" == capsys.readouterr().out
        assert 1 == main(["config", "validate", str(good), str(bad)])
        out, err = capsys.readouterr()
        assert f"{good}: ok\n" == out
        assert "policies.api.timeout: must be > 0 (got -3)" in err

    def test_schema_is_json_schema(self, capsys):
        """config schema prints a JSON Schema of the file."""
        assert 0 == main(["config", "schema"])
        schema = json.loads(capsys.readouterr().out)
        assert "policies" in schema["properties"]

    def test_usage_errors_exit_2(self, capsys):
        """No command, or a bare group, is a usage error."""
        assert 2 == main([])
        assert 2 == main(["config"])
        with pytest.raises(SystemExit) as info:
            main(["no-such-command"])
        assert 2 == info.value.code


class TestDemo:
    def test_the_demo_runs_end_to_end(self, tmp_path):
        """The main job: outage and recovery, JSON events, a status table."""
        require_pgserver()
        log = tmp_path / "demo.log"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "sage_resilience.cli",
                "demo",
                "--log",
                str(log),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert 0 == result.returncode, result.stderr
        events = [json.loads(line) for line in log.read_text().splitlines()]
        changes = [
            (e["breaker"], e["old_state"], e["new_state"], e["reason"])
            for e in events
            if e["event"] == "circuit_state_changed"
        ]
        assert [
            ("siliconflow_api", "closed", "open", "consecutive_failures"),
            (
                "siliconflow_api",
                "open",
                "half-open",
                "recovery_timeout_elapsed",
            ),
            ("siliconflow_api", "half-open", "closed", "probe_succeeded"),
            ("vectorizer", "closed", "open", "slow_call_rate"),
            ("database_connection", "closed", "open", "consecutive_failures"),
            (
                "database_connection",
                "open",
                "half-open",
                "recovery_timeout_elapsed",
            ),
            ("database_connection", "half-open", "closed", "probe_succeeded"),
        ] == changes
        opened = next(
            e
            for e in events
            if e["event"] == "circuit_state_changed"
            and e["breaker"] == "database_connection"
        )
        assert "pg_refused" == opened["last_cause"]
        bad_model = next(
            e for e in events if e.get("cause") == "http_bad_request"
        )
        assert "Model does not exist" in bad_model["explanation"]
        # stdout: the same JSON lines, then the status table
        lines = result.stdout.strip().splitlines()
        # a header, a rule, then one row per policy (12 shipped)
        assert ["breaker", "state"] == lines[-14].split()[:2]
        assert "vectorizer" in lines[-1]
        finished = next(e for e in events if e["event"] == "demo_finished")
        assert finished["seconds"] < 30
        # ... and the log answers "what happened?" right away.
        summary = subprocess.run(
            [
                sys.executable,
                "-m",
                "sage_resilience.cli",
                "logs",
                "summarize",
                str(log),
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        breakers = json.loads(summary.stdout)["breakers"]
        assert {
            "siliconflow_api": (1, "closed"),
            "vectorizer": (1, "open"),
            "database_connection": (1, "closed"),
        } == {
            name: (b["trips"], b["final_state"])
            for name, b in breakers.items()
        }
        assert 4 == breakers["siliconflow_api"]["rejected"]

    def test_a_missing_extra_is_named(self, monkeypatch, capsys):
        """Without httpx the demo says which extra to install, exit 1."""
        monkeypatch.setitem(sys.modules, "httpx", None)
        assert 1 == main(["demo", "--quick"])
        assert (
            "sage-resilience demo: httpx is missing; install the demo extra "
            "(pip install 'sage-resilience[demo]')\n"
        ) == capsys.readouterr().err

    def test_pgserver_missing_where_it_has_no_wheel(self, monkeypatch, capsys):
        """Past pgserver's last Python the demo points at --quick instead."""
        monkeypatch.setitem(sys.modules, "pgserver", None)
        major, minor = sys.version_info[:2]
        monkeypatch.setattr(_demo, "_PGSERVER_UNTIL", (major, minor + 1))
        assert 1 == main(["demo"])
        assert "install the demo extra" in capsys.readouterr().err
        monkeypatch.setattr(_demo, "_PGSERVER_UNTIL", sys.version_info[:2])
        assert 1 == main(["demo"])
        err = capsys.readouterr().err
        assert err.startswith(
            "sage-resilience demo: pgserver is missing: it has"
        )
        assert "run with --quick" in err
        assert "install the demo extra" not in err

    def test_the_demo_extra_leaves_pgserver_out_where_the_demo_says(self):
        """pyproject's marker and the demo's _PGSERVER_UNTIL name one Python."""
        with (ROOT / "pyproject.toml").open("rb") as f:
            extras = tomllib.load(f)["project"]["optional-dependencies"]
        (pgserver,) = [
            Requirement(r) for r in extras["demo"] if r.startswith("pgserver")
        ]
        assert pgserver.marker is not None
        until = ".".join(map(str, _demo._PGSERVER_UNTIL))
        below = f"{_demo._PGSERVER_UNTIL[0]}.{_demo._PGSERVER_UNTIL[1] - 1}"
        assert pgserver.marker.evaluate({"python_version": below})
        assert not pgserver.marker.evaluate({"python_version": until})


# Escape sequences an error message can carry to a terminal: clear the
# screen, retitle the window, a carriage return over the line, NUL, CSI.
HOSTILE = "\x1b[2J\x1b]0;pwned\x07\rfake\x00\x9b31m"
RAW = ("\x1b", "\x07", "\r", "\x00", "\x9b")

POLICIES = """\
version: 1
policies:
  api: {failure_threshold: 5, recovery_timeout: 60}
"""


class TestArgumentValues:
    """A bad value exits 2 with one line on stderr, never a traceback."""

    @pytest.mark.parametrize("command", ["status", "doctor", "breaker"])
    @pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "soon"])
    def test_timeout_must_be_positive_and_finite(self, command, value, capsys):
        """--timeout -1, 0, nan, inf or text: a one-line usage error."""
        argv = [command, "--timeout", value]
        if command == "breaker":
            argv[1:1] = ["open", "api"]
        with pytest.raises(SystemExit) as info:
            main(argv)
        out, err = capsys.readouterr()
        assert (2, "", 1) == (info.value.code, out, len(err.splitlines()))
        assert f"sage-resilience {command}: error: argument --timeout" in err
        assert "Traceback" not in err

    @pytest.mark.parametrize("command", ["status", "doctor", "breaker"])
    @pytest.mark.parametrize(
        "url",
        [
            "http://[::1",
            "http://[not-an-ip]:8000",
            "http://127.0.0.1:99999",
            "http://127.0.0.1:port",
            "127.0.0.1:8000",
            "http://",
            "ftp://user:s3cret@example",
            "http://127.0.0.1:1/a path",
            "http://127.0.0.1:1/\x1b[2J",
        ],
    )
    def test_malformed_url(self, command, url, capsys):
        """--url must be an http(s) URL with a host: else one usage line."""
        argv = [command, "--url", url]
        if command == "breaker":
            argv[1:1] = ["open", "api"]
        with pytest.raises(SystemExit) as info:
            main(argv)
        out, err = capsys.readouterr()
        assert (2, "", 1) == (info.value.code, out, len(err.splitlines()))
        assert f"sage-resilience {command}: error: argument --url" in err
        assert "http(s) URL" in err
        assert "s3cret" not in err
        assert "\x1b" not in err

    @pytest.mark.parametrize(
        "dsn",
        [
            "postgresql://[::1",
            "postgresql://sage:s3cret@[::1/sage",
            "postgresql://sage:s3cret@127.0.0.1:99999/sage",
            "postgresql://127.0.0.1:port/sage",
            "mysql://sage:s3cret@127.0.0.1/sage",
            "host=127.0.0.1 password=s3cret dbname=sage",
            "postgresql://sage:s3cret@127.0.0.1/a name",
            "postgresql://127.0.0.1/\x1b[2J",
        ],
    )
    def test_malformed_dsn(self, dsn, capsys):
        """doctor --dsn must be a postgresql:// URL: else one usage line,
        the password hidden."""
        with pytest.raises(SystemExit) as info:
            main(["doctor", "--dsn", dsn])
        out, err = capsys.readouterr()
        assert (2, "", 1) == (info.value.code, out, len(err.splitlines()))
        assert "sage-resilience doctor: error: argument --dsn" in err
        assert "postgresql:// URL" in err
        assert "s3cret" not in err
        assert "\x1b" not in err

    @pytest.mark.parametrize(
        "dsn",
        [
            "postgresql://sage@[::1]:5432/sage",
            "postgres://sage:pw@127.0.0.1/sage?sslmode=disable",
            "postgresql:///sage?host=/run/postgresql",
            "postgresql://sage@10.0.0.1:5432,10.0.0.2:5433/sage",
        ],
    )
    def test_a_good_dsn_is_kept(self, dsn):
        """What asyncpg takes passes as given: IPv6, no host (a Unix
        socket), a list of hosts."""
        from sage_resilience.cli import _parser  # noqa: PLC0415

        assert dsn == _parser().parse_args(["doctor", "--dsn", dsn]).dsn

    def test_a_good_timeout_and_url_are_kept(self):
        """Values that pass are given to the command as they were."""
        from sage_resilience.cli import _parser  # noqa: PLC0415

        args = _parser().parse_args(
            ["status", "--url", "http://[::1]:8000/r/", "--timeout", "0.5"]
        )
        assert ("http://[::1]:8000/r/", 0.5) == (args.url, args.timeout)


class TestTablesEscapeControlCharacters:
    """No table the CLI prints passes terminal escapes through raw."""

    def test_status_table(self, tmp_path, capsys):
        """status: an error message stored in a breaker's status, escaped."""
        from sage_resilience import configure, policy  # noqa: PLC0415

        path = tmp_path / "policies.yaml"
        path.write_text(POLICIES)
        configure(path)

        def hostile():
            raise OSError(f"refused {HOSTILE} here")

        with pytest.raises(OSError, match="refused"):
            policy("api").call(hostile)
        # memory storage: exit 1 (this process only), the table printed
        assert 1 == main(["status", "--config", str(path)])
        out = capsys.readouterr().out
        assert not [c for c in RAW if c in out]
        assert "\\x1b[2J\\x1b]0;pwned\\x07" in out
        assert "\\x00" in out

    def test_status_table_every_cell(self):
        """Names, states and storage from a remote app are escaped too."""
        from sage_resilience.cli.status import (  # noqa: PLC0415
            format_status_table,
        )

        entry = {
            "name": f"api{HOSTILE}",
            "state": f"open{HOSTILE}",
            "storage": HOSTILE,
            "last_failure": f"OSError: {HOSTILE}",
        }
        table = format_status_table({"api": entry}, colour=True)
        # A state that is no known state gets no colour: no ESC at all.
        assert not [c for c in RAW if c in table]
        assert 2 == len(table.splitlines())

    def test_demo_table(self):
        """The demo's final table escapes what the status holds."""
        from sage_resilience._demo import status_table  # noqa: PLC0415

        table = status_table(
            {"api": {"name": f"api{HOSTILE}", "last_failure": HOSTILE}}
        )
        assert not [c for c in RAW if c in table]
        assert 3 == len(table.splitlines())  # header, rule, one row

    def test_doctor_lines(self, monkeypatch, capsys):
        """doctor: a provider's message in a finding is shown escaped."""
        from sage_resilience._diagnosis import doctor  # noqa: PLC0415
        from sage_resilience._diagnosis.doctor import Finding  # noqa: PLC0415

        async def findings(*_args, **_kwargs):
            return [Finding("api", "http_bad_request", HOSTILE, "fix it")]

        # The command imports run_doctor when it runs, from here.
        monkeypatch.setattr(doctor, "run_doctor", findings)
        assert 1 == main(["doctor"])
        out, err = capsys.readouterr()
        assert not [c for c in RAW if c in out + err]
        assert out.startswith("api: http_bad_request - \\x1b[2J")

    def test_breaker_line_and_errors(self, monkeypatch, capsys):
        """breaker: the app's answer and its error message, escaped."""
        from sage_resilience.cli import breaker  # noqa: PLC0415

        answers = iter(
            [
                (200, {"name": f"api{HOSTILE}", "state": "open"}),
                (404, {"error": f"no such breaker {HOSTILE}"}),
            ]
        )
        monkeypatch.setattr(
            breaker, "request", lambda *_a, **_kw: next(answers)
        )
        url = ["--url", "http://127.0.0.1:1"]
        assert 0 == main(["breaker", "open", "api", *url])
        assert 1 == main(["breaker", "open", "api", *url])
        out, err = capsys.readouterr()
        assert not [c for c in RAW if c in out + err]
        assert out.startswith("api\\x1b[2J")
        assert "HTTP 404: no such breaker \\x1b[2J" in err

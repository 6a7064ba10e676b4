"""Command-line conventions: --version, python -m, --format, help, completion."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from importlib.metadata import version

import pytest
from sage_resilience.cli import _parser, main

VERSION_LINE = f"sage-resilience {version('sage-resilience')}\n"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def parsers(
    parser: argparse.ArgumentParser, path: str = "sage-resilience"
) -> list[tuple[str, argparse.ArgumentParser]]:
    """*parser* and every sub-command's parser below it, by command line."""
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.extend(parsers(child, f"{path} {name}"))
    return found


class TestVersion:
    def test_python_m_package(self):
        """python -m sage_resilience --version: one line, stdout only."""
        result = run("-m", "sage_resilience", "--version")
        assert (0, VERSION_LINE, "") == (
            result.returncode,
            result.stdout,
            result.stderr,
        )

    def test_python_m_cli(self):
        """python -m sage_resilience.cli is the same command."""
        result = run("-m", "sage_resilience.cli", "--version")
        assert (0, VERSION_LINE, "") == (
            result.returncode,
            result.stdout,
            result.stderr,
        )

    def test_argparse_version_action(self, capsys):
        """--version is argparse's version action: it exits 0."""
        with pytest.raises(SystemExit) as exited:
            main(["--version"])
        assert 0 == exited.value.code
        assert VERSION_LINE == capsys.readouterr().out

    def test_version_loads_no_engine(self):
        """--version imports none of the engine nor its dependencies."""
        result = run("-X", "importtime", "-m", "sage_resilience", "--version")
        assert (0, VERSION_LINE) == (result.returncode, result.stdout)
        imported = {
            line.rpartition("|")[2].strip()
            for line in result.stderr.splitlines()
            if line.startswith("import time:")
        }
        assert "sage_resilience.cli" in imported  # the measure works
        engine = {
            "sage_resilience._policy",
            "sage_resilience._breaker",
            "sage_resilience._config",
            "sage_resilience._registry",
            "sage_resilience._storage",
        }
        dependencies = (
            "pybreaker",
            "tenacity",
            "pydantic",
            "yaml",
            "structlog",
        )
        assert set() == imported & engine
        assert [] == [
            name for name in imported if name.split(".")[0] in dependencies
        ]

    def test_help_loads_only_what_building_the_parser_needs(self):
        """--help (every command's parser) loads no engine, no reading or
        rendering of logs, no urllib, no package metadata."""
        result = run("-X", "importtime", "-m", "sage_resilience", "--help")
        assert 0 == result.returncode
        imported = {
            line.rpartition("|")[2].strip()
            for line in result.stderr.splitlines()
            if line.startswith("import time:")
        }
        assert "sage_resilience._logs.model" in imported  # the measure works
        assert set() == imported & {
            "sage_resilience._policy",
            "sage_resilience._logs.summary",
            "sage_resilience._logs.render",
            "sage_resilience._logs.read",
            "urllib.request",
            "importlib.metadata",
            "structlog",
        }

    def test_logs_summarize_loads_no_structlog(self, tmp_path):
        """logs summarize runs no policy: structlog is not even imported."""
        log = tmp_path / "app.log"
        log.write_text(
            '{"breaker": "db", "old_state": "closed", "new_state": "open", '
            '"event": "circuit_state_changed", '
            '"timestamp": "2026-11-27T20:00:00.000000Z"}\n',
            encoding="utf-8",
        )
        result = run(
            "-X",
            "importtime",
            "-m",
            "sage_resilience",
            "logs",
            "summarize",
            str(log),
            "--format",
            "json",
        )
        assert 0 == result.returncode, result.stderr
        assert 1 == json.loads(result.stdout)["breakers"]["db"]["trips"]
        imported = {
            line.rpartition("|")[2].strip()
            for line in result.stderr.splitlines()
            if line.startswith("import time:")
        }
        assert "sage_resilience._logs.read" in imported  # the measure works
        assert [] == [
            name for name in imported if name.split(".")[0] == "structlog"
        ]

    def test_python_m_package_runs_commands(self):
        """python -m sage_resilience runs the sub-commands too."""
        result = run("-m", "sage_resilience", "config", "schema")
        assert 0 == result.returncode, result.stderr
        assert "properties" in json.loads(result.stdout)

    def test_importing_main_module_runs_nothing(self):
        """Importing sage_resilience.__main__ does not run the CLI."""
        result = run("-c", "import sage_resilience.__main__")
        assert (0, "", "") == (
            result.returncode,
            result.stdout,
            result.stderr,
        )


class TestHelp:
    def test_every_option_has_help(self):
        """Every argument and sub-command of every parser is described."""
        missing = []
        for path, parser in parsers(_parser()):
            for action in parser._actions:
                if isinstance(action, argparse._HelpAction):
                    continue
                name = "/".join(action.option_strings) or action.dest
                if not action.help or action.help == argparse.SUPPRESS:
                    missing.append(f"{path} {name}")
                if isinstance(action, argparse._SubParsersAction):
                    missing.extend(
                        f"{path} {choice.dest}"
                        for choice in action._choices_actions
                        if not choice.help
                    )
        assert [] == missing

    def test_the_tree_is_complete(self):
        """The walk reaches every command (a guard on the test above)."""
        paths = {path for path, _ in parsers(_parser())}
        assert {
            "sage-resilience demo",
            "sage-resilience config show",
            "sage-resilience config validate",
            "sage-resilience config schema",
            "sage-resilience doctor",
            "sage-resilience status",
            "sage-resilience breaker",
            "sage-resilience logs summarize",
            "sage-resilience completion",
        } <= paths

    @pytest.mark.parametrize(
        "argv",
        [
            [],
            ["config"],
            ["config", "validate"],
            ["doctor"],
            ["status"],
            ["breaker"],
            ["logs", "summarize"],
            ["completion"],
        ],
    )
    def test_help_exits_zero(self, argv, capsys):
        with pytest.raises(SystemExit) as exited:
            main([*argv, "--help"])
        assert 0 == exited.value.code
        assert "usage: sage-resilience" in capsys.readouterr().out


class TestFormat:
    @pytest.mark.parametrize(
        ("argv", "text"),
        [
            (["doctor"], "text"),
            (["status"], "table"),
            (["breaker", "open", "api"], "text"),
            (["config", "validate", "x.yaml"], "text"),
            (["logs", "summarize", "x.log"], "table"),
        ],
    )
    def test_format_json_everywhere(self, argv, text):
        """Every command printing data takes --format json."""
        parser = _parser()
        assert text == parser.parse_args(argv).format
        assert "json" == parser.parse_args([*argv, "--format", "json"]).format

    @pytest.mark.parametrize(
        "argv",
        [
            ["doctor"],
            ["status"],
            ["breaker", "open", "api"],
            ["config", "validate", "x.yaml"],
        ],
    )
    def test_json_is_an_alias(self, argv):
        """--json, where it was, is --format json."""
        assert "json" == _parser().parse_args([*argv, "--json"]).format

    def test_bad_format_is_a_usage_error(self, capsys):
        with pytest.raises(SystemExit) as exited:
            main(["status", "--format", "xml"])
        assert 2 == exited.value.code
        err = capsys.readouterr().err
        assert 1 == len(err.splitlines())
        assert "invalid choice: 'xml'" in err

    def test_config_validate_json(self, tmp_path, capsys):
        """config validate --format json: one entry per file on stdout."""
        good = tmp_path / "good.yaml"
        good.write_text(
            "version: 1\npolicies:\n"
            "  api: {failure_threshold: 2, retry: {attempts: 3}}\n"
        )
        bad = tmp_path / "bad.yaml"
        bad.write_text("version: 1\npolicies:\n  api: {timeout: -3}\n")
        code = main(
            ["config", "validate", str(good), str(bad), "--format", "json"]
        )
        out, err = capsys.readouterr()
        assert 1 == code
        good_entry, bad_entry = json.loads(out)
        assert (str(good), True, None) == (
            good_entry["path"],
            good_entry["ok"],
            good_entry["problem"],
        )
        # 3 attempts >= threshold 2: the self-tripping warning.
        assert good_entry["warnings"]
        assert all(
            "retry.attempts: 3 >= failure_threshold" in warning
            for warning in good_entry["warnings"]
        )
        assert (str(bad), False, []) == (
            bad_entry["path"],
            bad_entry["ok"],
            bad_entry["warnings"],
        )
        assert "timeout" in bad_entry["problem"]
        # The diagnostics stay on stderr as well, as in text mode.
        assert "timeout" in err
        assert "warning:" in err

    def test_config_validate_text_unchanged(self, tmp_path, capsys):
        good = tmp_path / "good.yaml"
        good.write_text("version: 1\npolicies:\n  api: {timeout: 3}\n")
        assert 0 == main(["config", "validate", str(good)])
        assert f"{good}: ok\n" == capsys.readouterr().out


class TestCompletion:
    def test_bash(self, tmp_path, capsys):
        """completion bash: a script bash accepts, knowing every command."""
        assert 0 == main(["completion", "bash"])
        out, err = capsys.readouterr()
        assert "" == err
        for word in ("summarize", "validate", "breaker", "--format"):
            assert word in out
        script = tmp_path / "sage-resilience.bash"
        script.write_text(out)
        bash = shutil.which("bash")
        assert bash is not None
        checked = subprocess.run(
            [bash, "-n", str(script)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert 0 == checked.returncode, checked.stderr

    def test_bash_completes_files(self, capsys):
        """File arguments complete as file names."""
        assert 0 == main(["completion", "bash"])
        assert "_shtab_compgen_files" in capsys.readouterr().out

    def test_zsh(self, capsys):
        assert 0 == main(["completion", "zsh"])
        out = capsys.readouterr().out
        assert out.startswith("#compdef sage-resilience")
        assert "summarize" in out

    def test_tcsh(self, capsys):
        assert 0 == main(["completion", "tcsh"])
        assert "complete sage-resilience" in capsys.readouterr().out

    def test_unknown_shell(self, capsys):
        with pytest.raises(SystemExit) as exited:
            main(["completion", "cmd.exe"])
        assert 2 == exited.value.code
        assert 1 == len(capsys.readouterr().err.splitlines())

    def test_without_shtab(self, monkeypatch, capsys):
        """Without the completion extra: one line naming it, exit 1."""
        monkeypatch.setitem(sys.modules, "shtab", None)
        assert 1 == main(["completion", "bash"])
        out, err = capsys.readouterr()
        assert "" == out
        assert "pip install 'sage-resilience[completion]'" in err
        assert 1 == len(err.splitlines())

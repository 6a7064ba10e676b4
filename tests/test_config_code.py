"""Configuration from code, and the file found when none is named.

``configure({...})`` (a mapping in the YAML's shape), ``Policy(name,
PolicyConfig(...))`` outside the registry, and ``./resilience.yaml`` read
before the shipped default.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from sage_resilience import (
    ConfigError,
    Policy,
    PolicyConfig,
    UnknownPolicyError,
    breaker_status,
    configure,
    load_config,
    policy,
)
from sage_resilience._config import (
    CONFIG_ENV,
    default_config_path,
    find_config,
    load_config_mapping,
)
from sage_resilience.cli import main
from tests.helpers import named

HERE = str(Path(__file__))
NO_ENV: dict[str, str] = {}


def line_of(marker: str) -> int:
    """The line of this file ending with *marker* (a call's first line)."""
    lines = Path(__file__).read_text().splitlines()
    [line] = [n for n, text in enumerate(lines, 1) if text.endswith(marker)]
    return line


class TestConfigureAMapping:
    def test_builds_the_registry(self, events):
        """configure({...}) installs its policies; policy(name) finds them."""
        config = configure(  # <- configure-ok
            {"version": 1, "policies": {"api": {"timeout": 3}}}
        )

        assert 3.0 == policy("api").config.timeout
        assert ["api"] == sorted(breaker_status())
        assert f"{HERE}:{line_of('# <- configure-ok')}" == config.path
        [loaded] = named(events, "config_loaded")
        assert config.path == loaded["path"]

    def test_errors_name_the_caller_and_the_key(self):
        """Every problem: the caller's file:line and the dotted key."""
        with pytest.raises(ConfigError) as info:
            configure(  # <- configure-bad
                {
                    "version": 1,
                    "policies": {
                        "api": {"timeout": 0, "retry": {"attempts": 0}},
                        "db": {"kind": "ftp"},
                    },
                }
            )
        line = line_of("# <- configure-bad")
        error = info.value

        assert [
            (HERE, line, "policies.api.timeout"),
            (HERE, line, "policies.api.retry.attempts"),
            (HERE, line, "policies.db.kind"),
        ] == [(p.path, p.line, p.key) for p in error.problems]
        assert f"{HERE}:{line}: policies.api.timeout: must be > 0 (got 0)" == (
            str(error)
        )

    def test_a_missing_version_names_the_caller_line(self):
        """Even a problem a file gives no line gets the caller's."""
        with pytest.raises(ConfigError) as info:
            configure({"policies": {}})  # <- configure-no-version

        line = line_of("# <- configure-no-version")
        assert (HERE, line, "version") == (
            info.value.path,
            info.value.line,
            info.value.key,
        )

    def test_without_a_caller_it_is_named_mapping(self):
        """load_config_mapping names it <mapping> where a file would be."""
        with pytest.raises(ConfigError) as info:
            load_config_mapping(
                {"version": 1, "policies": {"api": {"timout": 3}}},
                environ=NO_ENV,
            )

        assert (
            "<mapping>: policies.api.timout: unknown key 'timout'; did you "
            "mean 'timeout'?"
        ) == str(info.value)

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (
                {"policies": {}},
                "<mapping>: version: missing; the file must say 'version: 1'",
            ),
            (
                {"version": 2},
                (
                    "<mapping>: version: must be 1, the only format this "
                    "release reads (got 2)"
                ),
            ),
            (
                {"version": 1, "polices": {}},
                (
                    "<mapping>: polices: unknown key 'polices'; did you mean "
                    "'policies'?"
                ),
            ),
            (
                {"version": 1, "policies": {"api": {3: 1}}},
                "<mapping>: policies.api: keys must be text (got 3)",
            ),
            (
                {"version": 1, "policies": {"api": {"retry": 3}}},
                "<mapping>: policies.api.retry: must be a mapping (got 3)",
            ),
            (
                [1, 2],
                "<mapping>: the configuration must be a mapping (got a list)",
            ),
        ],
        ids=["no-version", "version", "top-key", "key-type", "shape", "list"],
    )
    def test_validated_exactly_like_a_file(self, data, message):
        """The file's checks, word for word, apply to a mapping."""
        with pytest.raises(ConfigError) as info:
            load_config_mapping(data, environ=NO_ENV)

        assert message == str(info.value)

    def test_a_mapping_holding_itself_is_refused(self):
        """A cycle is an error, not a RecursionError."""
        settings: dict[str, object] = {}
        settings["settings"] = settings

        with pytest.raises(ConfigError, match="holds itself"):
            load_config_mapping(
                {"version": 1, "policies": {"api": settings}}, environ=NO_ENV
            )

    def test_platforms_and_environment_apply_on_top(self, monkeypatch):
        """platforms: and SAGE_RESILIENCE__* apply to a mapping too."""
        monkeypatch.setenv("SAGE_RESILIENCE__API__RETRY__ATTEMPTS", "4")
        configure(
            {
                "version": 1,
                "policies": {"api": {"timeout": 3, "failure_threshold": 5}},
                "platforms": {
                    "windows": {"policies": {"api": {"timeout": 9}}}
                },
            },
            platform="windows",
        )

        got = policy("api").config
        assert (9.0, 4) == (got.timeout, got.retry.attempts)

    def test_the_mapping_is_copied(self):
        """Changing the dict afterwards changes nothing in force."""
        data = {"version": 1, "policies": {"api": {"settings": {"a": [1]}}}}
        configure(data)
        data["policies"]["api"]["settings"]["a"].append(2)  # type: ignore[index]

        assert {"a": [1]} == policy("api").config.settings

    def test_tuples_read_as_lists(self):
        """Python tuples stand for YAML lists."""

        def statuses(value: object) -> object:
            data = {"version": 1, "policies": {"api": {}}}
            data["policies"]["api"]["failure_statuses"] = value  # type: ignore[index]
            config = load_config_mapping(data, environ=NO_ENV)
            return config.policies["api"].failure_statuses

        assert statuses([500, "4xx"]) == statuses((500, "4xx"))

    def test_a_reload_keeps_the_breaker(self):
        """A mapping reload is a hot reload like a file's."""
        configure({"version": 1, "policies": {"api": {"timeout": 3}}})
        first = policy("api")
        first.open()
        configure({"version": 1, "policies": {"api": {"timeout": 4}}})

        assert first is policy("api")
        assert ("open", 4.0) == (first.state, first.config.timeout)

    def test_a_rejected_mapping_keeps_the_config(self, events):
        """An invalid mapping: the old config stays, the failure logged."""
        configure({"version": 1, "policies": {"api": {"timeout": 3}}})
        with pytest.raises(ConfigError):
            configure({"version": 1, "policies": {"api": {"timeout": -1}}})

        assert 3.0 == policy("api").config.timeout
        [failed] = named(events, "config_reload_failed")
        assert HERE == failed["path"]


class TestPolicyInCode:
    def test_a_policy_built_in_code_works_alone(self):
        """Policy(name, PolicyConfig(...)): a decorator like any policy."""
        payments = Policy(
            "payments", PolicyConfig(failure_threshold=2, timeout=5)
        )

        @payments
        def charge() -> str:
            return "ok"

        assert "ok" == charge()
        assert ("closed", 1) == (
            payments.state,
            payments.status()["successes"],
        )

    def test_it_is_not_in_the_registry(self):
        """policy(name) and breaker_status() do not see it."""
        configure({"version": 1, "policies": {"api": {}}})
        Policy("payments", PolicyConfig())

        with pytest.raises(UnknownPolicyError):
            policy("payments")
        assert "payments" not in breaker_status()

    def test_added_to_a_loaded_file_it_is_registered(self):
        """A file's configuration plus a policy of code's: one registry."""
        config = load_config(default_config_path(), environ=NO_ENV)
        configure(
            config.model_copy(
                update={
                    "policies": {
                        **config.policies,
                        "payments": PolicyConfig(timeout=5),
                    }
                }
            )
        )

        assert 5.0 == policy("payments").config.timeout
        assert "database_connection" in breaker_status()


LOCAL = "version: 1\npolicies:\n  local_api: {timeout: 7}\n"


class TestTheFileFound:
    def test_the_current_directory_first(self, tmp_path, monkeypatch):
        """./resilience.yaml is read before the shipped default."""
        (tmp_path / "resilience.yaml").write_text(LOCAL)
        monkeypatch.chdir(tmp_path)

        config = load_config(environ=NO_ENV)

        assert ("resilience.yaml", ["local_api"]) == (
            config.path,
            list(config.policies),
        )
        assert ("resilience.yaml", "in the current directory") == (
            find_config(NO_ENV)
        )

    def test_the_environment_beats_it(self, tmp_path, monkeypatch):
        """SAGE_RESILIENCE_CONFIG still comes first."""
        (tmp_path / "resilience.yaml").write_text(LOCAL)
        other = tmp_path / "other.yaml"
        other.write_text("version: 1\npolicies:\n  other: {}\n")
        monkeypatch.chdir(tmp_path)
        env = {CONFIG_ENV: str(other)}

        assert ["other"] == list(load_config(environ=env).policies)
        assert (str(other), f"named by {CONFIG_ENV}") == find_config(env)

    def test_the_shipped_default_last(self, tmp_path, monkeypatch):
        """No local file: the shipped default, said so."""
        monkeypatch.chdir(tmp_path)

        assert (str(default_config_path()), "the shipped default") == (
            find_config(NO_ENV)
        )
        assert str(default_config_path()) == load_config(environ=NO_ENV).path

    def test_a_local_directory_is_reported(self, tmp_path, monkeypatch):
        """A ./resilience.yaml that cannot be read is an error, not skipped."""
        (tmp_path / "resilience.yaml").mkdir()
        monkeypatch.chdir(tmp_path)

        with pytest.raises(ConfigError) as info:
            load_config(environ=NO_ENV)

        assert (
            "resilience.yaml: is a directory, not a file (in the current "
            "directory)"
        ) == str(info.value)

    def test_configure_reads_it(self, tmp_path, monkeypatch, events):
        """configure() with nothing named: config_loaded names the file."""
        (tmp_path / "resilience.yaml").write_text(LOCAL)
        monkeypatch.chdir(tmp_path)

        configure()

        assert 7.0 == policy("local_api").config.timeout
        [loaded] = named(events, "config_loaded")
        assert "resilience.yaml" == loaded["path"]

    def test_config_show_says_which_file(self, tmp_path, monkeypatch, capsys):
        """config show without --config: the file used, on stderr."""
        (tmp_path / "resilience.yaml").write_text(LOCAL)
        monkeypatch.chdir(tmp_path)

        assert 0 == main(["config", "show", "--format", "json"])
        out, err = capsys.readouterr()

        assert ["local_api"] == list(json.loads(out)["policies"])
        assert (
            "note: using resilience.yaml (in the current directory)\n" == err
        )

    def test_config_validate_without_a_path(
        self, tmp_path, monkeypatch, capsys
    ):
        """config validate alone checks the file found, and says which."""
        (tmp_path / "resilience.yaml").write_text(LOCAL)
        monkeypatch.chdir(tmp_path)

        assert 0 == main(["config", "validate"])
        out, err = capsys.readouterr()

        assert ("resilience.yaml: ok\n", LOCAL_NOTE) == (out, err)

    def test_config_show_with_a_path_adds_no_note(self, capsys):
        """--config names the file: nothing more is said."""
        path = str(default_config_path())

        assert 0 == main(["config", "show", "--config", path])
        assert "" == capsys.readouterr().err


LOCAL_NOTE = "note: using resilience.yaml (in the current directory)\n"


def test_the_signature_takes_a_mapping():
    """configure's first parameter names the mapping form."""
    annotation = str(inspect.signature(configure).parameters["config"])

    assert "Mapping" in annotation

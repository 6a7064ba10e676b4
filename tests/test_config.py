"""Tests for the configuration loader (the sage_resilience._config package)."""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sage_resilience import BulkheadFullError, _config, configure, policy
from sage_resilience._config import (
    PolicyConfig,
    ResilienceConfig,
    config_schema,
    default_config_path,
    detect_platform,
    dump_config,
    load_config,
    load_config_text,
    normalize_platform,
    validate_files,
)
from sage_resilience._config import platforms as config_platforms
from sage_resilience.exceptions import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

NO_ENV: dict[str, str] = {}


def write(directory: Path, text: str, name: str = "resilience.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_text(text: str, **kwargs: Any) -> _config.ResilienceConfig:
    kwargs.setdefault("platform", "linux")
    kwargs.setdefault("environ", NO_ENV)
    return load_config_text(
        textwrap.dedent(text), source="resilience.yaml", **kwargs
    )


def error_of(text: str, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_text(text, **kwargs)
    return info.value


SMALL = """\
    version: 1
    policies:
      api:
        timeout: 5
        retry:
          attempts: 3
        settings:
          host: db.local
"""


class TestShippedConfig:
    def test_default_path_exists(self):
        """The shipped default is found from an editable install."""
        path = default_config_path()

        assert path.is_file()
        assert "resilience.yaml" == path.name

    def test_linux(self):
        """The shipped file loads for linux with every name Sage uses."""
        config = load_config(platform="linux", environ=NO_ENV)

        assert "linux" == config.platform
        queries = dict.fromkeys(
            [
                "database_execute",
                "database_fetch",
                "database_fetchrow",
                "database_fetchval",
                "memory_storage_save",
                "memory_storage_search",
                "memory_storage_text_search",
            ],
            "postgres",
        )
        assert {
            "database_connection": "postgres",
            **queries,
            "memory_save": None,
            "memory_search": None,
            "vectorizer": "http",
            "siliconflow_api": "http",
        } == {name: p.kind for name, p in config.policies.items()}
        # No policy can be opened by one call's own retries.
        for p in config.policies.values():
            assert p.retry.attempts < p.failure_threshold
        db = config.policies["database_connection"]
        assert (5.0, "localhost", 3, True) == (
            db.timeout,
            db.settings["host"],
            db.retry.attempts,
            db.critical,
        )
        assert str(default_config_path()) == config.path

    def test_windows(self):
        """The Windows override gives the database 10 s and 127.0.0.1."""
        config = load_config(platform="windows", environ=NO_ENV)

        db = config.policies["database_connection"]
        assert 10.0 == db.timeout
        assert "127.0.0.1" == db.settings["host"]
        assert 5432 == db.settings["port"]  # merged key by key
        assert 30.0 == config.policies["siliconflow_api"].timeout

    @pytest.mark.parametrize("name", ["darwin", "macos", "MacOS", "osx"])
    def test_darwin_and_aliases(self, name):
        """darwin and its aliases give siliconflow_api 60 s, 5 attempts."""
        config = load_config(platform=name, environ=NO_ENV)

        api = config.policies["siliconflow_api"]
        assert "darwin" == config.platform
        assert (60.0, 5) == (api.timeout, api.retry.attempts)
        assert 5.0 == config.policies["database_connection"].timeout

    def test_config_path_from_env(self, tmp_path):
        """SAGE_RESILIENCE_CONFIG names the file when no path is given."""
        path = write(tmp_path, SMALL)

        config = load_config(
            environ={"SAGE_RESILIENCE_CONFIG": str(path)}, platform="linux"
        )

        assert ["api"] == list(config.policies)
        assert str(path) == config.path

    def test_missing_file_named_by_env(self, tmp_path):
        """A missing file named by SAGE_RESILIENCE_CONFIG says so."""
        path = tmp_path / "absent.yaml"

        with pytest.raises(ConfigError) as info:
            load_config(environ={"SAGE_RESILIENCE_CONFIG": str(path)})

        assert f"{path}: no such file (named by SAGE_RESILIENCE_CONFIG)" == (
            str(info.value)
        )

    def test_platform_from_env(self):
        """SAGE_RESILIENCE_PLATFORM chooses the platform when not given."""
        config = load_config(environ={"SAGE_RESILIENCE_PLATFORM": "win32"})

        assert "windows" == config.platform

    def test_platform_detected(self, monkeypatch):
        """Without argument or env, platform.system() decides."""
        monkeypatch.setattr(
            config_platforms._platform, "system", lambda: "Darwin"
        )

        assert "darwin" == load_config(environ=NO_ENV).platform


class TestPlatformNames:
    @pytest.mark.parametrize(
        ("system", "expected"),
        [
            ("Windows", "windows"),
            ("Darwin", "darwin"),
            ("Linux", "linux"),
            ("FreeBSD", "freebsd"),
        ],
    )
    def test_detect(self, monkeypatch, system, expected):
        """platform.system() names map to the YAML's platform names."""
        monkeypatch.setattr(
            config_platforms._platform, "system", lambda: system
        )

        assert expected == detect_platform()

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("macos", "darwin"),
            ("OSX", "darwin"),
            ("win32", "windows"),
            ("win", "windows"),
            (" Linux ", "linux"),
            ("ci", "ci"),
        ],
    )
    def test_normalize(self, name, expected):
        """Aliases and case are normalised."""
        assert expected == normalize_platform(name)

    def test_detected_unknown_system_is_allowed(self, monkeypatch):
        """An undeclared platform found by detection just gets no overrides."""
        monkeypatch.setattr(
            config_platforms._platform, "system", lambda: "SunOS"
        )

        config = load_config_text(textwrap.dedent(SMALL), environ=NO_ENV)

        assert "sunos" == config.platform

    def test_custom_platform_declared_in_file(self):
        """A platform of one's own is allowed once the file declares it."""
        config = load_text(
            SMALL
            + """\
    platforms:
      ci:
        policies:
          api: {timeout: 1}
""",
            platform="CI",
        )

        assert ("ci", 1.0) == (config.platform, config.policies["api"].timeout)

    def test_alias_key_in_file(self):
        """A platform written as macos in the file applies to darwin."""
        config = load_text(
            SMALL
            + """\
    platforms:
      macos:
        policies:
          api: {timeout: 7}
""",
            platform="darwin",
        )

        assert 7.0 == config.policies["api"].timeout

    def test_platform_only_policy(self):
        """A policy defined only under platforms.<p> exists only there."""
        text = (
            SMALL
            + """\
    platforms:
      windows:
        policies:
          winonly: {timeout: 2}
"""
        )

        on_windows = load_text(text, platform="windows")
        on_linux = load_text(text, platform="linux")

        assert ["api", "winonly"] == list(on_windows.policies)
        assert 2.0 == on_windows.policies["winonly"].timeout
        assert ["api"] == list(on_linux.policies)

    def test_platform_storage(self):
        """platforms.<p>.storage merges over storage."""
        text = """\
            version: 1
            storage: {backend: redis, url: 'redis://127.0.0.1:6379/0'}
            platforms:
              windows:
                storage: {backend: sqlite, path: state.db}
        """

        windows = load_text(text, platform="windows").storage
        linux = load_text(text, platform="linux").storage

        assert ("sqlite", "state.db") == (windows.backend, windows.path)
        assert ("redis", None) == (linux.backend, linux.path)

    def test_null_sections_read_as_empty(self):
        """An empty section or policy (null) is allowed: defaults apply."""
        config = load_text("""\
            version: 1
            storage:
            defaults:
            policies:
              bare:
            platforms:
              linux:
        """)

        assert {"bare": PolicyConfig()} == config.policies
        assert "memory" == config.storage.backend


class TestMergeOrder:
    TEXT = """\
        version: 1
        defaults:
          failure_threshold: 2
          timeout: 1
          retry: {attempts: 2, backoff: {initial: 0.5}}
          settings: {host: a, port: 1}
        policies:
          api:
            timeout: 2
            retry: {backoff: {max: 3}}
            settings: {host: b}
            failure_statuses: [500, 503]
        platforms:
          linux:
            defaults:
              failure_threshold: 4
              timeout: 3
              failure_statuses: [429]
            policies:
              api:
                settings: {user: c}
    """

    def test_layers(self):
        """Later layers win; mappings merge; lists are replaced."""
        api = load_text(self.TEXT).policies["api"]

        assert 4 == api.failure_threshold  # platform defaults
        assert 3.0 == api.timeout  # platform defaults beat the policy
        assert (429,) == api.failure_statuses  # replaced, not appended
        assert 2 == api.retry.attempts
        assert (0.5, 3.0, 2.0) == (
            api.retry.backoff.initial,
            api.retry.backoff.max,
            api.retry.backoff.multiplier,  # built-in
        )
        assert {"host": "b", "port": 1, "user": "c"} == api.settings

    def test_env_wins(self):
        """The environment beats every file layer."""
        env = {
            "SAGE_RESILIENCE__API__TIMEOUT": "9",
            "SAGE_RESILIENCE__API__SETTINGS__PORT": "5433",
        }

        api = load_text(self.TEXT, environ=env).policies["api"]

        assert 9.0 == api.timeout
        assert {"host": "b", "port": 5433, "user": "c"} == api.settings

    def test_null_replaces(self):
        """A later null replaces a mapping (trip: null turns it off)."""
        config = load_text("""\
            version: 1
            defaults:
              trip: {failure_rate: 0.5}
            policies:
              api: {trip: null}
              other: {}
        """)

        assert config.policies["api"].trip is None
        assert 0.5 == config.policies["other"].trip.failure_rate

    def test_yaml_merge_keys(self):
        """YAML anchors and merge keys work; own keys beat merged ones."""
        config = load_text("""\
            version: 1
            policies:
              a: &base {timeout: 3, failure_threshold: 2}
              b:
                <<: *base
                timeout: 4
        """)

        assert (4.0, 2) == (
            config.policies["b"].timeout,
            config.policies["b"].failure_threshold,
        )


LAYERS = ("defaults", "policy", "platform_defaults", "platform_policy", "env")
BUILT_IN = {
    "failure_threshold": 5,
    "timeout": None,
    "retry.attempts": 1,
    "retry.backoff.max": 10.0,
    "failure_statuses": (408, 429, "5xx"),
}
VALUES = {
    "failure_threshold": st.integers(1, 9),
    "timeout": st.sampled_from([None, 0.5, 1, 2.5, 30]),
    "retry.attempts": st.integers(1, 6),
    "retry.backoff.max": st.sampled_from([0, 1, 2.5, 60]),
    "settings.host": st.sampled_from(["db", "127.0.0.1", "pg.internal"]),
    "settings.port": st.integers(1, 65535),
    "failure_statuses": st.lists(
        st.sampled_from([408, 429, 500, 503, "4xx", "5xx"]), max_size=3
    ),
}
layer_values = st.fixed_dictionaries({}, optional=VALUES)


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        *parents, last = dotted.split(".")
        target = out
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    return out


def env_of(flat: dict[str, Any]) -> dict[str, str]:
    return {
        "SAGE_RESILIENCE__API__" + key.upper().replace(".", "__"): json.dumps(
            value
        )
        for key, value in flat.items()
    }


def document(layers: dict[str, dict[str, Any]]) -> str:
    return yaml.safe_dump(
        {
            "version": 1,
            "defaults": nest(layers["defaults"]),
            "policies": {"api": nest(layers["policy"])},
            "platforms": {
                "linux": {
                    "defaults": nest(layers["platform_defaults"]),
                    "policies": {"api": nest(layers["platform_policy"])},
                }
            },
        }
    )


def resolved(policy: PolicyConfig, dotted: str) -> Any:
    if dotted.startswith("settings."):
        return policy.settings.get(dotted.split(".", 1)[1])
    value: Any = policy
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


class TestMergeProperties:
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.fixed_dictionaries(dict.fromkeys(LAYERS, layer_values)))
    def test_latest_layer_wins(self, layers):
        """Each key resolves to the latest layer that set it, else built-in."""
        config = load_config_text(
            document(layers),
            platform="linux",
            environ=env_of(layers["env"]),
        )

        api = config.policies["api"]
        for key in VALUES:
            setters = [layers[name] for name in LAYERS if key in layers[name]]
            expected = setters[-1][key] if setters else BUILT_IN.get(key)
            if isinstance(expected, list):
                expected = tuple(expected)
            assert expected == resolved(api, key), key

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        st.fixed_dictionaries(
            dict.fromkeys(
                LAYERS,
                st.fixed_dictionaries(
                    {},
                    optional={
                        "recovery_timeout": st.sampled_from([30, 100]),
                        "recovery_backoff.max": st.sampled_from([50, 150]),
                    },
                ),
            )
        )
    )
    def test_cross_check_names_the_layer_that_supplied_it(self, layers):
        """A check across merged keys names the layer of the value it
        rejects: recovery_backoff.max < recovery_timeout."""
        setters = [n for n in LAYERS if "recovery_backoff.max" in layers[n]]
        timeouts = [n for n in LAYERS if "recovery_timeout" in layers[n]]
        final_max = (
            layers[setters[-1]]["recovery_backoff.max"] if setters else None
        )
        final_timeout = (
            layers[timeouts[-1]]["recovery_timeout"] if timeouts else 60
        )
        text = document(layers)
        env = env_of(layers["env"])

        if final_max is None or final_max >= final_timeout:
            load_config_text(text, platform="linux", environ=env)
            return
        with pytest.raises(ConfigError) as info:
            load_config_text(text, platform="linux", environ=env)

        problem = (
            f"must be >= recovery_timeout ({final_timeout}) (got {final_max})"
        )
        where = {
            "defaults": "defaults.recovery_backoff.max",
            "policy": "policies.api.recovery_backoff.max",
            "platform_defaults": (
                "platforms.linux.defaults.recovery_backoff.max"
            ),
            "platform_policy": (
                "platforms.linux.policies.api.recovery_backoff.max"
            ),
        }
        if setters[-1] == "env":
            assert (
                "SAGE_RESILIENCE__API__RECOVERY_BACKOFF__MAX",
                f"policies.api.recovery_backoff.max: {problem}",
            ) == (info.value.key, info.value.problem)
        else:
            assert (where[setters[-1]], problem) == (
                info.value.key,
                info.value.problem,
            )


class TestEnvOverrides:
    def test_nested_and_typed(self):
        """Env values are YAML: ints, bools, lists, null; keys nest."""
        env = {
            "SAGE_RESILIENCE__API__RETRY__ATTEMPTS": "4",
            "SAGE_RESILIENCE__API__RETRY__BACKOFF__MAX": "2.5",
            "SAGE_RESILIENCE__API__CHAOS__ENABLED": "true",
            "SAGE_RESILIENCE__API__FAILURE_STATUSES": "[408, 429, 5xx]",
            "SAGE_RESILIENCE__API__TIMEOUT": "null",
            "SAGE_RESILIENCE__API__SETTINGS__HOST": "db",
            "SAGE_RESILIENCE__API__SETTINGS__NEW_KEY": "x",
        }

        api = load_text(SMALL, environ=env).policies["api"]

        assert (4, 2.5) == (api.retry.attempts, api.retry.backoff.max)
        assert api.chaos.enabled is True
        assert (408, 429, "5xx") == api.failure_statuses
        assert api.timeout is None
        assert {"host": "db", "new_key": "x"} == api.settings

    def test_case_insensitive_names(self):
        """Policy, field and existing settings keys match by case."""
        text = """\
            version: 1
            policies:
              Vector-Store:
                settings: {baseURL: 'http://a'}
        """
        env = {
            "SAGE_RESILIENCE__VECTOR-STORE__settings__BASEURL": "http://b",
            "SAGE_RESILIENCE__vector-store__Timeout": "3",
        }

        policy = load_text(text, environ=env).policies["Vector-Store"]

        assert {"baseURL": "http://b"} == policy.settings
        assert 3.0 == policy.timeout

    def test_creates_optional_blocks(self):
        """An env key inside an unset optional block (trip) creates it."""
        env = {"SAGE_RESILIENCE__API__TRIP__FAILURE_RATE": "0.5"}

        trip = load_text(SMALL, environ=env).policies["api"].trip

        assert trip is not None
        assert (0.5, 60.0) == (trip.failure_rate, trip.window)

    def test_flow_mapping_value(self):
        """A whole block can be given as a YAML flow mapping."""
        env = {
            "SAGE_RESILIENCE__API__RETRY": "{attempts: 7}",
            "SAGE_RESILIENCE__API__RETRY__BACKOFF__MAX": "3",
        }

        retry = load_text(SMALL, environ=env).policies["api"].retry

        assert (7, 3.0) == (retry.attempts, retry.backoff.max)

    def test_other_variables_ignored(self):
        """Single-underscore and unrelated variables are not overrides."""
        env = {
            "SAGE_RESILIENCE_ADMIN_TOKEN": "secret",
            "SAGE_RESILIENCE_CONFIG": "/nowhere.yaml",
            "SAGE_RESILIENCE_PLATFORM": "",
            "SAGE_RESILIENCEX__API__TIMEOUT": "-1",
            "PATH": "/bin",
        }

        assert 5.0 == load_text(SMALL, environ=env).policies["api"].timeout

    def test_default_environ_is_os_environ(self, monkeypatch):
        """Without environ=, the process environment is read."""
        monkeypatch.setenv("SAGE_RESILIENCE__API__TIMEOUT", "11")

        config = load_config_text(textwrap.dedent(SMALL), platform="linux")

        assert 11.0 == config.policies["api"].timeout

    @pytest.mark.parametrize(
        ("env", "message"),
        [
            pytest.param(
                {"SAGE_RESILIENCE__API__RETRY__ATTEMPTS": "0"},
                "<env>: SAGE_RESILIENCE__API__RETRY__ATTEMPTS: "
                "policies.api.retry.attempts: must be >= 1 (got 0)",
                id="out-of-range",
            ),
            pytest.param(
                {"SAGE_RESILIENCE__API__RETRY__ATTEMPTS": "three"},
                "<env>: SAGE_RESILIENCE__API__RETRY__ATTEMPTS: "
                "policies.api.retry.attempts: must be an integer "
                "(got 'three')",
                id="wrong-type",
            ),
            pytest.param(
                {"SAGE_RESILIENCE__API__CHAOS__ENABLED": "maybe"},
                "<env>: SAGE_RESILIENCE__API__CHAOS__ENABLED: "
                "policies.api.chaos.enabled: must be true or false "
                "(got 'maybe')",
                id="bad-bool",
            ),
            pytest.param(
                {"SAGE_RESILIENCE__API__TIMEOUT__FOO": "1"},
                "<env>: SAGE_RESILIENCE__API__TIMEOUT__FOO: "
                "policies.api.timeout: not a mapping, so 'foo' cannot be "
                "set below it",
                id="into-scalar-field",
            ),
            pytest.param(
                {"SAGE_RESILIENCE__API__SETTINGS__HOST__NAME": "x"},
                "<env>: SAGE_RESILIENCE__API__SETTINGS__HOST__NAME: "
                "policies.api.settings.host: not a mapping, so 'name' "
                "cannot be set below it",
                id="into-scalar-setting",
            ),
            pytest.param(
                {"SAGE_RESILIENCE__API__TIMOUT": "1"},
                "<env>: SAGE_RESILIENCE__API__TIMOUT: policies.api.timout: "
                "unknown key 'timout'; did you mean 'timeout'?",
                id="unknown-key",
            ),
            pytest.param(
                {"SAGE_RESILIENCE__API": "1"},
                "<env>: SAGE_RESILIENCE__API: expected "
                "SAGE_RESILIENCE__<POLICY>__<KEY>[__<SUBKEY>...]",
                id="no-key",
            ),
            pytest.param(
                {"SAGE_RESILIENCE__API__RETRY____ATTEMPTS": "1"},
                "<env>: SAGE_RESILIENCE__API__RETRY____ATTEMPTS: expected "
                "SAGE_RESILIENCE__<POLICY>__<KEY>[__<SUBKEY>...]",
                id="empty-segment",
            ),
            pytest.param(
                {"SAGE_RESILIENCE__API__FAILURE_STATUSES": "[408,"},
                "<env>: SAGE_RESILIENCE__API__FAILURE_STATUSES: "
                "policies.api.failure_statuses: cannot read the value as "
                "YAML: expected the node content, but found '<stream end>'",
                id="bad-yaml",
            ),
            pytest.param(
                {"SAGE_RESILIENCE__API__FAILURE_STATUSES": "[408, 999]"},
                "<env>: SAGE_RESILIENCE__API__FAILURE_STATUSES: "
                "policies.api.failure_statuses[1]: must be an HTTP status "
                "100-599, '4xx' or '5xx' (got 999)",
                id="bad-list-item",
            ),
            pytest.param(
                {"SAGE_RESILIENCE__API__TRIP__SLOW_CALL_RATE": "0.5"},
                "<env>: SAGE_RESILIENCE__API__TRIP__SLOW_CALL_RATE: "
                "policies.api.trip.slow_call_rate: needs slow_call_duration",
                id="cross-field",
            ),
            pytest.param(
                {"SAGE_RESILIENCE_PLATFORM": "beos"},
                "<env>: SAGE_RESILIENCE_PLATFORM: unknown platform 'beos'; "
                "known platforms: darwin, linux, windows",
                id="bad-platform",
            ),
        ],
    )
    def test_errors(self, env, message):
        """Env problems name the variable and the dotted key."""
        error = error_of(SMALL, environ=env, platform=None)

        assert message == str(error)
        assert "<env>" == error.path
        assert error.line is None

    def test_override_of_an_undeclared_policy_waits_for_code(self):
        """An override naming no declared policy is pending, not an error."""
        config = load_text(
            SMALL, environ={"SAGE_RESILIENCE__NOPE__TIMEOUT": "1"}
        )

        assert ["api"] == sorted(config.policies)
        assert {
            "nope": ["SAGE_RESILIENCE__NOPE__TIMEOUT"]
        } == config.pending_env

    def test_error_key_is_the_variable(self):
        """ConfigError.key holds the variable; problem the config key."""
        error = error_of(
            SMALL, environ={"SAGE_RESILIENCE__API__RETRY__ATTEMPTS": "0"}
        )

        assert "SAGE_RESILIENCE__API__RETRY__ATTEMPTS" == error.key
        assert "policies.api.retry.attempts: must be >= 1 (got 0)" == (
            error.problem
        )

    def test_file_errors_come_first(self):
        """A file problem is reported before an environment problem."""
        error = error_of(
            SMALL.replace("timeout: 5", "timeout: 0"),
            environ={"SAGE_RESILIENCE__NOPE__TIMEOUT": "1"},
        )

        assert (
            "resilience.yaml:4: policies.api.timeout: must be > 0 (got 0)"
        ) == str(error)


ERRORS = [
    pytest.param(
        """\
        version: 1
        policies:
          api: {timeout: 5
        """,
        "resilience.yaml:4: invalid YAML: expected ',' or '}', but got "
        "'<stream end>'",
        id="yaml-syntax",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            timeout: 5
           retry: {}
        """,
        "resilience.yaml:5: invalid YAML: expected <block end>, but found "
        "'<block mapping start>'",
        id="yaml-indentation",
    ),
    pytest.param(
        "version: 1\n---\nversion: 1\n",
        "resilience.yaml:2: invalid YAML: expected a single document in the "
        "stream, but found another document",
        id="yaml-two-documents",
    ),
    pytest.param(
        """\
        version: 1
        policies: !!python/object:os.system {}
        """,
        "resilience.yaml:2: invalid YAML: could not determine a constructor "
        "for the tag 'tag:yaml.org,2002:python/object:os.system'",
        id="yaml-unsafe-tag",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api: &a
            settings: *a
        """,
        "resilience.yaml:3: policies.api.settings: recursive YAML alias",
        id="yaml-recursive-alias",
    ),
    pytest.param(
        "# only a comment\n",
        "resilience.yaml: the file is empty; it needs at least 'version: 1'",
        id="empty",
    ),
    pytest.param(
        "- version: 1\n",
        "resilience.yaml:1: the top level must be a mapping (got a list)",
        id="top-level-list",
    ),
    pytest.param(
        "policies: {}\n",
        "resilience.yaml: version: missing; the file must say 'version: 1'",
        id="version-missing",
    ),
    pytest.param(
        "version: 2\n",
        "resilience.yaml:1: version: must be 1, the only format this "
        "release reads (got 2)",
        id="version-2",
    ),
    pytest.param(
        "version: '1'\n",
        "resilience.yaml:1: version: must be 1, the only format this "
        "release reads (got '1')",
        id="version-text",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            timeout: 5
            failure_threshold: 3
            timeout: 6
        """,
        "resilience.yaml:6: policies.api.timeout: duplicate key 'timeout' "
        "(first at line 4)",
        id="duplicate-key",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            timout: 5
        """,
        "resilience.yaml:4: policies.api.timout: unknown key 'timout'; did "
        "you mean 'timeout'?",
        id="unknown-key-suggestion",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            retry: {attempts: 2, backof: {}}
        """,
        "resilience.yaml:4: policies.api.retry.backof: unknown key "
        "'backof'; did you mean 'backoff'?",
        id="unknown-nested-key",
    ),
    pytest.param(
        """\
        version: 1
        storage:
          backend: memory
          colour: blue
        """,
        "resilience.yaml:4: storage.colour: unknown key 'colour'; valid "
        "keys: backend, namespace, path, url",
        id="unknown-key-listing",
    ),
    pytest.param(
        """\
        version: 1
        polices: {}
        """,
        "resilience.yaml:2: polices: unknown key 'polices'; did you mean "
        "'policies'?",
        id="unknown-top-level-key",
    ),
    pytest.param(
        """\
        version: 1
        platforms:
          windows:
            policy: {}
        """,
        "resilience.yaml:4: platforms.windows.policy: unknown key 'policy'; "
        "did you mean 'policies'?",
        id="unknown-platform-key",
    ),
    pytest.param(
        """\
        version: 1
        platforms:
          darwin: {}
          macos: {}
        """,
        "resilience.yaml:4: platforms.macos: duplicate platform 'darwin' "
        "(first written as 'darwin' at line 3)",
        id="duplicate-platform-alias",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            failure_threshold: three
        """,
        "resilience.yaml:4: policies.api.failure_threshold: must be an "
        "integer (got 'three')",
        id="wrong-type-int",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            failure_threshold: true
        """,
        "resilience.yaml:4: policies.api.failure_threshold: must be an "
        "integer (got true)",
        id="bool-is-not-int",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            failure_threshold: 2.5
        """,
        "resilience.yaml:4: policies.api.failure_threshold: must be an "
        "integer (got 2.5)",
        id="fraction-is-not-int",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            timeout: '5'
        """,
        "resilience.yaml:4: policies.api.timeout: must be a number (got '5')",
        id="quoted-number",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            critical: maybe
        """,
        "resilience.yaml:4: policies.api.critical: must be true or false "
        "(got 'maybe')",
        id="wrong-type-bool",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            retry: 3
        """,
        "resilience.yaml:4: policies.api.retry: must be a mapping (got 3)",
        id="wrong-type-mapping",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            ignore_exceptions: httpx.HTTPError
        """,
        "resilience.yaml:4: policies.api.ignore_exceptions: must be a list "
        "(got 'httpx.HTTPError')",
        id="wrong-type-list",
    ),
    pytest.param(
        """\
        version: 1
        storage: {backend: redis, url: 6379}
        """,
        "resilience.yaml:2: storage.url: must be a string (got 6379)",
        id="wrong-type-string",
    ),
    pytest.param(
        """\
        version: 1
        policies: [api]
        """,
        "resilience.yaml:2: policies: must be a mapping (got a list)",
        id="policies-not-mapping",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api: 5
        """,
        "resilience.yaml:3: policies.api: must be a mapping (got 5)",
        id="policy-not-mapping",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            settings: {1: x}
        """,
        "resilience.yaml:4: policies.api.settings: keys must be text "
        "(got 1); quote it",
        id="non-text-key",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          siliconflow_api:
            retry:
              attempts: 0
        """,
        "resilience.yaml:5: policies.siliconflow_api.retry.attempts: must "
        "be >= 1 (got 0)",
        id="out-of-range-ge",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            timeout: -1
        """,
        "resilience.yaml:4: policies.api.timeout: must be > 0 (got -1)",
        id="out-of-range-gt",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            chaos: {enabled: true, failure_rate: 1.5}
        """,
        "resilience.yaml:4: policies.api.chaos.failure_rate: must be <= 1 "
        "(got 1.5)",
        id="out-of-range-le",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            kind: mysql
        """,
        "resilience.yaml:4: policies.api.kind: must be one of 'postgres', "
        "'http' or null (got 'mysql')",
        id="kind-choice",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            kind: 'postgres://sage:hunter2@db/sage'
        """,
        "resilience.yaml:4: policies.api.kind: must be one of 'postgres', "
        "'http' or null (got 'postgres://sage:***@db/sage')",
        id="secret-in-value-redacted",
    ),
    pytest.param(
        """\
        version: 1
        storage: {backend: mysql}
        """,
        "resilience.yaml:2: storage.backend: must be one of 'memory', "
        "'sqlite' or 'redis' (got 'mysql')",
        id="backend-choice",
    ),
    pytest.param(
        """\
        version: 1
        storage:
          backend: sqlite
        """,
        "resilience.yaml:3: storage.backend: the sqlite backend needs a path",
        id="sqlite-without-path",
    ),
    pytest.param(
        """\
        version: 1
        storage:
          backend: redis
          namespace: sage
        """,
        "resilience.yaml:3: storage.backend: the redis backend needs a url",
        id="redis-without-url",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            trip:
              failure_rate: 0.5
              slow_call_rate: 0.8
        """,
        "resilience.yaml:6: policies.api.trip.slow_call_rate: needs "
        "slow_call_duration",
        id="slow-rate-without-duration",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            recovery_timeout: 120
            recovery_backoff:
              multiplier: 2
              max: 60
        """,
        "resilience.yaml:7: policies.api.recovery_backoff.max: must be >= "
        "recovery_timeout (120) (got 60)",
        id="recovery-backoff-max",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            failure_statuses:
              - 503
              - 6xx
        """,
        "resilience.yaml:6: policies.api.failure_statuses[1]: must be an "
        "HTTP status 100-599, '4xx' or '5xx' (got '6xx')",
        id="failure-status",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            failure_statuses: [503, 99]
        """,
        "resilience.yaml:4: policies.api.failure_statuses[1]: must be an "
        "HTTP status 100-599, '4xx' or '5xx' (got 99)",
        id="failure-status-range",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            ignore_exceptions:
              - httpx.HTTPError
              - TimeoutError
        """,
        "resilience.yaml:6: policies.api.ignore_exceptions[1]: must be a "
        "dotted class name like 'module.Class' (got 'TimeoutError'); write "
        "'builtins.TimeoutError' for a built-in exception",
        id="dotted-name-builtin",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            record_exceptions: ['my module.Error']
        """,
        "resilience.yaml:4: policies.api.record_exceptions[0]: must be a "
        "dotted class name like 'module.Class' (got 'my module.Error')",
        id="dotted-name-syntax",
    ),
    pytest.param(
        """\
        version: 1
        defaults:
          timeout: 0
        policies:
          api: {timeout: 3}
        """,
        "resilience.yaml:3: defaults.timeout: must be > 0 (got 0)",
        id="overridden-but-invalid",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api: {timeout: 3}
        platforms:
          linux:
            policies:
              api:
                timeout: -2
        """,
        "resilience.yaml:8: platforms.linux.policies.api.timeout: must be "
        "> 0 (got -2)",
        id="platform-layer-named",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            recovery_backoff: {max: 100}
        platforms:
          linux:
            policies:
              api:
                recovery_timeout: 200
        """,
        "resilience.yaml:4: policies.api.recovery_backoff.max: must be >= "
        "recovery_timeout (200) (got 100)",
        id="cross-layer-check",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          api:
            timeout: 0
            retry: {attempts: 0}
          other:
            kind: ftp
        """,
        "resilience.yaml:4: policies.api.timeout: must be > 0 (got 0)",
        id="first-in-file-order",
    ),
    pytest.param(
        """\
        version: 1
        policies:
          zeta:
            kind: ftp
          alpha:
            timeout: 0
        """,
        "resilience.yaml:4: policies.zeta.kind: must be one of 'postgres', "
        "'http' or null (got 'ftp')",
        id="file-order-not-name-order",
    ),
]


class TestErrors:
    @pytest.mark.parametrize(("text", "message"), ERRORS)
    def test_message(self, tmp_path, monkeypatch, text, message):
        """Every problem reads file:line: key: problem, path as given."""
        write(tmp_path, text)
        monkeypatch.chdir(tmp_path)

        with pytest.raises(ConfigError) as info:
            load_config("resilience.yaml", platform="linux", environ=NO_ENV)

        assert message == str(info.value)

    def test_attributes(self):
        """ConfigError carries path, line, key and problem separately."""
        error = error_of(
            SMALL.replace("attempts: 3", "attempts: 0"),
        )

        assert (
            "resilience.yaml",
            6,
            "policies.api.retry.attempts",
            "must be >= 1 (got 0)",
        ) == (error.path, error.line, error.key, error.problem)
        assert isinstance(error, ValueError)

    def test_unknown_platform(self):
        """An explicit platform must be known or declared in the file."""
        error = error_of(SMALL, platform="beos")

        assert (
            "resilience.yaml: unknown platform 'beos'; known platforms: "
            "darwin, linux, windows"
        ) == str(error)

    def test_unknown_platform_lists_declared_ones(self):
        """Platforms declared in the file are listed as known too."""
        error = error_of(SMALL + "    platforms: {ci: {}}\n", platform="qa")

        assert (
            "resilience.yaml: unknown platform 'qa'; known platforms: ci, "
            "darwin, linux, windows"
        ) == str(error)

    def test_missing_file(self, tmp_path):
        """A missing file is a ConfigError naming it."""
        path = tmp_path / "absent.yaml"

        with pytest.raises(ConfigError) as info:
            load_config(path, environ=NO_ENV)

        assert f"{path}: no such file" == str(info.value)

    def test_directory(self, tmp_path):
        """A directory is not a configuration file."""
        with pytest.raises(ConfigError) as info:
            load_config(tmp_path, environ=NO_ENV)

        assert f"{tmp_path}: is a directory, not a file" == str(info.value)

    def test_not_utf8(self, tmp_path):
        """Bytes that are not UTF-8 are reported with their line and offset."""
        path = tmp_path / "latin1.yaml"
        path.write_bytes(b"version: 1\n# caf\xe9\n")

        with pytest.raises(ConfigError) as info:
            load_config(path, environ=NO_ENV)

        assert f"{path}:2: not UTF-8 text (bad byte at offset 16)" == str(
            info.value
        )

    def test_alias_bomb(self):
        """Alias expansion is bounded."""
        lines = ["version: 1", "x:", "  a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1]"]
        lines += [
            f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 8) + "]"
            for i in range(1, 8)
        ]

        error = error_of("\n".join(lines) + "\n")

        assert "the document is too large" in error.problem

    def test_all_or_nothing(self):
        """One bad policy rejects the whole file: nothing is returned."""
        error = error_of(SMALL + "      other: {timeout: 0}\n")

        assert "policies.other.timeout" == error.key


class TestSchema:
    def test_metadata(self):
        """The schema is draft 2020-12, closed, with an $id and a title."""
        schema = config_schema()

        assert (
            "https://json-schema.org/draft/2020-12/schema"
            == (schema["$schema"])
        )
        assert schema["$id"]
        assert schema["title"]
        assert schema["additionalProperties"] is False
        assert ["version"] == schema["required"]
        assert {
            "version",
            "storage",
            "defaults",
            "policies",
            "platforms",
            "$schema",
        } == set(schema["properties"])
        json.dumps(schema)  # serialisable

    def test_lists_every_policy_field(self):
        """Every PolicyConfig field is in the schema, with a description."""
        props = config_schema()["$defs"]["PolicyConfig"]["properties"]

        assert set(PolicyConfig.model_fields) == set(props)
        assert [] == [k for k, v in props.items() if not v.get("description")]

    def test_every_object_is_closed(self):
        """Every model in the schema forbids unknown keys; none is required."""
        defs = config_schema()["$defs"]

        assert dict.fromkeys(defs, False) == {
            name: d["additionalProperties"] for name, d in defs.items()
        }
        assert [] == [name for name, d in defs.items() if d.get("required")]

    def test_accepts_shipped_file(self):
        """The shipped file is valid against the schema."""
        import jsonschema  # noqa: PLC0415 - a dev dependency

        schema = config_schema()
        jsonschema.Draft202012Validator.check_schema(schema)
        with default_config_path().open(encoding="utf-8") as handle:
            document = yaml.safe_load(handle)

        jsonschema.Draft202012Validator(schema).validate(document)

    @pytest.mark.parametrize(
        "document",
        [
            {"version": 1, "polices": {}},
            {"version": 2},
            {"version": 1, "policies": {"api": {"timout": 1}}},
            {"version": 1, "policies": {"api": {"failure_statuses": [99]}}},
            {"version": 1, "policies": {"api": {"ignore_exceptions": ["X"]}}},
            {"version": 1, "platforms": {"linux": {"policy": {}}}},
        ],
    )
    def test_rejects_invalid(self, document):
        """Unknown keys and bad values are rejected by the schema too."""
        import jsonschema  # noqa: PLC0415 - a dev dependency

        errors = list(
            jsonschema.Draft202012Validator(config_schema()).iter_errors(
                document
            )
        )

        assert errors


class TestDump:
    TEXT = """\
        version: 1
        storage: {backend: redis, url: 'redis://:hunter2@127.0.0.1:6379/0'}
        policies:
          db:
            kind: postgres
            settings:
              host: 127.0.0.1
              password: hunter2
              dsn: postgresql://sage:hunter2@127.0.0.1/sage
    """

    @pytest.mark.parametrize("fmt", ["yaml", "json"])
    def test_secrets_redacted(self, fmt):
        """No password survives the dump, whatever the format."""
        text = dump_config(load_text(self.TEXT), fmt)

        assert "hunter2" not in text
        assert "***" in text

    def test_json_content(self):
        """JSON output holds the resolved values, platform and path."""
        data = json.loads(dump_config(load_text(self.TEXT), "json"))

        assert [
            "version",
            "platform",
            "path",
            "storage",
            "policies",
        ] == list(data)
        assert ("linux", "resilience.yaml") == (data["platform"], data["path"])
        assert {"host": "127.0.0.1", "password": "***", "dsn": "***"} == (
            data["policies"]["db"]["settings"]
        )
        assert "redis://:***@127.0.0.1:6379/0" == data["storage"]["url"]
        assert [408, 429, "5xx"] == data["policies"]["db"]["failure_statuses"]

    def test_yaml_equals_json(self):
        """The YAML and JSON dumps hold the same data."""
        config = load_config(platform="windows", environ=NO_ENV)

        assert json.loads(dump_config(config, "json")) == yaml.safe_load(
            dump_config(config, "yaml")
        )

    def test_unknown_format(self):
        """An unknown format is a ValueError."""
        with pytest.raises(ValueError, match="fmt must be 'yaml' or 'json'"):
            dump_config(load_text(SMALL), "toml")  # type: ignore[arg-type]


class TestValidateFiles:
    def test_results_in_order(self, tmp_path):
        """One result per file, in the order given; None when valid."""
        good = write(tmp_path, SMALL, "good.yaml")
        bad = write(tmp_path, "version: 3\n", "bad.yaml")
        absent = tmp_path / "absent.yaml"

        results = validate_files([good, bad, absent, default_config_path()])

        assert [str(good), str(bad), str(absent)] == [
            path for path, _ in results[:3]
        ]
        assert (None, None) == (results[0][1], results[3][1])
        assert (
            f"{bad}:1: version: must be 1, the only format this release "
            "reads (got 3)"
        ) == str(results[1][1])
        assert f"{absent}: no such file" == str(results[2][1])

    def test_every_platform_checked(self, tmp_path):
        """A problem on one platform only is found and says which."""
        path = write(
            tmp_path,
            """\
            version: 1
            policies:
              api:
                recovery_backoff: {max: 100}
            platforms:
              windows:
                policies:
                  api: {recovery_timeout: 200}
            """,
        )

        [(_, error)] = validate_files([path])

        assert error is not None
        assert (
            f"{path}:4: policies.api.recovery_backoff.max: must be >= "
            "recovery_timeout (200) (got 100) (with the 'windows' platform "
            "overrides)"
        ) == str(error)

    def test_declared_platforms_checked(self, tmp_path):
        """Platforms of one's own are validated too."""
        path = write(
            tmp_path,
            """\
            version: 1
            storage: {backend: memory}
            platforms:
              ci:
                storage: {backend: sqlite}
            """,
        )

        [(_, error)] = validate_files([path])

        assert error is not None
        assert (
            f"{path}:5: platforms.ci.storage.backend: the sqlite backend "
            "needs a path"
        ) == str(error)

    def test_environment_ignored_by_default(self, tmp_path, monkeypatch):
        """The verdict is about the files, not the process environment."""
        monkeypatch.setenv("SAGE_RESILIENCE__NOPE__TIMEOUT", "1")
        path = write(tmp_path, SMALL)

        assert [(str(path), None)] == validate_files([path])


class TestFiniteNumbers:
    @pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
    @pytest.mark.parametrize(
        ("key", "dotted"),
        [
            ("timeout: X", "timeout"),
            ("recovery_timeout: X", "recovery_timeout"),
            ("max_wait: X", "max_wait"),
            ("retry: {backoff: {max: X}}", "retry.backoff.max"),
            ("retry: {deadline: X}", "retry.deadline"),
        ],
    )
    def test_non_finite_is_rejected(self, value, key, dotted):
        """.inf and .nan are errors naming the key (inf timers overflow)."""
        text = f"version: 1\npolicies:\n  a:\n    {key.replace('X', value)}\n"
        error = error_of(text)
        assert f"policies.a.{dotted}" == error.key
        assert error.problem.startswith("must be a finite number")

    def test_non_finite_from_the_environment(self):
        """The same check applies to environment overrides."""
        error = error_of(
            SMALL, environ={"SAGE_RESILIENCE__API__TIMEOUT": ".inf"}
        )
        assert "SAGE_RESILIENCE__API__TIMEOUT" == error.key
        assert "must be a finite number" in error.problem


# -- numbers, hostile files, exception names, storage, staging ----------------

BOUNDED_FIELDS = [
    ("timeout: X", "timeout", 2_592_000),
    ("recovery_timeout: X", "recovery_timeout", 2_592_000),
    ("max_wait: X", "max_wait", 2_592_000),
    ("failure_threshold: X", "failure_threshold", 1_000_000),
    ("success_threshold: X", "success_threshold", 1_000_000),
    ("half_open_max_calls: X", "half_open_max_calls", 1_000_000),
    ("max_concurrency: X", "max_concurrency", 1_000_000),
    ("retry: {attempts: X}", "retry.attempts", 1_000),
    ("retry: {deadline: X}", "retry.deadline", 2_592_000),
    ("retry: {backoff: {initial: X}}", "retry.backoff.initial", 2_592_000),
    ("retry: {backoff: {max: X}}", "retry.backoff.max", 2_592_000),
    ("retry: {backoff: {jitter: X}}", "retry.backoff.jitter", 2_592_000),
    ("retry: {backoff: {multiplier: X}}", "retry.backoff.multiplier", 1_000),
    ("trip: {window: X}", "trip.window", 2_592_000),
    ("trip: {minimum_calls: X}", "trip.minimum_calls", 1_000_000),
    (
        "trip: {slow_call_duration: X}",
        "trip.slow_call_duration",
        2_592_000,
    ),
    ("recovery_backoff: {max: X}", "recovery_backoff.max", 2_592_000),
    (
        "recovery_backoff: {multiplier: X}",
        "recovery_backoff.multiplier",
        1_000,
    ),
    ("chaos: {latency: X}", "chaos.latency", 2_592_000),
]


def policy_text(body: str) -> str:
    return f"version: 1\npolicies:\n  a:\n    {body}\n"


class TestNumberRanges:
    @pytest.mark.parametrize(("body", "dotted", "cap"), BOUNDED_FIELDS)
    def test_above_the_bound_is_rejected(self, body, dotted, cap):
        """Every number has an upper bound (timers overflow past them)."""
        error = error_of(policy_text(body.replace("X", str(cap + 1))))

        assert f"policies.a.{dotted}" == error.key
        assert f"must be <= {cap} (got {cap + 1})" == error.problem
        assert 4 == error.line

    @pytest.mark.parametrize(("body", "dotted", "cap"), BOUNDED_FIELDS)
    def test_the_bound_itself_is_accepted(self, body, dotted, cap):
        """The bound is inclusive."""
        config = load_text(policy_text(body.replace("X", str(cap))))

        assert cap == resolved(config.policies["a"], dotted)

    def test_huge_float_is_rejected(self):
        """1.0e+300 seconds is finite but not a usable timeout."""
        error = error_of(policy_text("timeout: 1.0e+300"))

        assert "must be <= 2592000 (got 1e+300)" == error.problem

    def test_a_4000_digit_int_is_not_printed(self):
        """A giant integer is described, not quoted digit by digit."""
        error = error_of(policy_text("failure_threshold: " + "9" * 4000))

        assert (
            "must be <= 1000000 (got a number of about 4000 digits)"
            == error.problem
        )

    def test_bounds_are_in_the_schema(self):
        """The JSON Schema states the maxima too."""
        props = config_schema()["$defs"]["PolicyConfig"]["properties"]

        assert 2_592_000 == props["recovery_timeout"]["maximum"]


def assert_located(error: ConfigError, line: int, key: str | None) -> None:
    """The error names the file, the line and (where known) the key."""
    assert "resilience.yaml" == error.path
    assert line == error.line
    assert key == error.key


def bomb(tag: str) -> str:
    """A billion laughs whose every level is written under *tag*."""
    if tag == "seq":
        levels = ["  l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
        levels += [
            f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]"
            for i in range(1, 9)
        ]
    else:
        levels = [f"  l0: &l0 !!{tag} [a: 1, b: 2, c: 3, d: 4, e: 5]"]
        levels += [
            f"  l{i}: &l{i} !!{tag} ["
            + ", ".join(f"k{j}: *l{i - 1}" for j in range(10))
            + "]"
            for i in range(1, 9)
        ]
    return (
        "version: 1\ndefaults:\n  settings:\n"
        + "\n".join("  " + lv for lv in levels)
        + "\npolicies:\n  a:\n    settings:\n      x: *l8\n"
    )


HOSTILE = {
    "nul byte": ("version: 1\npolicies:\n  a: {timeout: 1}\x00\n", 3, None),
    "5000-digit int": (
        policy_text("failure_threshold: " + "9" * 5000),
        4,
        "policies.a.failure_threshold",
    ),
    "!!int abc": (
        policy_text("failure_threshold: !!int abc"),
        4,
        "policies.a.failure_threshold",
    ),
    "!!float abc": (
        policy_text("timeout: !!float abc"),
        4,
        "policies.a.timeout",
    ),
    "bad date": (
        policy_text("settings: {since: 2024-99-99}"),
        4,
        "policies.a.settings.since",
    ),
    "!!binary": (
        policy_text("settings: {blob: !!binary //79}"),
        4,
        "policies.a.settings.blob",
    ),
    "5000-deep list": (
        policy_text("settings: {x: " + "[" * 5000 + "]" * 5000 + "}"),
        4,
        None,
    ),
    "5000-deep mapping": (
        policy_text("settings: {x: " + "{a: " * 5000 + "1" + "}" * 5000 + "}"),
        4,
        None,
    ),
    "recursive !!pairs": (
        policy_text("settings: {x: &r !!pairs [a: *r]}"),
        4,
        "policies.a.settings.x",
    ),
}


class TestHostileFiles:
    @pytest.mark.parametrize("case", sorted(HOSTILE))
    def test_a_config_error_with_file_line_key(self, case):
        """Each hostile document is a ConfigError naming file, line, key."""
        text, line, key = HOSTILE[case]

        error = error_of(text)

        assert_located(error, line, key)

    @pytest.mark.parametrize("tag", ["seq", "pairs", "omap"])
    def test_alias_bombs_under_any_tag(self, tag):
        """A billion laughs is refused whatever tag its levels carry."""
        error = error_of(bomb(tag))

        assert error.problem.startswith("the document is too large")
        assert "resilience.yaml" == error.path
        assert error.line is not None

    def test_a_set_cannot_hold_one(self):
        """!!set members must be scalars, so no bomb fits under it."""
        error = error_of(policy_text("settings: {x: !!set {? [1, 2]}}"))

        assert "invalid YAML: found unhashable key" == error.problem
        assert 4 == error.line

    def test_messages(self):
        """The wording says what is wrong, not Python's internals."""
        assert (
            "an integer of 5000 digits is too long (at most 4300)"
            == error_of(HOSTILE["5000-digit int"][0]).problem
        )
        assert (
            "cannot be read as an integer (got 'abc')"
            == error_of(HOSTILE["!!int abc"][0]).problem
        )
        assert (
            "invalid YAML: the control character U+0000 is not allowed "
            "(escape it in a double-quoted string)"
            == error_of(HOSTILE["nul byte"][0]).problem
        )
        assert (
            "nested deeper than 50 levels"
            == error_of(HOSTILE["5000-deep list"][0]).problem
        )

    def test_from_the_environment(self):
        """Env values go through the same guards, named by the variable."""
        for raw in ("!!int abc", "[" * 5000, "9" * 5000):
            error = error_of(
                SMALL, environ={"SAGE_RESILIENCE__API__TIMEOUT": raw}
            )
            assert "SAGE_RESILIENCE__API__TIMEOUT" == error.key

    def test_text_over_the_size_limit(self):
        """load_config_text refuses more than 1 MB of text at once."""
        error = error_of("version: 1\n#" + "x" * _config.MAX_CONFIG_BYTES)

        assert error.problem.startswith("too large")


CHILD_READ = """
import sys
from sage_resilience._config import load_config
from sage_resilience.exceptions import ConfigError
try:
    load_config(sys.argv[1], environ={})
except ConfigError as exc:
    print(exc)
"""


CHILD_VALIDATE = """
import sys
from sage_resilience._config import validate_files
[(_, error)] = validate_files([sys.argv[1]])
print(error)
"""

CHILD_RELOAD = """
import sys
from structlog.testing import capture_logs
from sage_resilience import configure, policy
from sage_resilience.exceptions import ConfigError
configure(sys.argv[1])
with capture_logs() as logs:
    try:
        configure(sys.argv[2])
    except ConfigError:
        pass
[failed] = [e for e in logs if e["event"] == "config_reload_failed"]
print(policy("a").config.failure_threshold, failed["event"], failed["error"])
"""


def run_child(script: str, *args: str) -> str:
    """Run *script* in a child with a timeout and 2 GB of memory at most.

    A regression (a read that blocks, or fills the memory) fails the test
    instead of hanging the suite or the machine.
    """
    limit = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", limit + script, *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert 0 == done.returncode, done.stderr[-1000:]
    return done.stdout.strip()


def read_in_child(path: str) -> str:
    """Load *path* in a child; the ConfigError it printed."""
    return run_child(CHILD_READ, path)


class TestFileChecks:
    def test_fifo_is_refused_at_once(self, tmp_path):
        """A FIFO is a ConfigError at once (reading it blocked for ever)."""
        fifo = tmp_path / "resilience.yaml"
        os.mkfifo(fifo)

        assert f"{fifo}: is a FIFO, not a file" == read_in_child(str(fifo))

    def test_dev_zero_is_refused_at_once(self):
        """/dev/zero is a ConfigError (reading it ran out of memory)."""
        assert "/dev/zero: is a character device, not a file" == (
            read_in_child("/dev/zero")
        )

    def test_socket_is_refused(self, tmp_path):
        """A Unix socket path is named as such."""
        path = tmp_path / "s.yaml"
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(path))
            with pytest.raises(ConfigError) as info:
                load_config(path, environ=NO_ENV)

        assert f"{path}: is a socket, not a file" == str(info.value)

    def test_file_over_one_megabyte(self, tmp_path):
        """A file over 1 MB is refused before it is read."""
        path = tmp_path / "big.yaml"
        path.write_text("version: 1\n#" + "x" * _config.MAX_CONFIG_BYTES)

        with pytest.raises(ConfigError) as info:
            load_config(path, environ=NO_ENV)

        assert (
            f"{path}: too large (1,000,012 bytes); a configuration file holds "
            "at most 1,000,000"
        ) == str(info.value)

    def test_validate_files_reports_it(self, tmp_path):
        """config validate reports a FIFO as a finding, not a hang."""
        fifo = tmp_path / "f.yaml"
        os.mkfifo(fifo)

        assert f"{fifo}: is a FIFO, not a file" == (
            run_child(CHILD_VALIDATE, str(fifo))
        )


GOOD = "version: 1\npolicies:\n  a: {failure_threshold: 2}\n"


class TestReloads:
    @pytest.mark.parametrize("case", sorted(HOSTILE))
    def test_rejected_reload_keeps_the_old_config(
        self, case, tmp_path, events
    ):
        """A hostile file on reload: ConfigError, old config, event logged."""
        good = tmp_path / "good.yaml"
        good.write_text(GOOD)
        configure(good)
        bad = tmp_path / "resilience.yaml"
        bad.write_text(HOSTILE[case][0])

        with pytest.raises(ConfigError) as info:
            configure(bad)

        assert 2 == policy("a").config.failure_threshold
        [failed] = [e for e in events if e["event"] == "config_reload_failed"]
        assert (str(bad), str(info.value)) == (failed["path"], failed["error"])

    def test_fifo_on_reload(self, tmp_path):
        """Reloading from a FIFO fails at once and keeps the old config."""
        good = tmp_path / "good.yaml"
        good.write_text(GOOD)
        fifo = tmp_path / "fifo.yaml"
        os.mkfifo(fifo)

        out = run_child(CHILD_RELOAD, str(good), str(fifo))

        assert f"2 config_reload_failed {fifo}: is a FIFO, not a file" == out


def bulkhead_config(max_wait: float) -> PolicyConfig:
    return PolicyConfig(max_concurrency=1, max_wait=max_wait)


def second_call_while_first_holds_the_slot(name: str) -> str:
    """Hold the slot for 1 s in a thread; what a second call gets."""
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(10)

    holder = threading.Thread(target=policy(name).call, args=(hold,))
    holder.start()
    holding.wait(10)
    timer = threading.Timer(1.0, release.set)
    timer.start()
    try:
        policy(name).call(lambda: None)
    except BulkheadFullError:
        return "refused"
    finally:
        release.set()
        holder.join(10)
        timer.cancel()
    return "admitted"


class TestStagingNeverMutates:
    def test_a_rejected_reload_leaves_the_bulkhead_alone(self):
        """A reload rejected after staging does not change max_wait."""
        configure(ResilienceConfig(policies={"a": bulkhead_config(0)}))
        broken = PolicyConfig().model_copy(
            update={"ignore_exceptions": ("builtins.NoSuchError",)}
        )

        with pytest.raises(ConfigError):
            configure(
                ResilienceConfig(
                    policies={"a": bulkhead_config(30), "b": broken}
                )
            )

        assert 0 == policy("a").config.max_wait
        assert "refused" == second_call_while_first_holds_the_slot("a")

    def test_an_accepted_reload_applies_max_wait(self):
        """The new max_wait applies once the reload is committed."""
        configure(ResilienceConfig(policies={"a": bulkhead_config(0)}))
        configure(ResilienceConfig(policies={"a": bulkhead_config(30)}))

        assert "admitted" == second_call_while_first_holds_the_slot("a")


STATUS_WITH_THIS = """\
version: 1
policies:
  a:
    ignore_exceptions: [this.Zen]
    record_exceptions: [antigravity.Fly]
"""


class TestExceptionNames:
    def test_modules_are_never_imported(self, tmp_path):
        """`this.X` is not imported: status --json stays clean JSON."""
        path = tmp_path / "r.yaml"
        path.write_text(STATUS_WITH_THIS)
        script = (
            "import sys\n"
            "from sage_resilience.cli import main\n"
            "code = main(['status', '--json', '--config', sys.argv[1]])\n"
            "assert 'this' not in sys.modules, 'this was imported'\n"
            "assert 'antigravity' not in sys.modules\n"
            # memory storage: status shows this process only, exit 1
            "assert code == 1, f'exit {code}'\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert 0 == done.returncode, done.stderr[-1000:]
        assert ["a"] == list(json.loads(done.stdout))

    def test_recognised_once_imported(self, tmp_path, monkeypatch):
        """A class from a module imported after configure() is recognised."""
        module = "sage_test_late_errors"
        (tmp_path / f"{module}.py").write_text(
            "class Gone(Exception):\n    pass\nclass Later(Gone):\n    pass\n"
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        configure(
            load_text(
                f"version: 1\npolicies:\n  a:\n    failure_threshold: 1\n"
                f"    ignore_exceptions: [{module}.Gone]\n"
            )
        )
        assert module not in sys.modules
        late = importlib.import_module(module)
        monkeypatch.delitem(sys.modules, module)
        monkeypatch.setitem(sys.modules, module, late)

        def fail() -> None:
            raise late.Later

        with pytest.raises(late.Later):
            policy("a").call(fail)

        assert "closed" == policy("a").state  # ignored: the subclass too

    def test_recognised_by_name_before_import(self, tmp_path, monkeypatch):
        """Before its module is imported, an instance is known by name."""
        module = "sage_test_unimported"
        (tmp_path / f"{module}.py").write_text("raise SystemExit('ran')\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        configure(
            load_text(
                f"version: 1\npolicies:\n  a:\n    failure_threshold: 1\n"
                f"    ignore_exceptions: [{module}.Gone]\n"
            )
        )
        gone = type("Gone", (Exception,), {"__module__": module})

        def fail() -> None:
            raise gone

        with pytest.raises(gone):
            policy("a").call(fail)

        assert "closed" == policy("a").state
        assert module not in sys.modules

    @pytest.mark.parametrize(
        ("name", "problem"),
        [
            (
                "nowhere_at_all.Missing",
                (
                    "cannot import 'nowhere_at_all.Missing': no module named "
                    "'nowhere_at_all'"
                ),
            ),
            (
                "builtins.NoSuchError",
                (
                    "cannot import 'builtins.NoSuchError': 'builtins' has no "
                    "'NoSuchError'"
                ),
            ),
            ("builtins.len", "'builtins.len' is not an exception class"),
        ],
    )
    def test_wrong_names_at_load_time(self, name, problem):
        """A name that cannot be an exception fails the load, located."""
        error = error_of(
            policy_text(f"record_exceptions: [builtins.KeyError, {name}]")
        )

        assert_located(error, 4, "policies.a.record_exceptions[1]")
        assert problem == error.problem


class TestStorageValidation:
    @pytest.mark.parametrize(
        ("storage", "key", "problem"),
        [
            (
                "{backend: redis, url: 'http://h:6379'}",
                "storage.url",
                (
                    "must start with redis://, rediss:// or unix:// "
                    "(got 'http://h:6379')"
                ),
            ),
            (
                "{backend: redis, url: 'redis://:pa/ss@h:99999/0'}",
                "storage.url",
                (
                    "is not a valid URL: bad host or port "
                    "(got 'redis://:***@h:99999/0')"
                ),
            ),
            (
                "{backend: redis, url: 'redis://'}",
                "storage.url",
                "must name a host: redis://host:6379/0 (got 'redis://')",
            ),
            (
                "{backend: redis, url: 'redis://h/zero'}",
                "storage.url",
                (
                    "must end with a database number, as /0 "
                    "(got 'redis://h/zero')"
                ),
            ),
            (
                "{backend: redis, url: 'unix://'}",
                "storage.url",
                "must name the socket: unix:///path (got 'unix://')",
            ),
            (
                "{backend: redis, url: 'redis://h', namespace: ''}",
                "storage.namespace",
                "must not be empty",
            ),
            (
                "{backend: sqlite, path: ' '}",
                "storage.path",
                "must name a file (got an empty path)",
            ),
            (
                '{backend: sqlite, path: "a\\0b.db"}',
                "storage.path",
                "must not hold a NUL character",
            ),
        ],
    )
    def test_invalid(self, storage, key, problem):
        """Unusable storage locations are ConfigErrors, passwords hidden."""
        error = error_of(f"version: 1\nstorage: {storage}\n")

        assert (key, problem) == (error.key, error.problem)
        assert 2 == error.line

    def test_sqlite_directory(self, tmp_path):
        """A directory is not a database file."""
        error = error_of(
            f"version: 1\nstorage: {{backend: sqlite, path: '{tmp_path}'}}\n"
        )

        assert (
            f"is a directory, not a database file (got '{tmp_path}')"
            == error.problem
        )

    @pytest.mark.parametrize(
        "url",
        [
            "redis://127.0.0.1:6379/0",
            "rediss://user:pw@cache.example:6380",
            "unix:///run/redis.sock",
            "redis://[::1]:6379",
        ],
    )
    def test_valid_urls(self, url):
        """Ordinary Redis URLs load."""
        config = load_text(
            f"version: 1\nstorage: {{backend: redis, url: '{url}'}}\n"
        )

        assert url == config.storage.url

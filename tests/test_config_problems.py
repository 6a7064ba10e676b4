"""Every problem of a file at once; the published schema; missing extras.

A ``ConfigError`` carries all the problems of its file (``problems``),
``config validate`` prints them one per line; the JSON Schema is
committed at the URL of its ``$id``; a storage backend whose library is
not installed is a ``ConfigError`` naming the extra, never a traceback.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml
from sage_resilience import ConfigError, _registry, configure, policy
from sage_resilience._config import (
    SCHEMA_URL,
    StorageConfig,
    config_schema,
    default_config_path,
    load_config_text,
    schema_text,
    validate_files,
)
from sage_resilience._storage import make_storage
from sage_resilience.cli import main

ROOT = Path(__file__).resolve().parent.parent
NO_ENV: dict[str, str] = {}

FOUR = """\
version: 1
defaults:
  failure_treshold: 3
policies:
  api:
    retry: {attempts: 0}
    timeout: -1
  db:
    recovery_timeout: "x"
"""

FOUR_PROBLEMS = [
    (
        "{p}:3: defaults.failure_treshold: unknown key 'failure_treshold'; did "
        "you mean 'failure_threshold'?"
    ),
    "{p}:6: policies.api.retry.attempts: must be >= 1 (got 0)",
    "{p}:7: policies.api.timeout: must be > 0 (got -1)",
    "{p}:9: policies.db.recovery_timeout: must be a number (got 'x')",
]


def write(directory: Path, text: str, name: str = "resilience.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(text: str, **kwargs: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config_text(
            textwrap.dedent(text),
            source="r.yaml",
            platform="linux",
            environ=kwargs.pop("environ", NO_ENV),  # type: ignore[arg-type]
        )
    return info.value


class TestEveryProblem:
    def test_four_mistakes_four_problems(self):
        """Each problem once, in file order; the message is the first."""
        error = error_of(FOUR)

        assert [p.format(p="r.yaml") for p in FOUR_PROBLEMS] == [
            str(each) for each in error.problems
        ]
        assert error is error.problems[0]
        assert str(error) == str(error.problems[0])

    def test_each_problem_is_located(self):
        """Every problem has its own path, line and key."""
        error = error_of(FOUR)

        assert [
            ("r.yaml", 3, "defaults.failure_treshold"),
            ("r.yaml", 6, "policies.api.retry.attempts"),
            ("r.yaml", 7, "policies.api.timeout"),
            ("r.yaml", 9, "policies.db.recovery_timeout"),
        ] == [(p.path, p.line, p.key) for p in error.problems]

    def test_a_default_shared_by_many_policies_counts_once(self):
        """A bad defaults: value reaches every policy; reported once."""
        error = error_of(
            """\
            version: 1
            defaults: {timeout: 0}
            policies: {a: {}, b: {}, c: {}}
            """
        )

        assert ["r.yaml:2: defaults.timeout: must be > 0 (got 0)"] == [
            str(p) for p in error.problems
        ]

    def test_environment_problems_come_last(self):
        """File problems in file order, then the variables'."""
        error = error_of(
            "version: 1\npolicies:\n  api: {timeout: 0}\n",
            environ={"SAGE_RESILIENCE__API__RETRY__ATTEMPTS": "zero"},
        )

        assert ["r.yaml", "<env>"] == [p.path for p in error.problems]

    def test_structural_and_value_problems_together(self):
        """Duplicate keys, a wrong version and bad values: all reported."""
        error = error_of(
            """\
            version: 2
            policies:
              api: {timeout: 1}
              api: {timeout: 0}
            """
        )

        assert [1, 4, 4] == [p.line for p in error.problems]
        assert "duplicate key 'api'" in error.problems[1].problem

    def test_pickled_it_keeps_them(self):
        """A ConfigError crossing processes keeps every problem."""
        error = pickle.loads(pickle.dumps(error_of(FOUR)))

        assert [p.format(p="r.yaml") for p in FOUR_PROBLEMS] == [
            str(each) for each in error.problems
        ]
        assert error is error.problems[0]

    def test_a_single_problem_lists_itself(self):
        """A ConfigError built by hand: problems is [itself]."""
        error = ConfigError("bad", path="x.yaml", line=2, key="k")

        assert [error] == error.problems

    def test_validate_files_gathers_every_platform(self, tmp_path):
        """One error per file, every problem of every platform once."""
        path = write(
            tmp_path,
            """\
            version: 1
            policies:
              db: {timeout: 0}
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
        assert [
            f"{path}:3: policies.db.timeout: must be > 0 (got 0)",
            (
                f"{path}:5: policies.api.recovery_backoff.max: must be >= "
                "recovery_timeout (200) (got 100) (with the 'windows' platform "
                "overrides)"
            ),
        ] == [str(p) for p in error.problems]

    def test_a_platform_problem_is_listed_once(self, tmp_path):
        """Found on darwin only, it is listed once, saying so."""
        path = write(
            tmp_path,
            """\
            version: 1
            policies:
              db: {timeout: 0}
              api:
                recovery_backoff: {max: 100}
            platforms:
              darwin:
                policies:
                  api: {recovery_timeout: 200}
            """,
        )

        [(_, error)] = validate_files([path])

        assert error is not None
        assert [
            f"{path}:3: policies.db.timeout: must be > 0 (got 0)",
            (
                f"{path}:5: policies.api.recovery_backoff.max: must be >= "
                "recovery_timeout (200) (got 100) (with the 'darwin' "
                "platform overrides)"
            ),
        ] == [str(p) for p in error.problems]

    def test_config_validate_prints_one_per_line(self, tmp_path, capsys):
        """config validate: every problem on its own stderr line, exit 1."""
        path = write(tmp_path, FOUR)

        assert 1 == main(["config", "validate", str(path)])
        out, err = capsys.readouterr()

        assert "" == out
        assert [p.format(p=path) for p in FOUR_PROBLEMS] == err.splitlines()

    def test_config_validate_json_lists_them(self, tmp_path, capsys):
        """--format json: problem (the first) and problems (all)."""
        path = write(tmp_path, FOUR)

        assert 1 == main(["config", "validate", str(path), "--format", "json"])
        [result] = json.loads(capsys.readouterr().out)

        assert str(path) + ":3: " in result["problem"]
        assert [p.format(p=path) for p in FOUR_PROBLEMS] == result["problems"]

    def test_a_reload_reports_them_all(self, tmp_path):
        """configure() raises with every problem; nothing is applied."""
        configure(write(tmp_path, "version: 1\npolicies:\n  api: {}\n"))

        with pytest.raises(ConfigError) as info:
            configure(write(tmp_path, FOUR, "next.yaml"))

        assert 4 == len(info.value.problems)
        assert ["api"] == sorted(_registry.policies())


class TestEditorSchema:
    def test_dollar_schema_is_accepted_and_ignored(self):
        """The key editors write at the top is no error."""
        config = load_config_text(
            f"$schema: {SCHEMA_URL}\nversion: 1\npolicies:\n  api: {{}}\n",
            platform="linux",
            environ=NO_ENV,
        )

        assert ["api"] == list(config.policies)

    def test_the_schema_accepts_dollar_schema(self):
        """The schema lets an editor's $schema key through."""
        document = {"$schema": SCHEMA_URL, "version": 1}

        jsonschema.validate(document, config_schema())

    def test_the_committed_schema_is_the_generated_one(self):
        """schema/resilience.schema.json equals `config schema`."""
        committed = ROOT / "schema" / "resilience.schema.json"

        assert schema_text() == committed.read_text(encoding="utf-8")

    def test_config_schema_prints_it(self, capsys):
        """The command prints exactly the published text."""
        assert 0 == main(["config", "schema"])

        assert schema_text() == capsys.readouterr().out

    def test_the_id_is_where_it_is_published(self):
        """$id is the raw URL of the committed file in the repository."""
        assert SCHEMA_URL == config_schema()["$id"]
        assert SCHEMA_URL.endswith("/raw/main/schema/resilience.schema.json")

    def test_the_shipped_file_has_the_modeline(self):
        """config/resilience.yaml tells yaml-language-server the schema."""
        text = default_config_path().read_text(encoding="utf-8")

        assert (
            f"# yaml-language-server: $schema={SCHEMA_URL}"
            == text.splitlines()[0]
        )
        jsonschema.validate(yaml.safe_load(text), config_schema())


REDIS_YAML = """\
version: 1
policies:
  api: {}
storage:
  backend: redis
  url: redis://127.0.0.1:6379/0
"""

REDIS_PROBLEM = (
    "storage.backend: the redis backend needs the 'redis' package, which "
    "is not installed: pip install 'sage-resilience[redis]'"
)


@pytest.fixture
def no_redis(monkeypatch):
    """``import redis`` fails, as where the extra is not installed."""
    for name in [
        n for n in sys.modules if n == "redis" or n.startswith("redis.")
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "redis", None)


@pytest.mark.usefixtures("no_redis")
class TestMissingExtra:
    def test_configure_names_the_key_and_the_extra(self, tmp_path):
        """configure(): a ConfigError at storage.backend's line."""
        path = write(tmp_path, REDIS_YAML)

        with pytest.raises(ConfigError) as info:
            configure(path)

        assert f"{path}:5: {REDIS_PROBLEM}" == str(info.value)
        assert not _registry.configured()

    def test_a_reload_to_it_keeps_the_config(self, tmp_path):
        """The configuration in force stays."""
        configure(write(tmp_path, "version: 1\npolicies:\n  db: {}\n"))

        with pytest.raises(ConfigError, match="sage-resilience\\[redis\\]"):
            configure(write(tmp_path, REDIS_YAML, "redis.yaml"))

        assert "memory" == policy("db").status()["storage"]

    def test_make_storage(self):
        """The storage factory checks it too."""
        config = StorageConfig(backend="redis", url="redis://localhost/0")

        with pytest.raises(ConfigError) as info:
            make_storage(config, "api")

        assert REDIS_PROBLEM == str(info.value)

    def test_validate_files(self, tmp_path):
        """config validate does not say ok."""
        path = write(tmp_path, REDIS_YAML)

        [(_, error)] = validate_files([path])

        assert f"{path}:5: {REDIS_PROBLEM}" == str(error)

    def test_on_one_platform(self, tmp_path):
        """A platform's storage: named at its own key."""
        path = write(
            tmp_path,
            """\
            version: 1
            platforms:
              linux:
                storage: {backend: redis, url: "redis://h/0"}
            """,
        )

        [(_, error)] = validate_files([path])

        assert error is not None
        assert ("platforms.linux.storage.backend", 4) == (
            error.key,
            error.line,
        )

    def test_the_cli(self, tmp_path, capsys):
        """config validate: exit 1 and the message, never ok."""
        path = write(tmp_path, REDIS_YAML)

        assert 1 == main(["config", "validate", str(path)])
        out, err = capsys.readouterr()

        assert ("", f"{path}:5: {REDIS_PROBLEM}\n") == (out, err)


STATUS_WITHOUT_REDIS = """
import sys
sys.modules["redis"] = None
from sage_resilience.cli import main
sys.exit(main(["status", "--config", sys.argv[1]]))
"""


def test_status_without_redis_in_a_child(tmp_path):
    """`status` on a redis config without redis: one line, no traceback."""
    path = write(tmp_path, REDIS_YAML)

    done = subprocess.run(
        [sys.executable, "-c", STATUS_WITHOUT_REDIS, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert 1 == done.returncode
    assert "Traceback" not in done.stderr
    assert "pip install 'sage-resilience[redis]'" in done.stderr
    assert "storage.backend" in done.stderr

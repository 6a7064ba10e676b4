"""sage-resilience doctor against real PostgreSQL and HTTP servers."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys

import asyncpg
import pytest
from sage_resilience._config import PolicyConfig, ResilienceConfig
from sage_resilience._diagnosis.doctor import Finding, run_doctor
from sage_resilience.cli.doctor import add_doctor_arguments, doctor_command
from tests.support import unavailable
from tests.support.http_servers import (
    UNRESOLVABLE_HOST,
    ResettingServer,
    Response,
    SilentServer,
    StandInServer,
    closed_port,
)
from tests.support.pg import PgCluster, pgvector_cluster, plain_pg15_cluster

PASSWORD = "Doctor-Pg-pw-90210"
API_KEY = "sk-doctorkey0123456789xyz"
PW_ENV = "SAGE_TEST_PG_PASSWORD"
MODELS = {"object": "list", "data": [{"id": "a"}, {"id": "b"}]}


# -- fixtures -------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> PgCluster:
    """pgserver with a pgvector database, and the broken set-ups."""
    with pgvector_cluster() as cluster:
        cluster.create_role("alice", password=PASSWORD)
        cluster.create_role("limited", password=PASSWORD, connection_limit=1)
        cluster.create_role("outsider")
        cluster.create_database("sage", owner="alice")
        cluster.psql("CREATE EXTENSION vector;", database="sage")
        cluster.create_database("novec", owner="alice")
        cluster.create_database("closed")
        cluster.revoke_connect("closed")
        yield cluster


@pytest.fixture(scope="module")
def pg15() -> PgCluster:
    with plain_pg15_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def api() -> StandInServer:
    """An OpenAI-compatible stand-in; /ok/v1/models lists two models."""
    with StandInServer() as server:
        server.script("/ok/v1/models", Response(200, json=MODELS))
        server.script(
            "/keyed/v1/models",
            Response(401, json={"error": {"message": "Invalid token"}}),
        )
        server.script(
            "/bad/v1/models",
            Response(
                400,
                json={
                    "code": 20012,
                    "message": "Model does not exist. Please check it "
                    "carefully.",
                    "data": None,
                },
            ),
        )
        server.script(
            "/busy/v1/models",
            Response(429, headers={"Retry-After": "30"}),
        )
        server.script("/down/v1/models", Response(503))
        yield server


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No ambient key or password leaks into a check."""
    for name in ("SILICONFLOW_API_KEY", "PGPASSWORD", PW_ENV, "PGHOST"):
        monkeypatch.delenv(name, raising=False)


def pg_settings(pg: PgCluster, **overrides: object) -> dict[str, object]:
    settings: dict[str, object] = {
        "host": pg.host,
        "port": pg.port,
        "database": "sage",
        "user": "alice",
        "password_env": PW_ENV,
    }
    settings.update(overrides)
    return settings


def config(**policies: PolicyConfig) -> ResilienceConfig:
    return ResilienceConfig(policies=policies)


def postgres(**settings: object) -> PolicyConfig:
    return PolicyConfig(kind="postgres", settings=settings)


def http(**settings: object) -> PolicyConfig:
    return PolicyConfig(kind="http", settings=settings)


async def check_one(policy: PolicyConfig, **kwargs: object) -> Finding:
    findings = await run_doctor(config(dep=policy), timeout=2.0, **kwargs)
    assert 1 == len(findings)
    return findings[0]


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


# -- postgres -------------------------------------------------------------------


class TestPostgresCheck:
    async def test_ok(self, pg, monkeypatch):
        """Reachable, logged in, pgvector enabled: ok."""
        monkeypatch.setenv(PW_ENV, PASSWORD)

        finding = await check_one(postgres(**pg_settings(pg)))

        assert "ok" == finding.cause
        assert "pgvector" in finding.explanation
        assert "" == finding.fix
        assert PASSWORD not in repr(finding)

    async def test_password_from_pgpassword(self, pg, monkeypatch):
        """Without password_env, PGPASSWORD is used."""
        monkeypatch.setenv("PGPASSWORD", PASSWORD)
        settings = pg_settings(pg)
        del settings["password_env"]

        assert "ok" == (await check_one(postgres(**settings))).cause

    async def test_pgvector_not_enabled(self, pg, monkeypatch):
        """A database without CREATE EXTENSION vector."""
        monkeypatch.setenv(PW_ENV, PASSWORD)

        finding = await check_one(
            postgres(**pg_settings(pg, database="novec"))
        )

        assert "pgvector_not_enabled" == finding.cause
        assert "Run CREATE EXTENSION vector; in database novec." == (
            finding.fix
        )

    async def test_pgvector_not_installed(self, pg15):
        """A server without pgvector at all (PostgreSQL 15)."""
        finding = await check_one(
            postgres(
                host=pg15.host, port=pg15.port, user="postgres",
                database="postgres",
            )
        )  # fmt: skip

        assert "pgvector_not_installed" == finding.cause
        assert "postgresql-15-pgvector" in finding.fix

    async def test_wrong_password(self, pg, monkeypatch):
        """A wrong password is pg_auth_failed and is never printed."""
        wrong = "Not-" + PASSWORD
        monkeypatch.setenv(PW_ENV, wrong)

        finding = await check_one(postgres(**pg_settings(pg)))

        assert "pg_auth_failed" == finding.cause
        assert "alice" in finding.explanation
        assert wrong not in repr(finding)

    async def test_no_password(self, pg):
        """No password where one is required: pg_auth_failed."""
        finding = await check_one(postgres(**pg_settings(pg)))

        assert "pg_auth_failed" == finding.cause

    async def test_database_missing(self, pg, monkeypatch):
        """A database that does not exist."""
        monkeypatch.setenv(PW_ENV, PASSWORD)

        finding = await check_one(
            postgres(**pg_settings(pg, database="sage_prod"))
        )

        assert "pg_database_missing" == finding.cause
        assert "createdb -O alice sage_prod" in finding.fix

    async def test_permission_denied(self, pg):
        """A role without CONNECT on the database."""
        finding = await check_one(
            postgres(
                **pg_settings(
                    pg, user="outsider", database="closed",
                    password_env=None,
                )
            )
        )  # fmt: skip

        assert "pg_permission_denied" == finding.cause
        assert 'permission denied for database "closed"' in (
            finding.explanation
        )

    async def test_too_many_connections(self, pg, monkeypatch):
        """The role's only connection slot is taken."""
        monkeypatch.setenv(PW_ENV, PASSWORD)
        held = await asyncpg.connect(
            pg.dsn(user="limited", password=PASSWORD, database="sage")
        )
        try:
            finding = await check_one(
                postgres(**pg_settings(pg, user="limited"))
            )
        finally:
            await held.close()

        assert "pg_too_many_connections" == finding.cause

    async def test_refused(self):
        """Nothing listens: pg_refused."""
        port = closed_port()

        finding = await check_one(postgres(host="127.0.0.1", port=port))

        assert "pg_refused" == finding.cause
        assert f"127.0.0.1:{port}" in finding.explanation

    async def test_unreachable(self):
        """A port that never answers: pg_unreachable within the timeout."""
        with SilentServer() as silent:
            findings = await run_doctor(
                config(db=postgres(host="127.0.0.1", port=silent.port)),
                timeout=0.3,
            )

        assert ["pg_unreachable"] == [f.cause for f in findings]

    async def test_ipv6_localhost(self, pg):
        """::1 refused while 127.0.0.1 answers: pg_ipv6_localhost."""
        if not has_ipv6_loopback():
            unavailable("::1 on the loopback interface", "enable IPv6 on lo")

        finding = await check_one(
            postgres(), dsn=f"postgresql://postgres@[::1]:{pg.port}/sage"
        )

        assert "pg_ipv6_localhost" == finding.cause
        assert f"127.0.0.1:{pg.port}" in finding.explanation
        assert finding.fix.startswith("Use host 127.0.0.1")

    async def test_ipv6_and_ipv4_refused(self):
        """Refused on ::1 and on 127.0.0.1 alike: plain pg_refused."""
        if not has_ipv6_loopback():
            unavailable("::1 on the loopback interface", "enable IPv6 on lo")
        port = closed_port()

        finding = await check_one(
            postgres(), dsn=f"postgresql://postgres@[::1]:{port}/sage"
        )

        assert "pg_refused" == finding.cause

    async def test_dsn_overrides_settings(self, pg):
        """--dsn replaces the settings of every postgres policy."""
        dsn = f"postgresql://alice:{PASSWORD}@127.0.0.1:{pg.port}/sage"

        findings = await run_doctor(
            config(
                a=postgres(host="127.0.0.1", port=closed_port()),
                b=postgres(database="elsewhere"),
            ),
            dsn=dsn,
        )

        assert [("a", "ok"), ("b", "ok")] == [
            (f.policy, f.cause) for f in findings
        ]
        assert PASSWORD not in repr(findings)


# -- http -----------------------------------------------------------------------


class TestHttpCheck:
    async def test_ok_with_key(self, api, monkeypatch):
        """GET {base_url}/models with the key as a bearer token."""
        monkeypatch.setenv("SILICONFLOW_API_KEY", API_KEY)
        before = api.hits["/ok/v1/models"]

        finding = await check_one(http(base_url=f"{api.url}/ok/v1"))

        assert "ok" == finding.cause
        assert "2 model(s)" in finding.explanation
        assert before + 1 == api.hits["/ok/v1/models"]
        assert f"Bearer {API_KEY}" == api.requests[-1].headers.get(
            "Authorization"
        )

    async def test_key_from_api_key_env(self, api, monkeypatch):
        """settings.api_key_env names the variable holding the key."""
        monkeypatch.setenv("MY_PROVIDER_KEY", API_KEY)

        await check_one(
            http(base_url=f"{api.url}/ok/v1", api_key_env="MY_PROVIDER_KEY")
        )

        assert f"Bearer {API_KEY}" == api.requests[-1].headers.get(
            "Authorization"
        )

    async def test_unauthorized_without_key(self, api):
        """401 without a key says that the variable is not set."""
        finding = await check_one(http(base_url=f"{api.url}/keyed/v1"))

        assert "http_unauthorized" == finding.cause
        assert "SILICONFLOW_API_KEY is not set" in finding.explanation
        assert "Authorization" not in api.requests[-1].headers

    async def test_unauthorized_with_key(self, api, monkeypatch):
        """401 with a key: it was sent, and is never printed."""
        monkeypatch.setenv("SILICONFLOW_API_KEY", API_KEY)

        finding = await check_one(http(base_url=f"{api.url}/keyed/v1"))

        assert "http_unauthorized" == finding.cause
        assert "was sent" in finding.explanation
        assert API_KEY not in repr(finding)

    @pytest.mark.parametrize(
        ("path", "cause", "shown"),
        [
            ("/bad/v1", "http_bad_request", "Model does not exist."),
            ("/v1", "http_not_found", "404"),
            ("/busy/v1", "http_rate_limited", "wait 30s"),
            ("/down/v1", "http_server_error", "503"),
        ],
    )
    async def test_statuses(self, api, path, cause, shown):
        """Each status class gets its cause; the explanation says why."""
        finding = await check_one(http(base_url=api.url + path))

        assert cause == finding.cause
        assert shown in finding.explanation

    async def test_timeout(self):
        """A server that never answers: http_timeout."""
        with SilentServer() as silent:
            findings = await run_doctor(
                config(api=http(base_url=f"http://127.0.0.1:{silent.port}")),
                timeout=0.3,
            )

        assert ["http_timeout"] == [f.cause for f in findings]

    async def test_dns_failure(self):
        """An unresolvable host: dns_failure."""
        finding = await check_one(
            http(base_url=f"https://{UNRESOLVABLE_HOST}/v1")
        )

        assert "dns_failure" == finding.cause

    async def test_tls_failure(self):
        """A self-signed certificate: tls_failure."""
        with StandInServer(tls=True) as server:
            finding = await check_one(http(base_url=server.url + "/v1"))

        assert "tls_failure" == finding.cause

    async def test_connection_refused(self):
        """A closed port: connection_refused."""
        finding = await check_one(
            http(base_url=f"http://127.0.0.1:{closed_port()}/v1")
        )

        assert "connection_refused" == finding.cause

    async def test_connection_reset(self):
        """A server resetting connections: connection_reset."""
        with ResettingServer() as server:
            finding = await check_one(
                http(base_url=f"http://127.0.0.1:{server.port}/v1")
            )

        assert "connection_reset" == finding.cause

    async def test_no_base_url(self):
        """An http policy without base_url cannot be checked."""
        finding = await check_one(http())

        assert "unknown" == finding.cause
        assert "--url" in finding.fix

    async def test_url_override(self, api):
        """--url replaces base_url."""
        finding = await check_one(
            http(base_url=f"http://127.0.0.1:{closed_port()}"),
            url=f"{api.url}/ok/v1",
        )

        assert "ok" == finding.cause


class TestRunDoctor:
    async def test_same_target_checked_once(self, api):
        """Two policies on one base_url: one request, two findings."""
        api.script("/shared/v1/models", Response(200, json=MODELS))
        base = f"{api.url}/shared/v1"

        findings = await run_doctor(
            config(
                vectorizer=http(base_url=base),
                siliconflow_api=http(base_url=base),
                plain=PolicyConfig(),
            )
        )

        assert [("vectorizer", "ok"), ("siliconflow_api", "ok")] == [
            (f.policy, f.cause) for f in findings
        ]
        assert 1 == api.hits["/shared/v1/models"]

    async def test_finding_line(self):
        """A finding prints as 'policy: cause - explanation / fix'."""
        finding = Finding("db", "pg_refused", "Refused.", "Start it.")

        assert "db: pg_refused - Refused. / Start it." == finding.line()
        assert "db: ok - Fine." == Finding("db", "ok", "Fine.", "").line()


# -- the command ------------------------------------------------------------------


def write_config(tmp_path, pg: PgCluster, base_url: str) -> str:
    path = tmp_path / "resilience.yaml"
    path.write_text(
        f"""\
version: 1
policies:
  database_connection:
    kind: postgres
    settings:
      host: 127.0.0.1
      port: {pg.port}
      database: sage
      user: alice
      password_env: {PW_ENV}
  memory_save:
    kind: postgres
    settings: {{host: 127.0.0.1, port: {pg.port}, database: sage,
                user: alice, password_env: {PW_ENV}}}
  siliconflow_api:
    kind: http
    settings: {{base_url: "{base_url}"}}
  cache:
    failure_threshold: 2
"""
    )
    return str(path)


def run_command(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="sage-resilience doctor")
    add_doctor_arguments(parser)
    return doctor_command(parser.parse_args(["--platform", "linux", *argv]))


class TestDoctorCommand:
    def test_all_ok_json(self, pg, api, tmp_path, monkeypatch, capsys):
        """--json prints the findings alone on stdout; exit 0."""
        monkeypatch.setenv(PW_ENV, PASSWORD)
        monkeypatch.setenv("SILICONFLOW_API_KEY", API_KEY)
        path = write_config(tmp_path, pg, f"{api.url}/ok/v1")

        code = run_command("--config", path, "--json")
        out, err = capsys.readouterr()

        findings = json.loads(out)
        assert 0 == code
        assert [
            ("database_connection", "ok"),
            ("memory_save", "ok"),
            ("siliconflow_api", "ok"),
        ] == [(f["policy"], f["cause"]) for f in findings]
        assert {"policy", "cause", "explanation", "fix"} == set(findings[0])
        assert "3 checked, 0 problem(s)" in err
        assert PASSWORD not in out + err
        assert API_KEY not in out + err

    def test_a_problem_exits_1(self, pg, api, tmp_path, monkeypatch, capsys):
        """One bad dependency: its line names cause and fix; exit 1."""
        monkeypatch.setenv(PW_ENV, PASSWORD)
        path = write_config(tmp_path, pg, f"{api.url}/down/v1")

        code = run_command("--config", path)
        out, _ = capsys.readouterr()

        lines = out.splitlines()
        assert 1 == code
        assert 3 == len(lines)
        assert lines[0].startswith("database_connection: ok - ")
        assert lines[2].startswith("siliconflow_api: http_server_error - ")
        assert " / " in lines[2]

    def test_dsn_and_url_options(self, pg, api, tmp_path, capsys):
        """--dsn and --url apply; a password in --dsn is never shown."""
        path = write_config(
            tmp_path, pg, f"http://127.0.0.1:{closed_port()}/v1"
        )
        wrong = f"postgresql://alice:Bad-{PASSWORD}@127.0.0.1:{pg.port}/sage"

        code = run_command(
            "--config", path, "--json", "--dsn", wrong,
            "--url", f"{api.url}/ok/v1",
        )  # fmt: skip
        out, err = capsys.readouterr()

        causes = [f["cause"] for f in json.loads(out)]
        assert 1 == code
        assert ["pg_auth_failed", "pg_auth_failed", "ok"] == causes
        assert PASSWORD not in out + err

    def test_bad_config(self, tmp_path, capsys):
        """An invalid file: exit 1, a message on stderr, no traceback."""
        path = tmp_path / "broken.yaml"
        path.write_text("version: 1\npolicies:\n  db:\n    kind: mysql\n")

        code = run_command("--config", str(path), "--json")
        out, err = capsys.readouterr()

        assert 1 == code
        assert "" == out
        assert "broken.yaml" in err
        assert "Traceback" not in err

    def test_missing_config(self, tmp_path, capsys):
        """A file that does not exist: exit 1 with a message."""
        code = run_command("--config", str(tmp_path / "nope.yaml"))
        _, err = capsys.readouterr()

        assert 1 == code
        assert "nope.yaml" in err

    def test_through_the_cli(self, pg, api, tmp_path):
        """`sage-resilience doctor --json`: JSON alone on stdout, exit 1."""
        path = write_config(tmp_path, pg, f"{api.url}/busy/v1")
        env = {
            **os.environ,
            PW_ENV: PASSWORD,
            "SILICONFLOW_API_KEY": API_KEY,
        }

        result = subprocess.run(
            [
                sys.executable, "-m", "sage_resilience.cli", "doctor",
                "--config", path, "--platform", "linux", "--json",
                "--timeout", "3",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=60,
        )  # fmt: skip

        findings = json.loads(result.stdout)
        assert 1 == result.returncode
        assert ["ok", "ok", "http_rate_limited"] == [
            f["cause"] for f in findings
        ]
        assert PASSWORD not in result.stdout + result.stderr
        assert API_KEY not in result.stdout + result.stderr

    def test_nothing_to_check(self, tmp_path, capsys):
        """No policy has a kind: exit 0, said on stderr."""
        path = tmp_path / "plain.yaml"
        path.write_text("version: 1\npolicies:\n  cache: {}\n")

        code = run_command("--config", str(path), "--json")
        out, err = capsys.readouterr()

        assert 0 == code
        assert [] == json.loads(out)
        assert "no policy has a kind" in err

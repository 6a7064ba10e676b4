"""diagnose() and cause_of() against real PostgreSQL and HTTP failures."""

from __future__ import annotations

import ast
import asyncio
import email.utils
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import asyncpg
import httpx
import httpx2
import openai
import psycopg
import psycopg2
import pytest
import requests
import sage_resilience
import sqlalchemy.exc
from sage_resilience import Policy
from sage_resilience._classify import parse_retry_after
from sage_resilience._config import PolicyConfig
from sage_resilience._diagnosis.chain import cause_of
from sage_resilience._diagnosis.describe import CAUSES, Diagnosis, diagnose
from sage_resilience._diagnosis.http import safe_url
from sage_resilience.exceptions import CircuitOpenError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
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

PASSWORD = "Pg-Secr3t-pw-4711"
API_KEY = "sk-testkey0123456789abcdef"


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


# -- fixtures -------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> PgCluster:
    """pgserver (pgvector available, not enabled anywhere) with roles."""
    with pgvector_cluster() as cluster:
        cluster.create_role("alice", password=PASSWORD)
        cluster.create_role("limited", password=PASSWORD, connection_limit=1)
        cluster.create_role("nogrant")
        cluster.create_database("novec")
        cluster.psql("CREATE TABLE secrets (x int);")
        yield cluster


@pytest.fixture(scope="module")
def pg15() -> PgCluster:
    """The machine's PostgreSQL 15: pgvector not installed."""
    with plain_pg15_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def api() -> StandInServer:
    with StandInServer() as server:
        yield server


@pytest.fixture(scope="module")
def tls_api() -> StandInServer:
    with StandInServer(tls=True) as server:
        yield server


@pytest.fixture
def silent() -> SilentServer:
    with SilentServer() as server:
        yield server


def pg_policy(**settings: object) -> SimpleNamespace:
    """A stand-in for a Policy: only .name and .config are read."""
    return SimpleNamespace(
        name="database_connection",
        config=PolicyConfig(kind="postgres", settings=settings),
    )


def http_policy(**settings: object) -> SimpleNamespace:
    return SimpleNamespace(
        name="siliconflow_api",
        config=PolicyConfig(kind="http", settings=settings),
    )


def assert_no_secret(diagnosis: Diagnosis, *secrets: str) -> None:
    text = repr(diagnosis)
    for secret in secrets:
        assert secret not in text


async def http_error(url: str, **kwargs: object) -> BaseException:
    headers = kwargs.pop("headers", None)
    async with httpx.AsyncClient(timeout=kwargs.pop("timeout", 2.0)) as c:
        try:
            response = await c.get(url, headers=headers, **kwargs)
            response.raise_for_status()
        except Exception as exc:
            return exc
    pytest.fail(f"GET {url} did not fail")


# -- PostgreSQL -----------------------------------------------------------------


class TestPostgresConnect:
    async def test_refused(self):
        """Nothing listening: pg_refused, naming host and port."""
        port = closed_port()
        with pytest.raises(OSError) as info:
            await asyncpg.connect(host="127.0.0.1", port=port, timeout=2)

        d = diagnose(info.value)

        assert "pg_refused" == d.cause
        assert ("127.0.0.1", port) == (d.details["host"], d.details["port"])
        assert f"127.0.0.1:{port}" in d.explanation
        assert "pg_isready" in d.fix

    async def test_no_unix_socket(self, tmp_path):
        """No server behind a socket directory: pg_refused too."""
        with pytest.raises(FileNotFoundError) as info:
            await asyncpg.connect(host=str(tmp_path), user="x", timeout=2)

        d = diagnose(info.value, policy=pg_policy(host=str(tmp_path)))

        assert "pg_refused" == d.cause
        assert "Unix socket" in d.explanation

    async def test_refused_while_stopped_then_recovers(self, pg):
        """A stopped server is refused; after start() it answers again."""
        pg.stop()
        try:
            with pytest.raises(OSError) as info:
                await asyncpg.connect(pg.dsn(), timeout=2)
        finally:
            pg.start()
        conn = await asyncpg.connect(pg.dsn(), timeout=5)
        try:
            assert 1 == await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

        assert "pg_refused" == diagnose(info.value).cause

    async def test_unreachable(self, silent):
        """A port that accepts and never answers: pg_unreachable."""
        with pytest.raises(TimeoutError) as info:
            await asyncpg.connect(
                host="127.0.0.1", port=silent.port, user="x", timeout=0.3
            )

        d = diagnose(info.value)

        assert "pg_unreachable" == d.cause
        assert "firewall" in d.explanation

    async def test_unreachable_under_an_outer_timeout(self, silent):
        """A timeout around asyncpg (the policy's) reads the same."""
        with pytest.raises(TimeoutError) as info:
            async with asyncio.timeout(0.3):
                await asyncpg.connect(
                    host="127.0.0.1", port=silent.port, user="x"
                )

        d = diagnose(info.value, policy=pg_policy(host="localhost"))

        assert "pg_unreachable" == d.cause
        assert "127.0.0.1" in d.explanation  # the localhost hint

    def test_bare_timeout_needs_the_policy_kind(self):
        """A TimeoutError with no trace is unknown without a kind."""
        assert "unknown" == diagnose(TimeoutError()).cause
        assert (
            "pg_unreachable"
            == diagnose(TimeoutError(), policy=pg_policy()).cause
        )
        assert (
            "http_timeout"
            == diagnose(TimeoutError(), policy=http_policy()).cause
        )

    async def test_ipv6_localhost(self, pg):
        """Refused on ::1 while listening on 127.0.0.1 only."""
        if not has_ipv6_loopback():
            unavailable("::1 on the loopback interface", "enable IPv6 on lo")
        with pytest.raises(OSError) as info:
            await asyncpg.connect(
                host="::1", port=pg.port, user="postgres", timeout=2
            )

        d = diagnose(info.value, policy=pg_policy(host="localhost"))

        assert "pg_ipv6_localhost" == d.cause
        assert "'localhost' resolved to ::1" in d.explanation
        assert d.fix.startswith("Use host 127.0.0.1")
        assert ("::1", pg.port) == (d.details["host"], d.details["port"])

    def test_refused_on_both_loopbacks_is_plain_refused(self):
        """asyncio's joined error for ::1 and 127.0.0.1 is pg_refused."""
        exc = OSError(
            "Multiple exceptions: [Errno 111] Connect call failed "
            "('::1', 5432, 0, 0), [Errno 111] Connect call failed "
            "('127.0.0.1', 5432)"
        )

        assert "pg_refused" == cause_of(exc, "postgres")

    async def test_auth_failed(self, pg):
        """A wrong password: pg_auth_failed, the password never shown."""
        wrong = "Wr0ng-" + PASSWORD
        with pytest.raises(asyncpg.PostgresError) as info:
            await asyncpg.connect(pg.dsn(user="alice", password=wrong))

        d = diagnose(info.value, policy=pg_policy(user="alice"))

        assert "pg_auth_failed" == d.cause
        assert "alice" == d.details["user"]
        assert "28P01" == d.details["sqlstate"]
        assert_no_secret(d, wrong, PASSWORD)

    async def test_unknown_role(self, pg):
        """A role that does not exist is an authentication failure."""
        with pytest.raises(asyncpg.PostgresError) as info:
            await asyncpg.connect(pg.dsn(user="nobody"))

        d = diagnose(info.value)

        assert "pg_auth_failed" == d.cause
        assert 'role "nobody" does not exist' in d.explanation

    async def test_database_missing(self, pg):
        """A database that does not exist: pg_database_missing."""
        with pytest.raises(asyncpg.PostgresError) as info:
            await asyncpg.connect(pg.dsn(database="sage_missing"))

        d = diagnose(info.value)

        assert "pg_database_missing" == d.cause
        assert "sage_missing" == d.details["database"]
        assert "createdb" in d.fix

    async def test_permission_denied(self, pg):
        """A role without grants reading a table: pg_permission_denied."""
        conn = await asyncpg.connect(pg.dsn(user="nogrant"))
        try:
            with pytest.raises(asyncpg.PostgresError) as info:
                await conn.fetch("SELECT * FROM secrets")
        finally:
            await conn.close()

        d = diagnose(info.value, policy=pg_policy(user="nogrant"))

        assert "pg_permission_denied" == d.cause
        assert "permission denied for table secrets" in d.explanation
        assert "GRANT" in d.fix

    async def test_too_many_connections(self, pg):
        """One connection over the role's limit: pg_too_many_connections."""
        dsn = pg.dsn(user="limited", password=PASSWORD)
        first = await asyncpg.connect(dsn)
        try:
            with pytest.raises(asyncpg.PostgresError) as info:
                await asyncpg.connect(dsn)
        finally:
            await first.close()

        d = diagnose(info.value)

        assert "pg_too_many_connections" == d.cause
        assert "CONNECTION LIMIT" in d.explanation
        assert_no_secret(d, PASSWORD)

    async def test_pgvector_not_installed(self, pg15):
        """CREATE EXTENSION on a server without pgvector."""
        conn = await asyncpg.connect(pg15.dsn())
        try:
            with pytest.raises(asyncpg.PostgresError) as info:
                await conn.execute("CREATE EXTENSION vector")
        finally:
            await conn.close()

        d = diagnose(info.value, policy=pg_policy(database="postgres"))

        assert "pgvector_not_installed" == d.cause
        assert "CREATE EXTENSION vector; in database postgres" in d.fix

    @pytest.mark.parametrize(
        "query",
        [
            "SELECT '[1,2,3]'::vector",
            "SELECT ARRAY[1,2] <-> ARRAY[1,3]",
        ],
    )
    async def test_pgvector_not_enabled(self, pg, query):
        """Using vector where CREATE EXTENSION vector was not run."""
        conn = await asyncpg.connect(pg.dsn(database="novec"))
        try:
            with pytest.raises(asyncpg.PostgresError) as info:
                await conn.fetch(query)
        finally:
            await conn.close()

        d = diagnose(info.value, policy=pg_policy(database="novec"))

        assert "pgvector_not_enabled" == d.cause
        assert "Run CREATE EXTENSION vector; in database novec." == d.fix

    async def test_statement_timeout(self, pg):
        """statement_timeout cancels the query: pg_query_timeout."""
        conn = await asyncpg.connect(pg.dsn())
        try:
            await conn.execute("SET statement_timeout = 50")
            with pytest.raises(asyncpg.PostgresError) as info:
                await conn.fetch("SELECT pg_sleep(5)")
        finally:
            await conn.close()

        d = diagnose(info.value)

        assert "pg_query_timeout" == d.cause
        assert "57014" == d.details["sqlstate"]

    async def test_command_timeout(self, pg):
        """asyncpg's own query timeout: pg_query_timeout, not unreachable."""
        conn = await asyncpg.connect(pg.dsn())
        try:
            with pytest.raises(TimeoutError) as info:
                await conn.fetch("SELECT pg_sleep(5)", timeout=0.2)
        finally:
            await conn.close()

        assert "pg_query_timeout" == diagnose(info.value).cause
        assert "pg_query_timeout" == cause_of(info.value, "postgres")

    async def test_syntax_error_is_unknown(self, pg):
        """A plain SQL error is not a dependency problem diagnose names."""
        conn = await asyncpg.connect(pg.dsn())
        try:
            with pytest.raises(asyncpg.PostgresError) as info:
                await conn.fetch("SELEC 1")
        finally:
            await conn.close()

        d = diagnose(info.value)

        assert "unknown" == d.cause
        assert d.details["error"].startswith("PostgresSyntaxError")


# -- HTTP -----------------------------------------------------------------------


class TestHttpStatus:
    async def test_bad_request_openai_style(self, api):
        """400 shows the provider's own message from error.message."""
        api.script(
            "/v1/chat/completions",
            Response(
                400,
                json={
                    "error": {
                        "message": "Invalid value for 'temperature'",
                        "type": "invalid_request_error",
                        "param": "temperature",
                    }
                },
            ),
        )

        exc = await http_error(api.url + "/v1/chat/completions")
        d = diagnose(exc)

        assert "http_bad_request" == d.cause
        assert "Invalid value for 'temperature'" in d.explanation
        assert "temperature" == d.details["provider_param"]
        assert 400 == d.details["status"]

    async def test_bad_request_siliconflow_style(self, api):
        """SiliconFlow's {"code", "message"} body is understood too."""
        api.script(
            "/v1/embeddings",
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

        d = diagnose(await http_error(api.url + "/v1/embeddings"))

        assert "http_bad_request" == d.cause
        assert "Model does not exist. Please check it carefully." in (
            d.explanation
        )
        assert 20012 == d.details["provider_code"]

    async def test_unprocessable_plain_text(self, api):
        """422 with a text body shows the text."""
        api.script("/v1/rerank", Response(422, body="top_n must be > 0"))

        d = diagnose(await http_error(api.url + "/v1/rerank"))

        assert "http_bad_request" == d.cause
        assert "top_n must be > 0" in d.explanation

    @pytest.mark.parametrize("status", [401, 403])
    async def test_unauthorized_never_shows_the_key(self, api, status):
        """401/403: http_unauthorized; the key is in no text."""
        api.script(
            "/v1/models",
            Response(
                status,
                json={"error": {"message": f"Incorrect API key: {API_KEY}"}},
            ),
        )

        exc = await http_error(
            api.url + "/v1/models",
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        d = diagnose(exc)

        assert "http_unauthorized" == d.cause
        assert "SILICONFLOW_API_KEY" in d.fix
        assert_no_secret(d, API_KEY)

    async def test_not_found(self, api):
        """404 (a wrong base_url path): http_not_found."""
        d = diagnose(await http_error(api.url + "/chat/completions"))

        assert "http_not_found" == d.cause
        assert "base_url" in d.fix

    async def test_rate_limited_with_seconds(self, api):
        """429 with Retry-After seconds: the wait is in details."""
        api.script(
            "/v1/limited",
            Response(429, json={"message": "TPM limit reached"},
                     headers={"Retry-After": "7"}),
        )  # fmt: skip

        d = diagnose(await http_error(api.url + "/v1/limited"))

        assert "http_rate_limited" == d.cause
        assert 7.0 == d.details["retry_after"]
        assert "7s" in d.explanation
        assert "TPM limit reached" in d.explanation

    async def test_rate_limited_with_date(self, api):
        """Retry-After as an HTTP-date becomes seconds from now."""
        when = email.utils.formatdate(time.time() + 120, usegmt=True)
        api.script("/v1/dated", Response(429, headers={"Retry-After": when}))

        d = diagnose(await http_error(api.url + "/v1/dated"))

        assert "http_rate_limited" == d.cause
        assert 0 < d.details["retry_after"] <= 120

    async def test_rate_limited_without_header(self, api):
        """No Retry-After: retry_after is None."""
        api.script("/v1/bare429", Response(429))

        d = diagnose(await http_error(api.url + "/v1/bare429"))

        assert d.details["retry_after"] is None

    @pytest.mark.parametrize("status", [500, 502, 503])
    async def test_server_error(self, api, status):
        """5xx: http_server_error."""
        api.script("/v1/boom", Response(status))

        d = diagnose(await http_error(api.url + "/v1/boom"))

        assert "http_server_error" == d.cause
        assert status == d.details["status"]

    def test_sync_client(self, api):
        """Errors of the sync httpx client read the same."""
        api.script("/v1/sync", Response(503))
        with httpx.Client() as client:
            response = client.get(api.url + "/v1/sync")
        with pytest.raises(httpx.HTTPStatusError) as info:
            response.raise_for_status()

        assert "http_server_error" == diagnose(info.value).cause

    async def test_url_secrets_are_hidden(self, api):
        """A key in the query string does not reach details or text."""
        exc = await http_error(
            f"{api.url}/v1/nowhere?api_key={API_KEY}&model=x"
        )

        d = diagnose(exc)

        assert "http_not_found" == d.cause
        assert "model=x" in d.details["url"]
        assert_no_secret(d, API_KEY)


class TestHttpTransport:
    async def test_read_timeout(self, silent):
        """A server that never answers: http_timeout."""
        exc = await http_error(f"http://127.0.0.1:{silent.port}/", timeout=0.2)

        d = diagnose(exc)

        assert "http_timeout" == d.cause
        assert "127.0.0.1" == d.details["host"]

    async def test_slow_answer(self, api):
        """An answer slower than the client's timeout: http_timeout."""
        api.script("/v1/slow", Response(200, delay=1.0))

        exc = await http_error(api.url + "/v1/slow", timeout=0.1)

        assert "http_timeout" == diagnose(exc).cause

    async def test_timeout_of_the_policy_around_httpx(self, silent):
        """An outer asyncio timeout around httpx is an http_timeout."""
        with pytest.raises(TimeoutError) as info:
            async with asyncio.timeout(0.2), httpx.AsyncClient() as client:
                await client.get(f"http://127.0.0.1:{silent.port}/")

        assert "http_timeout" == diagnose(info.value).cause

    async def test_dns_failure(self):
        """A name that does not resolve: dns_failure."""
        exc = await http_error(f"http://{UNRESOLVABLE_HOST}/v1/models")

        d = diagnose(exc)

        assert "dns_failure" == d.cause
        assert UNRESOLVABLE_HOST in d.explanation

    async def test_tls_failure(self, tls_api):
        """A self-signed certificate: tls_failure."""
        d = diagnose(await http_error(tls_api.url + "/v1/models"))

        assert "tls_failure" == d.cause
        assert "certificate" in d.explanation

    async def test_tls_server_works_when_trusted(self, tls_api):
        """The TLS stand-in answers a client that trusts its cert."""
        tls_api.script("/ok", Response(200, json={"ok": True}))
        async with httpx.AsyncClient(verify=tls_api.client_ssl_context()) as c:
            response = await c.get(tls_api.url + "/ok")

        assert {"ok": True} == response.json()

    async def test_connection_refused(self):
        """A closed port: connection_refused."""
        port = closed_port()

        d = diagnose(await http_error(f"http://127.0.0.1:{port}/"))

        assert "connection_refused" == d.cause
        assert port == d.details["port"]

    async def test_connection_reset(self):
        """A server that resets the connection: connection_reset."""
        with ResettingServer() as server:
            exc = await http_error(f"http://127.0.0.1:{server.port}/")

        assert "connection_reset" == diagnose(exc).cause


# -- circuit, chains, unknown -------------------------------------------------


async def sdk_error(base_url: str, **kwargs: object) -> BaseException:
    """What the OpenAI SDK raises for one chat completion."""
    client = openai.AsyncOpenAI(
        base_url=base_url, api_key=API_KEY, max_retries=0, **kwargs
    )
    try:
        await client.chat.completions.create(
            model="Qwen/none", messages=[{"role": "user", "content": "hi"}]
        )
    except Exception as exc:
        return exc
    finally:
        await client.close()
    pytest.fail("the SDK call did not fail")


class TestOtherClients:
    """The same causes through openai, httpx2, requests, aiohttp, SQLAlchemy."""

    async def test_openai_bad_request(self, api):
        """openai's BadRequestError: the provider's message, the status."""
        api.script(
            "/sdk400/chat/completions",
            Response(
                400,
                json={
                    "code": 20012,
                    "message": "Model does not exist. Please check it.",
                    "data": None,
                },
            ),
        )
        exc = await sdk_error(api.url + "/sdk400")
        assert isinstance(exc, openai.BadRequestError)
        d = diagnose(exc)
        assert ("http_bad_request", 400, 20012) == (
            d.cause,
            d.details["status"],
            d.details["provider_code"],
        )
        assert "Model does not exist" in d.explanation
        assert "POST" == d.details["method"]
        assert_no_secret(d, API_KEY)

    async def test_openai_unauthorized_and_rate_limited(self, api):
        """401 and 429 with Retry-After through the SDK."""
        api.script("/sdk401/chat/completions", Response(401, json={}))
        api.script(
            "/sdk429/chat/completions",
            Response(429, json={}, headers={"Retry-After": "12"}),
        )
        unauthorized = diagnose(await sdk_error(api.url + "/sdk401"))
        limited = diagnose(await sdk_error(api.url + "/sdk429"))
        assert "http_unauthorized" == unauthorized.cause
        assert_no_secret(unauthorized, API_KEY)
        assert ("http_rate_limited", 12.0) == (
            limited.cause,
            limited.details["retry_after"],
        )

    async def test_openai_connection_errors(self, silent):
        """APIConnectionError and APITimeoutError: refused, timed out."""
        refused = await sdk_error(f"http://127.0.0.1:{closed_port()}/v1")
        hung = await sdk_error(
            f"http://{silent.host}:{silent.port}/v1", timeout=0.3
        )
        assert isinstance(refused, openai.APIConnectionError)
        assert isinstance(hung, openai.APITimeoutError)
        assert ("connection_refused", "http_timeout") == (
            cause_of(refused),
            cause_of(hung),
        )

    async def test_last_cause_of_a_policy_around_the_sdk(self, api):
        """last_cause comes from the same walk: the SDK's 503."""
        api.script("/sdk503/chat/completions", Response(503, json={}))
        p = Policy("llm", PolicyConfig(failure_threshold=1))
        with pytest.raises(openai.InternalServerError):
            await p.acall(sdk_error_raising, api.url + "/sdk503")
        with pytest.raises(CircuitOpenError) as refused:
            await p.acall(sdk_error_raising, api.url + "/sdk503")
        assert "http_server_error" == refused.value.last_cause

    async def test_httpx2(self, api, silent):
        """httpx2's status, refusal and timeout errors."""
        api.script("/h2/404", Response(404))
        async with httpx2.AsyncClient(timeout=0.3) as client:
            missing = (await client.get(api.url + "/h2/404")).status_code
            try:
                (await client.get(api.url + "/h2/404")).raise_for_status()
            except httpx2.HTTPStatusError as exc:
                status_error: BaseException = exc
            try:
                await client.get(f"http://127.0.0.1:{closed_port()}/")
            except httpx2.ConnectError as exc:
                refused: BaseException = exc
            try:
                await client.get(f"http://{silent.host}:{silent.port}/")
            except httpx2.TimeoutException as exc:
                hung: BaseException = exc
        assert 404 == missing
        assert [
            "http_not_found",
            "connection_refused",
            "http_timeout",
        ] == [cause_of(e) for e in (status_error, refused, hung)]
        assert api.url + "/h2/404" == diagnose(status_error).details["url"]

    def test_requests(self, api):
        """requests' HTTPError: the status, URL and body."""
        api.script("/rq/422", Response(422, json={"message": "bad dims"}))
        with pytest.raises(requests.HTTPError) as info:
            requests.get(api.url + "/rq/422", timeout=5).raise_for_status()
        d = diagnose(info.value)
        assert ("http_bad_request", 422, api.url + "/rq/422") == (
            d.cause,
            d.details["status"],
            d.details["url"],
        )
        assert "bad dims" in d.explanation

    async def test_aiohttp(self, api):
        """aiohttp's ClientResponseError: status, URL, Retry-After."""
        api.script("/ah/429", Response(429, headers={"Retry-After": "3"}))
        async with aiohttp.ClientSession() as session:
            async with session.get(api.url + "/ah/429") as response:
                with pytest.raises(aiohttp.ClientResponseError) as info:
                    response.raise_for_status()
        d = diagnose(info.value)
        assert ("http_rate_limited", 3.0, "GET") == (
            d.cause,
            d.details["retry_after"],
            d.details["method"],
        )

    async def test_sqlalchemy_reaches_the_driver_error(self, pg):
        """SQLAlchemy's ProgrammingError: the asyncpg SQLSTATE via .orig."""
        engine = create_async_engine(
            pg.dsn(database="novec").replace(
                "postgresql://", "postgresql+asyncpg://", 1
            )
        )
        try:
            async with engine.connect() as conn:
                with pytest.raises(sqlalchemy.exc.ProgrammingError) as info:
                    await conn.execute(text("SELECT '[1,2]'::vector"))
        finally:
            await engine.dispose()
        d = diagnose(info.value)
        assert ("pgvector_not_enabled", "42704", "postgres") == (
            d.cause,
            d.details["sqlstate"],
            d.details["kind"],
        )

    def test_psycopg(self, pg):
        """psycopg 3 (sqlstate) and psycopg 2 (pgcode) errors."""
        with psycopg.connect(pg.dsn(user="nogrant")) as conn:
            with pytest.raises(psycopg.Error) as three:
                conn.execute("SELECT * FROM secrets")
        two_conn = psycopg2.connect(pg.dsn(user="nogrant"))
        try:
            with pytest.raises(psycopg2.Error) as two:
                two_conn.cursor().execute("SELECT * FROM secrets")
        finally:
            two_conn.close()
        assert ["pg_permission_denied", "pg_permission_denied"] == [
            diagnose(e.value).cause for e in (three, two)
        ]
        assert "42501" == diagnose(two.value).details["sqlstate"]


async def sdk_error_raising(base_url: str) -> None:
    raise await sdk_error(base_url)


class TestCircuitOpen:
    def test_names_policy_and_last_failure(self):
        """circuit_open says the breaker refused and what failed last."""
        exc = CircuitOpenError(
            "database_connection",
            retry_after=12.5,
            failure_count=3,
            last_failure="ConnectionRefusedError: [Errno 111] refused",
            last_cause="pg_refused",
        )

        d = diagnose(exc)

        assert "circuit_open" == d.cause
        assert "pg_refused" == d.details["last_cause"]
        assert "'database_connection'" in d.explanation
        assert "ConnectionRefusedError" in d.explanation
        assert "breaker close database_connection" in d.fix

    async def test_last_cause_from_the_chained_error(self):
        """Without last_cause, the __cause__ (the real failure) tells it."""

        async def guarded_connect() -> None:
            try:
                await asyncpg.connect(host="127.0.0.1", port=closed_port())
            except OSError as refused:
                raise CircuitOpenError(
                    "database_connection", retry_after=1, failure_count=3
                ) from refused

        with pytest.raises(CircuitOpenError) as info:
            await guarded_connect()

        d = diagnose(info.value)

        assert "circuit_open" == d.cause
        assert "pg_refused" == d.details["last_cause"]


class TestChain:
    async def test_wrapped_in_an_application_error(self, api):
        """The root under an application's own exception is found."""
        api.script("/v1/wrapped", Response(429))

        async def embed() -> None:
            try:
                async with httpx.AsyncClient() as client:
                    response = await client.get(api.url + "/v1/wrapped")
                    response.raise_for_status()
            except httpx.HTTPStatusError as inner:
                raise RuntimeError("embedding failed") from inner

        with pytest.raises(RuntimeError) as info:
            await embed()

        assert "http_rate_limited" == diagnose(info.value).cause

    async def test_exception_group(self, api):
        """Members of an exception group are searched."""
        exc = await http_error(f"http://127.0.0.1:{closed_port()}/")
        group = ExceptionGroup("tasks failed", [ValueError("x"), exc])

        assert "connection_refused" == diagnose(group).cause

    def test_cyclic_chain_terminates(self):
        """A context cycle does not loop forever."""
        first, second = ValueError("a"), ValueError("b")
        first.__context__ = second
        second.__context__ = first

        assert "unknown" == cause_of(first)


class TestUnknown:
    def test_anything_else(self):
        """An unrelated error is unknown, its text redacted."""
        d = diagnose(ValueError(f"bad input, password={PASSWORD}"))

        assert "unknown" == d.cause
        assert d.details["error"].startswith("ValueError: bad input")
        assert_no_secret(d, PASSWORD)

    def test_every_code_is_documented(self):
        """Codes in CAUSES and docs/diagnosis.md agree."""

        doc = Path(__file__).parent.parent / "docs" / "diagnosis.md"
        text = doc.read_text()

        missing = [code for code in CAUSES if f"`{code}`" not in text]

        assert [] == missing


class TestPolicyArgument:
    def test_unknown_policy_name_still_diagnoses(self):
        """A name the registry does not know leaves the kind open."""
        d = diagnose(
            ConnectionRefusedError(111, "refused"), policy="no_such_policy"
        )

        assert "connection_refused" == d.cause
        assert "no_such_policy" == d.details["policy"]

    def test_policy_object_gives_the_kind(self):
        """A policy's kind turns a bare refusal into pg_refused."""
        exc = ConnectionRefusedError(
            111, "Connect call failed ('127.0.0.1', 5432)"
        )

        d = diagnose(exc, policy=pg_policy(host="127.0.0.1", port=5432))

        assert "pg_refused" == d.cause
        assert "database_connection" == d.details["policy"]


class TestCauseOf:
    async def test_agrees_with_diagnose(self, pg, api, silent):
        """cause_of gives diagnose's code for real failures."""
        errors: list[BaseException] = [
            await http_error(f"http://127.0.0.1:{closed_port()}/"),
            await http_error(f"http://127.0.0.1:{silent.port}/", timeout=0.1),
            await http_error(f"http://{UNRESOLVABLE_HOST}/"),
            await http_error(api.url + "/missing"),
        ]
        try:
            await asyncpg.connect(pg.dsn(database="sage_missing"))
        except asyncpg.PostgresError as exc:
            errors.append(exc)

        assert [diagnose(e).cause for e in errors] == [
            cause_of(e) for e in errors
        ]

    def test_imports_no_client_library(self):
        """cause_of works without importing httpx or asyncpg."""
        code = (
            "import sys\n"
            "from sage_resilience._diagnosis.chain import cause_of\n"
            "print(cause_of(ConnectionResetError()), "
            "cause_of(TimeoutError(), 'postgres'))\n"
            "print(sorted({'httpx', 'asyncpg'} & set(sys.modules)))\n"
        )

        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")

        assert ["connection_reset pg_unreachable", "[]"] == out[:2]

    def test_never_raises(self):
        """A broken exception object gives unknown, not an error."""

        class Weird(Exception):
            def __str__(self) -> str:
                raise RuntimeError("no text")

        assert "unknown" == cause_of(Weird())

    def test_never_looks_policies_up(self):
        """What the engine imports reaches neither registry nor engine."""
        package = Path(sage_resilience.__file__).parent
        below = ("chain", "reading", "network", "http", "postgres")
        forbidden = {
            "sage_resilience._registry",
            "sage_resilience._policy",
            "sage_resilience._diagnosis.describe",
            "sage_resilience._diagnosis.doctor",
        }

        imported = set()
        for name in below:
            source = (package / "_diagnosis" / f"{name}.py").read_text()
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.ImportFrom) and node.module:
                    imported.add(node.module)
                    imported.update(
                        f"{node.module}.{alias.name}" for alias in node.names
                    )
                elif isinstance(node, ast.Import):
                    imported.update(alias.name for alias in node.names)

        assert set() == imported & forbidden


class TestParseRetryAfter:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("3", 3.0),
            ("1.5", 1.5),
            ("-4", 0.0),
            ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past
            ("", None),
            (None, None),
            ("soon", None),
            ("nan", None),
        ],
    )
    def test_values(self, value, expected):
        """Seconds, past dates and junk."""
        assert expected == parse_retry_after(value)


class TestSafeUrl:
    def test_hides_password_and_secret_query_values(self):
        """Userinfo passwords and key-like query values become ***."""
        url = f"https://bob:{PASSWORD}@api.example/v1?key=abc&api_key=x&n=1"

        assert (
            "https://bob:***@api.example/v1?key=***&api_key=***&n=1"
            == safe_url(url)
        )

"""Verdicts on the errors real clients raise: counted, ignored, neutral.

The exceptions come from the real libraries (openai, httpx, httpx2,
requests, aiohttp, asyncpg, psycopg 3, psycopg 2) talking to real servers
on 127.0.0.1; only the chain-walking limits use hand-made exceptions.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import httpx
import httpx2
import openai
import psycopg
import psycopg2
import pytest
import requests
import sqlalchemy.exc
import sqlalchemy.orm.exc
from sage_resilience import CircuitOpenError, PolicyConfig
from sage_resilience._classify import (
    COUNTED,
    IGNORED,
    MAX_CHAIN,
    NEUTRAL,
    PASSTHROUGH,
    Classifier,
    fault_chain,
    http_status,
    retry_after_of,
    sqlstate,
)
from sage_resilience.exceptions import BulkheadFullError
from tests.helpers import Clock, make_policy, named, with_clock
from tests.support.http_servers import Response, StandInServer, closed_port
from tests.support.pg import PgCluster, pgvector_cluster

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

#: SiliconFlow's answer to an unknown model.
MODEL_MISSING = {
    "code": 20012,
    "message": "Model does not exist. Please check it carefully.",
    "data": None,
}


def classify(exc: BaseException, **settings: Any) -> int:
    """The verdict of a policy with *settings* on *exc*."""
    config = PolicyConfig.model_validate(settings)
    return Classifier(config, name="t")(exc)


async def caught(make: Callable[[], Awaitable[Any]]) -> BaseException:
    """The exception an awaited call raises."""
    try:
        await make()
    except Exception as exc:
        return exc
    pytest.fail("the call did not raise")


def caught_sync(make: Callable[[], Any]) -> BaseException:
    """The exception a call raises."""
    try:
        make()
    except Exception as exc:
        return exc
    pytest.fail("the call did not raise")


@pytest.fixture(scope="module")
def api() -> Iterator[StandInServer]:
    """Scripted answers: an OpenAI-compatible API and plain statuses."""
    with StandInServer() as server:
        for status in (400, 401, 404, 408, 422, 429, 500, 503):
            body = MODEL_MISSING if status == 400 else {"error": {"m": "x"}}
            headers = {"Retry-After": "7"} if status in {429, 503} else {}
            server.script(
                f"/s{status}/chat/completions",
                [Response(status, json=body, headers=headers)],
            )
            server.script(
                f"/plain/{status}", [Response(status, headers=headers)]
            )
        yield server


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    with pgvector_cluster() as cluster:
        cluster.psql("CREATE TABLE items (id int PRIMARY KEY);")
        cluster.psql("INSERT INTO items VALUES (1);")
        yield cluster


def sdk(api: StandInServer, status: int) -> openai.AsyncOpenAI:
    """An OpenAI client whose chat completions answer *status*."""
    return openai.AsyncOpenAI(
        base_url=f"{api.url}/s{status}", api_key="sk-test", max_retries=0
    )


async def chat(client: openai.AsyncOpenAI) -> Any:
    return await client.chat.completions.create(
        model="no-such-model", messages=[{"role": "user", "content": "hi"}]
    )


async def chat_once(api: StandInServer, status: int) -> Any:
    """One chat completion with a client of its own, closed after."""
    async with sdk(api, status) as client:
        return await chat(client)


class TestOpenAI:
    @pytest.mark.parametrize(
        ("status", "expected"),
        [
            (400, IGNORED),
            (401, IGNORED),
            (404, IGNORED),
            (422, IGNORED),
            (408, COUNTED),
            (429, COUNTED),
            (500, COUNTED),
            (503, COUNTED),
        ],
    )
    async def test_status_errors(self, api, status, expected):
        """The SDK's own status errors: 4xx ignored but 408/429, 5xx counted."""
        exc = await caught(lambda: chat_once(api, status))
        assert isinstance(exc, openai.APIStatusError)
        assert expected == classify(exc)

    async def test_bad_request_is_not_retried_nor_counted(self, api, events):
        """@policy around the SDK: a 400 reaches the caller once, uncounted."""
        p = make_policy("llm", failure_threshold=1, retry={"attempts": 3})
        before = api.hits["/s400/chat/completions"]

        @p
        async def ask() -> Any:
            return await chat_once(api, 400)

        with pytest.raises(openai.BadRequestError) as info:
            await ask()
        assert "Model does not exist" in str(info.value)
        assert 1 == api.hits["/s400/chat/completions"] - before
        status = p.status()
        assert ("closed", 0, 1) == (
            p.state,
            status["failures"],
            status["successes"],
        )
        assert [] == named(events, "retry_scheduled")

    async def test_server_error_is_retried_and_counted(self, api):
        """A 503 from the SDK is retried, every attempt counted."""
        p = make_policy("llm", failure_threshold=10, retry={"attempts": 3})
        before = api.hits["/s503/chat/completions"]
        with pytest.raises(openai.InternalServerError):
            await p.acall(chat_once, api, 503)
        assert 3 == api.hits["/s503/chat/completions"] - before
        assert 3 == p.status()["failures"]

    def test_failure_statuses_can_count_a_4xx(self, api):
        """A 4xx listed in failure_statuses counts."""
        exc = caught_sync(
            lambda: httpx.get(f"{api.url}/plain/404").raise_for_status()
        )
        assert COUNTED == classify(exc, failure_statuses=[404, "5xx"])
        assert IGNORED == classify(exc)

    async def test_refused_connection_counts(self):
        """APIConnectionError (nothing listens) is counted."""
        client = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{closed_port()}/v1",
            api_key="sk-test",
            max_retries=0,
        )
        async with client:
            exc = await caught(lambda: chat(client))
        assert isinstance(exc, openai.APIConnectionError)
        assert COUNTED == classify(exc)

    async def test_retry_after_of_a_rate_limit(self, api):
        """The SDK's RateLimitError gives its Retry-After."""
        exc = await caught(lambda: chat_once(api, 429))
        assert isinstance(exc, openai.RateLimitError)
        assert 7.0 == retry_after_of(exc)


class TestHttpClients:
    @pytest.mark.parametrize(
        ("status", "expected"), [(404, IGNORED), (503, COUNTED)]
    )
    async def test_httpx_and_httpx2(self, api, status, expected):
        """raise_for_status of httpx and httpx2 alike."""
        url = f"{api.url}/plain/{status}"
        async with httpx.AsyncClient() as one, httpx2.AsyncClient() as two:
            first = await caught(lambda: _get_raise(one, url))
            second = await caught(lambda: _get_raise(two, url))
        assert isinstance(first, httpx.HTTPStatusError)
        assert isinstance(second, httpx2.HTTPStatusError)
        assert (expected, expected) == (classify(first), classify(second))

    @pytest.mark.parametrize(
        ("status", "expected"), [(422, IGNORED), (500, COUNTED)]
    )
    def test_requests(self, api, status, expected):
        """requests' HTTPError carries the status in response.status_code."""
        exc = caught_sync(
            lambda: requests.get(
                f"{api.url}/plain/{status}", timeout=5
            ).raise_for_status()
        )
        assert isinstance(exc, requests.HTTPError)
        assert expected == classify(exc)

    @pytest.mark.parametrize(
        ("status", "expected"), [(401, IGNORED), (429, COUNTED)]
    )
    async def test_aiohttp(self, api, status, expected):
        """aiohttp's ClientResponseError carries it in status."""

        async def get() -> None:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{api.url}/plain/{status}") as response,
            ):
                response.raise_for_status()

        exc = await caught(get)
        assert isinstance(exc, aiohttp.ClientResponseError)
        assert expected == classify(exc)

    async def test_aiohttp_retry_after(self, api):
        """aiohttp keeps the headers on the error itself."""

        async def get() -> None:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{api.url}/plain/503") as response,
            ):
                response.raise_for_status()

        assert 7.0 == retry_after_of(await caught(get))

    def test_status_outside_http_range_is_not_a_status(self):
        """Only integers 100-599 are statuses (not True, not "404")."""

        class Odd(Exception):
            status = True
            status_code = "404"

        assert (None, COUNTED) == (http_status(Odd()), classify(Odd()))


async def _get_raise(client: Any, url: str) -> None:
    response = await client.get(url)
    response.raise_for_status()


class TestSqlstates:
    async def test_asyncpg(self, pg):
        """asyncpg: unique violation and syntax ignored, 57014 counted."""
        conn = await asyncpg.connect(pg.dsn())
        try:
            unique = await caught(
                lambda: conn.execute("INSERT INTO items VALUES (1)")
            )
            syntax = await caught(lambda: conn.execute("SELEC 1"))
            await conn.execute("SET statement_timeout = 50")
            cancelled = await caught(
                lambda: conn.execute("SELECT pg_sleep(5)")
            )
        finally:
            await conn.close()
        assert ["23505", "42601", "57014"] == [
            sqlstate(e) for e in (unique, syntax, cancelled)
        ]
        assert [IGNORED, IGNORED, COUNTED] == [
            classify(e) for e in (unique, syntax, cancelled)
        ]

    def test_psycopg3(self, pg):
        """psycopg 3 carries the SQLSTATE in sqlstate."""

        def insert() -> None:
            with psycopg.connect(pg.dsn()) as conn:
                conn.execute("INSERT INTO items VALUES (1)")

        exc = caught_sync(insert)
        assert isinstance(exc, psycopg.errors.UniqueViolation)
        assert ("23505", IGNORED) == (sqlstate(exc), classify(exc))

    def test_psycopg2(self, pg):
        """psycopg 2 carries it in pgcode."""

        def divide() -> None:
            conn = psycopg2.connect(pg.dsn())
            try:
                conn.cursor().execute("SELECT 1 / 0")
            finally:
                conn.close()

        exc = caught_sync(divide)
        assert isinstance(exc, psycopg2.errors.DivisionByZero)
        assert exc.pgcode == sqlstate(exc)
        assert IGNORED == classify(exc)

    def test_psycopg2_lost_server_counts(self, pg):
        """A terminated backend (57P01) counts."""
        conn = psycopg2.connect(pg.dsn())
        try:
            pid = conn.get_backend_pid()
            pg.psql(f"SELECT pg_terminate_backend({pid});")
            exc = caught_sync(lambda: conn.cursor().execute("SELECT 1"))
        finally:
            conn.close()
        assert COUNTED == classify(exc)


class TestSqlstateTable:
    """docs/integrations.md, "Which SQLSTATEs count", line by line."""

    @pytest.mark.parametrize(
        "state",
        [
            "22012",
            "22P02",
            "22001",
            "23505",
            "23503",
            "23502",
            "23514",
            "42601",
            "42P01",
            "42703",
            "42501",
            "25P02",
        ],
    )
    def test_not_counted(self, state):
        """The query's fault: ignored."""
        assert IGNORED == classify(Coded(state))

    @pytest.mark.parametrize(
        "state",
        [
            "08003",
            "08006",
            "57014",
            "57P01",
            "57P02",
            "57P03",
            "53300",
            "40001",
            "40P01",
            "25006",
            "25P03",
            "28P01",
            "3D000",
            "XX000",
        ],
    )
    def test_counted(self, state):
        """Everything else counts."""
        assert COUNTED == classify(Coded(state))

    def test_pgcode_like_psycopg2(self):
        """pgcode is read when sqlstate is absent."""
        error = Exception("x")
        error.pgcode = "23505"  # type: ignore[attr-defined]
        assert IGNORED == classify(error)


class TestSqlAlchemyClientErrors:
    """SQLAlchemy's own errors, known by class name (the ones it raises
    talking to a real server: tests/test_postgres.py)."""

    @pytest.mark.parametrize(
        ("error", "expected"),
        [
            (sqlalchemy.exc.NoResultFound("No row was found"), IGNORED),
            (sqlalchemy.exc.MultipleResultsFound("Multiple rows"), IGNORED),
            (sqlalchemy.orm.exc.NoResultFound("No row was found"), IGNORED),
            (sqlalchemy.exc.PendingRollbackError("roll back first"), NEUTRAL),
            (sqlalchemy.exc.ResourceClosedError("result closed"), NEUTRAL),
            (sqlalchemy.exc.TimeoutError("QueuePool limit reached"), COUNTED),
        ],
        ids=lambda value: type(value).__name__,
    )
    def test_verdicts(self, error, expected):
        assert expected == classify(error)

    def test_subclasses_and_namesakes(self):
        """A subclass of NoResultFound is one; a class of the same name
        outside SQLAlchemy is not."""

        class NotFound(sqlalchemy.exc.NoResultFound):
            pass

        class NoResultFound(Exception):
            pass

        assert (IGNORED, COUNTED) == (
            classify(NotFound()),
            classify(NoResultFound()),
        )


class Coded(Exception):
    """An error with a SQLSTATE (pure logic: the table of states)."""

    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.sqlstate = state


class TestProgrammingErrors:
    @pytest.mark.parametrize(
        "error",
        [
            TypeError("Object of type set is not JSON serializable"),
            NameError("name 'clinet' is not defined"),
            AttributeError("'NoneType' object has no attribute 'choices'"),
            AssertionError("unreachable"),
            NotImplementedError("subclass must say"),
        ],
        ids=lambda e: type(e).__name__,
    )
    async def test_neutral_never_retried(self, error):
        """Raised once, neither success nor failure, never retried."""
        p = make_policy("api", failure_threshold=1, retry={"attempts": 3})
        calls = 0

        async def buggy() -> None:
            nonlocal calls
            calls += 1
            raise error

        with pytest.raises(type(error)):
            await p.acall(buggy)
        status = p.status()
        assert (1, "closed", 0, 0, 0) == (
            calls,
            p.state,
            status["calls"],
            status["successes"],
            status["failures"],
        )

    async def test_set_instead_of_dict_in_the_callers_code(self, api):
        """The README tour's bug (json={...} a set) opens nothing."""
        p = make_policy("api", failure_threshold=1, retry={"attempts": 3})

        @p
        async def post() -> Any:
            async with httpx.AsyncClient(base_url=api.url) as client:
                return await client.post(
                    "/plain/400", json={"model", "no-such-model"}
                )

        with pytest.raises(TypeError):
            await post()
        assert ("closed", 0) == (p.state, p.status()["failures"])

    async def test_sync_call_is_neutral_too(self):
        """Policy.call: a programming error is neutral as well."""
        p = make_policy("api", failure_threshold=1, retry={"attempts": 3})
        with pytest.raises(AttributeError):
            p.call(lambda: None.missing)  # type: ignore[attr-defined]
        assert (0, 0, 0) == (
            p.status()["calls"],
            p.status()["successes"],
            p.status()["failures"],
        )

    async def test_acall_with_functions_that_are_not_coroutines(self):
        """A plain, generator or async generator function given to acall."""

        def plain() -> int:
            return 42

        def generator() -> Iterator[int]:
            yield 1

        async def async_generator() -> Any:
            yield 1

        p = make_policy("api", failure_threshold=1, retry={"attempts": 3})
        for fn in (plain, generator, async_generator):
            with pytest.raises(TypeError, match="await"):
                await p.acall(fn)  # type: ignore[arg-type]
        status = p.status()
        assert ("closed", 0, 0, 0) == (
            p.state,
            status["calls"],
            status["successes"],
            status["failures"],
        )

    async def test_acall_with_a_timeout_too(self):
        """With a timeout (another code path) a plain function is neutral."""
        p = make_policy("api", failure_threshold=1, timeout=5)
        with pytest.raises(TypeError):
            await p.acall(lambda: 42)  # type: ignore[arg-type,return-value]
        assert ("closed", 0) == (p.state, p.status()["failures"])

    async def test_a_neutral_probe_frees_its_slot(self):
        """Half-open: a buggy probe neither closes nor reopens the circuit."""
        clock = Clock()
        p = with_clock(
            make_policy("api", failure_threshold=1, recovery_timeout=10),
            clock,
        )

        async def down() -> None:
            raise ConnectionResetError

        async def buggy() -> None:
            raise TypeError("bug")

        async def fine() -> str:
            return "ok"

        with pytest.raises(ConnectionResetError):
            await p.acall(down)
        clock.advance(11)
        with pytest.raises(TypeError):
            await p.acall(buggy)
        assert "half-open" == p.state
        assert "ok" == await p.acall(fine)
        assert "closed" == p.state

    def test_record_exceptions_still_override(self):
        """record_exceptions decides alone, programming errors included."""
        error = TypeError("bug")
        assert COUNTED == classify(
            error, record_exceptions=["builtins.TypeError"]
        )
        assert IGNORED == classify(
            error, record_exceptions=["builtins.OSError"]
        )
        assert IGNORED == classify(
            error, ignore_exceptions=["builtins.TypeError"]
        )
        assert NEUTRAL == classify(error)


class AppError(Exception):
    """An application's own error, wrapping a client's."""


class TestChain:
    async def test_raised_from_a_status_error(self, api):
        """raise AppError(...) from a 400: the 400 decides."""
        status_error = await caught(lambda: chat_once(api, 400))
        wrapped = AppError("the model is wrong")
        wrapped.__cause__ = status_error
        assert IGNORED == classify(wrapped)

    def test_raised_while_handling_a_status_error(self, api):
        """Raised while handling a 404: ignored, unless ``from None``."""

        def fetch() -> None:
            try:
                httpx.get(f"{api.url}/plain/404").raise_for_status()
            except httpx.HTTPStatusError:
                raise AppError("no such thing") from None

        def fetch_implicit() -> None:
            try:
                httpx.get(f"{api.url}/plain/404").raise_for_status()
            except httpx.HTTPStatusError:
                raise AppError("no such thing")  # noqa: B904

        assert COUNTED == classify(caught_sync(fetch))
        assert IGNORED == classify(caught_sync(fetch_implicit))

    def test_network_error_while_handling_a_status_is_counted(self, api):
        """The first fault decides: a refusal raised after a 404 counts."""

        def fallback() -> None:
            try:
                httpx.get(f"{api.url}/plain/404").raise_for_status()
            except httpx.HTTPStatusError:
                httpx.get(f"http://127.0.0.1:{closed_port()}/")

        exc = caught_sync(fallback)
        assert isinstance(exc, httpx.ConnectError)
        assert COUNTED == classify(exc)

    def test_programming_error_under_a_wrapper(self):
        """A wrapper raised from a TypeError is neutral."""
        wrapped = AppError("could not build the request")
        wrapped.__cause__ = TypeError("bug")
        assert NEUTRAL == classify(wrapped)

    @pytest.mark.parametrize(
        "refusal",
        [
            CircuitOpenError("api", retry_after=5, failure_count=3),
            BulkheadFullError("api", 4, 0.0),
        ],
        ids=lambda e: type(e).__name__,
    )
    def test_refusal_wrapped_by_an_sdk(self, refusal):
        """An SDK error raised from our refusal is not a call: passthrough."""
        wrapped = AppError("Connection error.")
        wrapped.__cause__ = refusal
        assert PASSTHROUGH == classify(wrapped)

    def test_orig_of_a_wrapper(self):
        """A wrapper's .orig (SQLAlchemy's way) is followed."""

        class Wrapper(Exception):
            def __init__(self, orig: BaseException) -> None:
                super().__init__("wrapped")
                self.orig = orig

        class Violation(Exception):
            sqlstate = "23505"

        assert IGNORED == classify(Wrapper(Violation()))

    def test_cycle_terminates(self):
        """A chain that loops back is walked once."""
        first, second = AppError("a"), AppError("b")
        first.__cause__ = second
        second.__cause__ = first
        assert [first, second] == list(fault_chain(first))
        assert COUNTED == classify(first)

    def test_depth_is_bounded(self):
        """Past MAX_CHAIN links nothing more is read."""

        class Status(Exception):
            status_code = 400

        def chain_of(length: int) -> BaseException:
            exc: BaseException = Status()
            for _ in range(length - 1):
                outer = AppError("wrapper")
                outer.__cause__ = exc
                exc = outer
            return exc

        assert IGNORED == classify(chain_of(MAX_CHAIN))
        assert COUNTED == classify(chain_of(MAX_CHAIN + 1))
        assert MAX_CHAIN == len(list(fault_chain(chain_of(100))))

    def test_attributes_that_raise(self):
        """A property that raises is no status and breaks nothing."""

        class Touchy(Exception):
            @property
            def status_code(self) -> int:
                raise RuntimeError("no response yet")

            @property
            def orig(self) -> BaseException:
                raise RuntimeError("nor this")

        assert COUNTED == classify(Touchy())

    def test_json_body_is_not_a_status(self):
        """A decoding error of a 200 body is counted (no status on it)."""
        exc = caught_sync(lambda: json.loads("<html>"))
        assert COUNTED == classify(exc)

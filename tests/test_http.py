"""The httpx integration against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import importlib
import importlib.util
import ssl
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import httpx2
import pytest
import sage_resilience.http as http_module
from sage_resilience import CircuitOpenError, configure, diagnose
from sage_resilience._config import load_config_text
from sage_resilience.http import (
    LIBRARIES,
    FailureStatusError,
    PolicyTimeoutError,
    ResilientTransport,
    resilient_client,
    resilient_sync_client,
)
from tests.helpers import Clock, make_policy, named, with_clock
from tests.support.http_servers import (
    Response,
    SilentServer,
    StandInServer,
    closed_port,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from types import ModuleType

    from sage_resilience import Policy


@pytest.fixture
def server() -> Iterator[StandInServer]:
    with StandInServer() as s:
        yield s


def retrying(**settings) -> Policy:
    """A policy that retries 3 times and opens late, unless told."""
    config = {
        "failure_threshold": 10,
        "retry": {"attempts": 3, "backoff": {"max": 10}},
    }
    config.update(settings)
    return make_policy("api", **config)


@pytest.fixture(params=LIBRARIES)
def lib(request) -> ModuleType:
    """httpx, then httpx2: every test runs with the clients of both."""
    return importlib.import_module(request.param)


def client(lib, p: Policy | str, server: StandInServer, **kwargs):
    """An AsyncClient of *lib* with a ResilientTransport."""
    return lib.AsyncClient(
        transport=ResilientTransport(p), base_url=server.url, **kwargs
    )


def async_client(lib, p: Policy | str, **kwargs):
    """resilient_client for *lib*."""
    return resilient_client(p, library=lib.__name__, **kwargs)


def sync_client(lib, p: Policy | str, **kwargs):
    """resilient_sync_client for *lib*."""
    return resilient_sync_client(p, library=lib.__name__, **kwargs)


class TestRetries:
    async def test_failure_statuses_are_retried_until_success(
        self, lib, server
    ):
        """Two 503s then a 200: three hits, the caller sees the 200."""
        server.script(
            "/v1/chat",
            [Response(503), Response(503), Response(200, json={"ok": 1})],
        )
        async with client(lib, retrying(), server) as c:
            response = await c.post("/v1/chat", json={"q": "hi"})
        assert (200, {"ok": 1}) == (response.status_code, response.json())
        assert 3 == server.hits["/v1/chat"]

    async def test_bytes_bodies_are_replayed(self, lib, server):
        """Every attempt sends the same body."""
        server.script("/v1/chat", [Response(502), Response(200)])
        async with client(lib, retrying(), server) as c:
            await c.post("/v1/chat", json={"q": "hi"})
        assert [b'{"q":"hi"}'] * 2 == [r.body for r in server.requests]

    async def test_retry_after_is_honoured(self, lib, server, events):
        """A 429's Retry-After is the wait before the next attempt."""
        server.script(
            "/v1/chat",
            [Response(429, headers={"Retry-After": "7"}), Response(200)],
        )
        async with client(lib, retrying(), server) as c:
            response = await c.get("/v1/chat")
        assert 200 == response.status_code
        [scheduled] = named(events, "retry_scheduled")
        assert (1, 7.0) == (scheduled["attempt"], scheduled["wait"])
        assert scheduled["error"].startswith("FailureStatusError: 429")

    async def test_retry_after_is_capped_by_backoff_max(
        self, lib, server, events
    ):
        """A Retry-After longer than backoff.max waits backoff.max."""
        server.script(
            "/v1/chat",
            [Response(503, headers={"Retry-After": "3600"}), Response(200)],
        )
        async with client(lib, retrying(), server) as c:
            await c.get("/v1/chat")
        assert [10.0] == [e["wait"] for e in named(events, "retry_scheduled")]

    async def test_exhausted_retries_return_the_last_response(
        self, lib, server, events
    ):
        """When attempts run out the last failing response is returned."""
        server.script(
            "/v1/chat",
            [
                Response(500, json={"n": 1}),
                Response(502, json={"n": 2}),
                Response(503, json={"n": 3}, headers={"X-Last": "yes"}),
            ],
        )
        async with client(lib, retrying(), server) as c:
            response = await c.get("/v1/chat")
            assert (503, {"n": 3}, "yes") == (
                response.status_code,
                response.json(),
                response.headers["x-last"],
            )
            assert response.request.url == server.url + "/v1/chat"
            with pytest.raises(lib.HTTPStatusError):
                response.raise_for_status()
        assert 3 == server.hits["/v1/chat"]
        [exhausted] = named(events, "retry_exhausted")
        assert 3 == exhausted["attempts"]

    async def test_client_errors_pass_straight_through(
        self, lib, server, events
    ):
        """A 400 is returned at once: one hit, no retry, no failure."""
        p = retrying(failure_threshold=1)
        server.script(
            "/v1/chat",
            Response(400, json={"error": {"message": "bad model"}}),
        )
        async with client(lib, p, server) as c:
            for _ in range(5):
                response = await c.post("/v1/chat", json={})
                assert 400 == response.status_code
        assert 5 == server.hits["/v1/chat"]
        assert ("closed", 0) == (p.state, p.status()["failure_count"])
        assert [] == named(events, "retry_scheduled")

    async def test_ignored_status_errors_are_not_counted(self, lib, server):
        """ignore_exceptions: HTTPStatusError makes 503 a plain answer."""
        p = retrying(
            failure_threshold=1,
            ignore_exceptions=[f"{lib.__name__}.HTTPStatusError"],
        )
        server.script("/v1/chat", Response(503))
        async with client(lib, p, server) as c:
            response = await c.get("/v1/chat")
        assert (503, 1, "closed") == (
            response.status_code,
            server.hits["/v1/chat"],
            p.state,
        )

    async def test_connection_errors_are_retried_then_raised(self, lib):
        """Nothing listening: every attempt fails, the ConnectError is raised."""
        p = retrying()
        url = f"http://127.0.0.1:{closed_port()}"
        async with lib.AsyncClient(
            transport=ResilientTransport(p), base_url=url
        ) as c:
            with pytest.raises(lib.ConnectError):
                await c.get("/v1/models")
        assert 3 == p.status()["failure_count"]


class TestCircuit:
    async def test_opens_after_threshold_then_refuses_without_hits(
        self, lib, server
    ):
        """failure_threshold 503s open it; then nothing reaches the server."""
        p = make_policy("api", failure_threshold=3)
        server.script("/v1/chat", Response(503))
        async with client(lib, p, server) as c:
            for _ in range(3):
                assert 503 == (await c.get("/v1/chat")).status_code
            assert "open" == p.state
            for _ in range(5):
                with pytest.raises(CircuitOpenError) as refused:
                    await c.get("/v1/chat")
        assert 3 == server.hits["/v1/chat"]
        assert "http_server_error" == refused.value.last_cause

    async def test_opening_during_retries_raises_with_the_response(
        self, lib, server
    ):
        """Opening while attempts remain raises CircuitOpenError from it."""
        p = retrying(failure_threshold=2, retry={"attempts": 5})
        server.script("/v1/chat", Response(503, json={"busy": True}))
        async with client(lib, p, server) as c:
            with pytest.raises(CircuitOpenError) as refused:
                await c.get("/v1/chat")
        cause = refused.value.__cause__
        assert isinstance(cause, FailureStatusError)
        assert (503, {"busy": True}) == (
            cause.response.status_code,
            cause.response.json(),
        )
        assert 2 == server.hits["/v1/chat"]

    async def test_half_open_probe_recovers_when_the_server_is_back(
        self, lib, server
    ):
        """Outage opens it; after recovery_timeout one probe closes it."""
        clock = Clock()
        p = with_clock(
            make_policy("api", failure_threshold=2, recovery_timeout=30),
            clock,
        )
        server.script("/v1/models", Response(200, json={"data": []}))
        async with client(lib, p, server) as c:
            assert 200 == (await c.get("/v1/models")).status_code
            server.stop()
            for _ in range(2):
                with pytest.raises(lib.ConnectError):
                    await c.get("/v1/models")
            assert "open" == p.state
            server.start()
            with pytest.raises(CircuitOpenError):
                await c.get("/v1/models")
            assert 1 == server.hits["/v1/models"]
            clock.advance(31)
            assert 200 == (await c.get("/v1/models")).status_code
        assert ("closed", 2) == (p.state, server.hits["/v1/models"])

    async def test_retry_after_of_the_opening_answer_is_the_open_time(
        self, lib, server, events
    ):
        """429 Retry-After: 1 opens siliconflow_api for 1 s, not 120 s."""
        clock = Clock()
        p = with_clock(
            make_policy(
                "api",
                failure_threshold=3,
                recovery_timeout=120,
                retry={"attempts": 3, "backoff": {"max": 20}},
            ),
            clock,
        )
        server.script("/v1/chat", Response(429, headers={"Retry-After": "1"}))
        async with client(lib, p, server) as c:
            assert 429 == (await c.get("/v1/chat")).status_code
            assert ("open", 1.0) == (
                p.state,
                p.status()["current_recovery_timeout"],
            )
            clock.advance(1.01)
            server.script("/v1/chat", Response(200))
            assert 200 == (await c.get("/v1/chat")).status_code
        [opened, _, closed] = named(events, "circuit_state_changed")
        assert (1.0, "closed") == (opened["open_for"], closed["new_state"])

    async def test_registry_policy_by_name(self, lib, server):
        """A transport given a name uses the registry's policy."""
        configure(
            load_config_text(
                "version: 1\npolicies:\n  api: {failure_threshold: 1}\n",
                environ={},
            )
        )
        server.script("/v1/chat", Response(500))
        async with client(lib, "api", server) as c:
            await c.get("/v1/chat")
            with pytest.raises(CircuitOpenError):
                await c.get("/v1/chat")
        assert 1 == server.hits["/v1/chat"]


async def stream_body() -> AsyncIterator[bytes]:
    yield b"part one, "
    yield b"part two"


#: StandInServer reads Content-Length bodies only (not chunked ones).
STREAM_HEADERS = {"Content-Length": "18"}


class TestStreamingBodies:
    async def test_streaming_body_gets_one_attempt(self, lib, server, events):
        """A generator body is sent once, even on a failure status."""
        p = retrying()
        server.script("/upload", [Response(503), Response(200)])
        async with client(lib, p, server) as c:
            response = await c.post(
                "/upload", content=stream_body(), headers=STREAM_HEADERS
            )
        assert (503, 1) == (response.status_code, server.hits["/upload"])
        assert b"part one, part two" == server.requests[0].body
        assert 1 == p.status()["failure_count"]
        assert [] == named(events, "retry_scheduled")

    async def test_streaming_body_respects_the_breaker(self, lib, server):
        """One attempt, but through the breaker: refused when open."""
        p = retrying(failure_threshold=1)
        server.script("/upload", Response(503))
        async with client(lib, p, server) as c:
            await c.post(
                "/upload", content=stream_body(), headers=STREAM_HEADERS
            )
            with pytest.raises(CircuitOpenError):
                await c.post(
                    "/upload", content=stream_body(), headers=STREAM_HEADERS
                )
        assert 1 == server.hits["/upload"]

    def test_sync_streaming_body_gets_one_attempt(self, lib, server):
        """The sync twin: an iterator body is sent once."""
        p = retrying()
        server.script("/upload", [Response(502), Response(200)])
        with lib.Client(
            transport=ResilientTransport(p), base_url=server.url
        ) as c:
            response = c.post(
                "/upload",
                content=iter([b"a", b"b"]),
                headers={"Content-Length": "2"},
            )
        assert (502, 1) == (response.status_code, server.hits["/upload"])


class TestSync:
    def test_sync_client_retries_and_opens(self, lib, server):
        """lib.Client: retries, then the circuit refuses without a hit.

        The third failure opens it on the last attempt: that call still
        gets its response; the next one is refused.
        """
        p = retrying(failure_threshold=3)
        server.script("/v1/chat", [Response(503), Response(200)])
        with sync_client(lib, p, base_url=server.url) as c:
            assert 200 == c.get("/v1/chat").status_code
            server.script("/v1/chat", Response(500, json={"n": 1}))
            last = c.get("/v1/chat")
            assert (500, {"n": 1}) == (last.status_code, last.json())
            assert "open" == p.state
            with pytest.raises(CircuitOpenError):
                c.get("/v1/chat")
        assert 2 + 3 == server.hits["/v1/chat"]

    def test_one_client_shared_by_threads(self, lib, server):
        """Threads sharing a sync client all get through the policy."""
        p = retrying()
        server.script("/v1/chat", Response(200))
        transport = ResilientTransport(p)
        with lib.Client(transport=transport, base_url=server.url) as c:
            with ThreadPoolExecutor(8) as pool:
                statuses = list(
                    pool.map(
                        lambda _: c.get("/v1/chat").status_code, range(40)
                    )
                )
            inner = transport._sync
        assert ([200] * 40, 40) == (statuses, p.status()["successes"])
        [(name, made)] = inner.items()
        assert (lib.__name__, lib.HTTPTransport) == (name, type(made))

    def test_sync_timeout_comes_from_the_policy(self, lib, server):
        """resilient_sync_client's timeout is the policy's, and counts."""
        p = make_policy("api", timeout=0.2)
        server.script("/slow", Response(200, delay=5))
        with sync_client(lib, p, base_url=server.url) as c:
            assert lib.Timeout(0.2) == c.timeout
            with pytest.raises(lib.ReadTimeout):
                c.get("/slow")
        assert 1 == p.status()["failure_count"]


class TestMounts:
    async def test_one_transport_per_host(self, lib):
        """Each mounted host has its own circuit; the other keeps serving."""
        chat = make_policy("chat", failure_threshold=1)
        embed = make_policy("embed", failure_threshold=1)
        with StandInServer() as a, StandInServer() as b:
            a.script("/v1/chat", Response(503))
            b.script("/v1/embeddings", Response(200, json={"data": []}))
            async with lib.AsyncClient(
                mounts={
                    a.url: ResilientTransport(chat),
                    b.url: ResilientTransport(embed),
                }
            ) as c:
                assert 503 == (await c.get(a.url + "/v1/chat")).status_code
                with pytest.raises(CircuitOpenError) as refused:
                    await c.get(a.url + "/v1/chat")
                for _ in range(3):
                    response = await c.get(b.url + "/v1/embeddings")
                    assert 200 == response.status_code
            assert ("chat", 1, 3) == (
                refused.value.policy,
                a.hits["/v1/chat"],
                b.hits["/v1/embeddings"],
            )
        assert ("open", "closed") == (chat.state, embed.state)


class TestTimeout:
    async def test_policy_timeout_bounds_each_attempt(self, lib, server):
        """A slow answer beyond the policy timeout is a counted failure."""
        p = make_policy("api", timeout=0.2)
        server.script("/slow", Response(200, delay=5))
        async with client(lib, p, server, timeout=30) as c:
            with pytest.raises(PolicyTimeoutError) as timed_out:
                await c.get("/slow")
        assert isinstance(timed_out.value, TimeoutError)
        assert isinstance(timed_out.value, lib.TimeoutException)
        assert "'api'" in str(timed_out.value)
        assert 1 == p.status()["failure_count"]

    async def test_client_timeout_is_the_policy_timeout(self, lib):
        """resilient_client sets the client timeout from the policy."""
        p = make_policy("api", timeout=12.5)
        async with (
            async_client(lib, p) as c,
            async_client(lib, p, timeout=3) as explicit,
        ):
            assert (lib.Timeout(12.5), lib.Timeout(3)) == (
                c.timeout,
                explicit.timeout,
            )

    async def test_no_policy_timeout_keeps_httpx_default(self, lib):
        """Without a policy timeout httpx's default applies."""
        async with async_client(lib, make_policy()) as c:
            assert lib.Timeout(5) == c.timeout


class TestConnections:
    async def test_discarded_responses_release_their_connection(
        self, lib, server
    ):
        """With one pooled connection, retried answers never starve it."""
        server.script(
            "/v1/chat",
            [Response(503, body="x" * 10_000), Response(503), Response(200)]
            * 4,
        )
        limits = lib.Limits(max_connections=1, max_keepalive_connections=1)
        timeout = lib.Timeout(5, pool=0.5)
        async with async_client(
            lib,
            retrying(),
            base_url=server.url,
            limits=limits,
            timeout=timeout,
        ) as c:
            statuses = [
                (await c.get("/v1/chat")).status_code for _ in range(4)
            ]
        assert [200] * 4 == statuses
        assert 12 == server.hits["/v1/chat"]

    async def test_returned_failure_response_is_readable_and_closable(
        self, lib, server
    ):
        """The returned last response streams and closes like any other."""
        p = make_policy("api")
        limits = lib.Limits(max_connections=1)
        timeout = lib.Timeout(5, pool=0.5)
        server.script("/v1/chat", Response(503, body="busy"))
        async with async_client(
            lib, p, base_url=server.url, limits=limits, timeout=timeout
        ) as c:
            for _ in range(3):
                async with c.stream("GET", "/v1/chat") as response:
                    body = b"".join([b async for b in response.aiter_bytes()])
                assert (503, b"busy") == (response.status_code, body)
                assert response.elapsed.total_seconds() >= 0

    def test_sync_discarded_responses_release_their_connection(
        self, lib, server
    ):
        """The sync path closes discarded answers too."""
        server.script(
            "/v1/chat", [Response(503), Response(503), Response(200)] * 3
        )
        limits = lib.Limits(max_connections=1)
        with sync_client(
            lib,
            retrying(),
            base_url=server.url,
            limits=limits,
            timeout=lib.Timeout(5, pool=0.5),
        ) as c:
            statuses = [c.get("/v1/chat").status_code for _ in range(3)]
        assert [200] * 3 == statuses


class TestClients:
    async def test_settings_give_base_url_and_bearer_key(
        self, lib, server, monkeypatch
    ):
        """base_url and the key (from api_key_env) come from settings."""
        monkeypatch.setenv("TEST_PROVIDER_KEY", "sk-test-0123456789")
        p = make_policy(
            "api",
            settings={
                "base_url": server.url + "/v1",
                "api_key_env": "TEST_PROVIDER_KEY",
            },
        )
        server.script("/v1/models", Response(200, json={"data": []}))
        async with async_client(lib, p) as c:
            assert 200 == (await c.get("models")).status_code
        assert (
            "Bearer sk-test-0123456789"
            == (server.requests[0].headers["Authorization"])
        )

    async def test_explicit_arguments_win(self, lib, server, monkeypatch):
        """base_url and an Authorization header given by the caller win."""
        monkeypatch.setenv("TEST_PROVIDER_KEY", "sk-from-env-000000")
        p = make_policy(
            "api",
            settings={
                "base_url": "http://127.0.0.1:1/nowhere",
                "api_key_env": "TEST_PROVIDER_KEY",
            },
        )
        server.script("/v1/models", Response(200))
        async with async_client(
            lib,
            p,
            base_url=server.url + "/v1/",
            headers={"Authorization": "Bearer mine"},
        ) as c:
            await c.get("models")
        assert "Bearer mine" == server.requests[0].headers["Authorization"]

    async def test_no_key_without_the_variable(self, lib, server, monkeypatch):
        """api_key_env naming an unset variable sends no Authorization."""
        monkeypatch.delenv("TEST_PROVIDER_KEY", raising=False)
        p = make_policy(
            "api",
            settings={
                "base_url": server.url,
                "api_key_env": "TEST_PROVIDER_KEY",
            },
        )
        async with async_client(lib, p) as c:
            await c.get("/v1/models")
        assert "Authorization" not in server.requests[0].headers

    async def test_resilient_client_by_name(self, lib, server):
        """A policy name resolves through the registry, settings included."""
        configure(
            load_config_text(
                "version: 1\npolicies:\n  api:\n    failure_threshold: 1\n"
                f"    settings: {{base_url: '{server.url}'}}\n",
                environ={},
            )
        )
        server.script("/v1/chat", Response(503))
        async with async_client(lib, "api") as c:
            await c.get("/v1/chat")
            with pytest.raises(CircuitOpenError):
                await c.get("/v1/chat")

    async def test_transport_arguments_reach_the_inner_transport(self, lib):
        """verify= configures the real transport behind the policy."""
        p = retrying(retry={"attempts": 1})
        with StandInServer(tls=True) as tls:
            tls.script("/v1/models", Response(200))
            async with async_client(
                lib, p, base_url=tls.url, verify=tls.client_ssl_context()
            ) as c:
                assert 200 == (await c.get("/v1/models")).status_code
            async with async_client(lib, p, base_url=tls.url) as c:
                with pytest.raises(lib.ConnectError) as failed:
                    await c.get("/v1/models")
        assert isinstance(
            failed.value.__context__ or failed.value.__cause__,
            ssl.SSLError,
        ) or "CERTIFICATE_VERIFY_FAILED" in str(failed.value)
        assert 1 == p.status()["failure_count"]

    def test_transport_and_transport_arguments_conflict(self, lib):
        """A given transport cannot also take verify=/limits=."""
        inner = lib.AsyncHTTPTransport()
        with pytest.raises(TypeError, match="verify"):
            async_client(lib, make_policy(), transport=inner, verify=False)
        with pytest.raises(TypeError, match="limits"):
            ResilientTransport(make_policy(), inner, limits=lib.Limits())

    async def test_a_given_inner_transport_is_used(self, lib, server):
        """transport= becomes the inner transport, behind the policy."""
        p = make_policy("api", failure_threshold=1)
        server.script("/v1/chat", Response(503))
        async with async_client(
            lib, p, base_url=server.url, transport=lib.AsyncHTTPTransport()
        ) as c:
            await c.get("/v1/chat")
            with pytest.raises(CircuitOpenError):
                await c.get("/v1/chat")


class Recorder(
    httpx.AsyncBaseTransport,
    httpx.BaseTransport,
    httpx2.AsyncBaseTransport,
    httpx2.BaseTransport,
):
    """An inner transport that records close calls (pure logic)."""

    def __init__(self, lib) -> None:
        self.lib = lib
        self.closed: list[str] = []

    async def handle_async_request(self, request):
        return self.lib.Response(200)

    def handle_request(self, request):
        return self.lib.Response(200)

    async def aclose(self) -> None:
        self.closed.append("aclose")

    def close(self) -> None:
        self.closed.append("close")


class TestTransport:
    async def test_close_calls_are_forwarded(self, lib):
        """aclose()/close() reach the inner transport, also via clients."""
        inner = Recorder(lib)
        transport = ResilientTransport(make_policy(), inner)
        async with lib.AsyncClient(transport=transport) as c:
            await c.get("http://example.test/")
        with lib.Client(transport=transport) as c:
            c.get("http://example.test/")
        assert ["aclose", "close"] == inner.closed

    async def test_wrong_side_inner_transport_is_a_type_error(self, lib):
        """A sync-only inner transport cannot serve an async client."""
        transport = ResilientTransport(make_policy(), lib.HTTPTransport())
        async with lib.AsyncClient(transport=transport) as c:
            with pytest.raises(TypeError, match="sync transport"):
                await c.get("http://example.test/")

    def test_policy_property_and_repr(self, lib):
        """The policy is exposed; repr names it."""
        p = make_policy("chat")
        transport = ResilientTransport(p)
        assert (p, "<ResilientTransport policy='chat'>") == (
            transport.policy,
            repr(transport),
        )

    def test_failure_error_hides_the_query_string(self, lib):
        """The error message omits the query (keys sometimes travel there)."""
        request = lib.Request("GET", "https://api.test/v1/x?key=sk-secret1")
        error = FailureStatusError(request, lib.Response(503), b"")
        assert "503 Service Unavailable from GET https://api.test/v1/x" == (
            str(error)
        )

    def test_failure_error_gives_the_response_unread(self, lib):
        """unread_response(): a fresh response over the raw body."""
        request = lib.Request("GET", "https://api.test/v1/x")
        answer = lib.Response(503, headers={"retry-after": "7"})
        error = FailureStatusError(request, answer, b"busy")
        unread = error.unread_response()
        assert unread is not error.response
        assert (503, "7") == (
            unread.status_code,
            unread.headers["retry-after"],
        )
        assert b"busy" == unread.read()


def load_copy(monkeypatch, *missing: str):
    """Execute a fresh copy of sage_resilience.http with *missing* absent."""
    for name in missing:
        monkeypatch.setitem(sys.modules, name, None)
    path = Path(http_module.__file__)
    spec = importlib.util.spec_from_file_location("_http_probe", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestImport:
    # Without httpx and httpx2: tests/test_extras.py.

    def test_httpx2_alone_is_enough(self, monkeypatch):
        """With httpx2 only, the module loads and builds httpx2 clients."""
        module = load_copy(monkeypatch, "httpx")
        client = module.resilient_sync_client(make_policy())
        with client:
            assert isinstance(client, httpx2.Client)
        assert ("httpx2",) == tuple(module._LIBS)

    def test_asking_for_a_missing_library_names_its_extra(self, monkeypatch):
        """library="httpx" without httpx: ImportError naming extra http."""
        module = load_copy(monkeypatch, "httpx")
        with pytest.raises(ImportError, match=r"sage-resilience\[http\]"):
            module.resilient_client(make_policy(), library="httpx")


class TestBodies:
    async def test_a_body_cut_mid_way_is_a_counted_failure(self, lib, server):
        """Headers then half the body: the reader's error counts, once."""
        p = retrying()
        server.script("/v1/chat", Response(200, body="x" * 1000, cut_after=10))
        async with client(lib, p, server) as c:
            with pytest.raises(lib.RemoteProtocolError):
                await c.get("/v1/chat")
        status = p.status()
        assert (1, 1, 0, 1) == (
            server.hits["/v1/chat"],
            status["failures"],
            status["successes"],
            status["calls"],
        )

    async def test_a_stream_cut_mid_way_opens_the_circuit(self, lib, server):
        """A streamed answer that breaks off is a failure like any other."""
        p = make_policy("api", failure_threshold=2)
        chunks = [b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"]
        server.script("/v1/chat", Response(200, chunks=chunks, cut_after=1))
        async with client(lib, p, server) as c:
            for _ in range(2):
                async with c.stream("GET", "/v1/chat") as response:
                    assert 200 == response.status_code
                    with pytest.raises(lib.RemoteProtocolError):
                        async for _ in response.aiter_bytes():
                            pass
            with pytest.raises(CircuitOpenError) as refused:
                await c.get("/v1/chat")
        assert ("open", 2) == (p.state, server.hits["/v1/chat"])
        assert refused.value.last_failure.startswith("RemoteProtocolError")

    async def test_a_whole_stream_is_a_success(self, lib, server):
        """A stream read to its end: every chunk arrives, one success."""
        p = make_policy("api", failure_threshold=1)
        chunks = [b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"]
        server.script("/v1/chat", Response(200, chunks=chunks))
        async with client(lib, p, server) as c:
            async with c.stream("GET", "/v1/chat") as response:
                got = [chunk async for chunk in response.aiter_bytes()]
        assert b"".join(chunks) == b"".join(got)
        assert (1, 0, "closed") == (
            p.status()["successes"],
            p.status()["failures"],
            p.state,
        )

    async def test_a_stream_left_early_is_a_success(self, lib, server):
        """Closing a stream before its end is the reader's choice."""
        p = make_policy("api", failure_threshold=1)
        chunks = [b"a" * 100] * 20
        server.script("/v1/chat", Response(200, chunks=chunks))
        async with client(lib, p, server) as c:
            async with c.stream("GET", "/v1/chat") as response:
                async for _ in response.aiter_raw():
                    break
        assert (1, 0) == (p.status()["successes"], p.status()["failures"])

    async def test_a_probe_lasts_until_its_body_is_read(self, lib, server):
        """Half-open: the probe's verdict is its body's, not its head's."""
        clock = Clock()
        p = with_clock(
            make_policy("api", failure_threshold=1, recovery_timeout=30),
            clock,
        )
        server.script("/v1/chat", Response(503))
        async with client(lib, p, server) as c:
            await c.get("/v1/chat")
            assert "open" == p.state
            clock.advance(31)
            server.script(
                "/v1/chat", Response(200, body="y" * 100, cut_after=5)
            )
            async with c.stream("GET", "/v1/chat") as response:
                assert "half-open" == p.state
                with pytest.raises(CircuitOpenError):
                    await c.get("/v1/chat")  # the one probe slot is taken
                with pytest.raises(lib.RemoteProtocolError):
                    await response.aread()
        assert ("open", 2) == (p.state, server.hits["/v1/chat"])

    def test_sync_body_cut_mid_way_is_a_counted_failure(self, lib, server):
        """The sync twin: a body that breaks off counts as a failure."""
        p = retrying(failure_threshold=1)
        server.script("/v1/chat", Response(200, body="z" * 500, cut_after=3))
        with sync_client(lib, p, base_url=server.url) as c:
            with pytest.raises(lib.RemoteProtocolError):
                c.get("/v1/chat")
            with pytest.raises(CircuitOpenError):
                c.get("/v1/chat")
        assert 1 == server.hits["/v1/chat"]

    def test_sync_stream_read_whole_is_a_success(self, lib, server):
        """A sync stream read to its end counts one success."""
        p = make_policy("api")
        server.script("/v1/chat", Response(200, chunks=[b"a", b"b", b"c"]))
        with sync_client(lib, p, base_url=server.url) as c:
            with c.stream("GET", "/v1/chat") as response:
                assert b"abc" == b"".join(response.iter_bytes())
        assert (1, 0) == (p.status()["successes"], p.status()["failures"])


OTHER = {"httpx": httpx2, "httpx2": httpx}


class TestLibraries:
    async def test_one_transport_serves_both_libraries(self, server):
        """httpx and httpx2 clients share one transport and one circuit."""
        p = make_policy("api", failure_threshold=2)
        transport = ResilientTransport(p)
        server.script("/v1/chat", Response(503))
        async with (
            httpx.AsyncClient(transport=transport, base_url=server.url) as a,
            httpx2.AsyncClient(transport=transport, base_url=server.url) as b,
        ):
            first = await a.get("/v1/chat")
            second = await b.get("/v1/chat")
            with pytest.raises(CircuitOpenError):
                await a.get("/v1/chat")
        assert (httpx.Response, httpx2.Response) == (
            type(first),
            type(second),
        )
        assert (2, "open") == (server.hits["/v1/chat"], p.state)

    async def test_an_inner_transport_of_the_other_library_is_refused(
        self, lib, server
    ):
        """Not a bare AssertionError: a TypeError naming both libraries."""
        other = OTHER[lib.__name__]
        transport = ResilientTransport(
            make_policy(), other.AsyncHTTPTransport()
        )
        async with lib.AsyncClient(
            transport=transport, base_url=server.url
        ) as c:
            with pytest.raises(TypeError) as refused:
                await c.get("/v1/chat")
        assert f"is not a {lib.__name__} transport" in str(refused.value)
        assert 0 == server.total_hits

    async def test_clients_are_of_the_chosen_library(self, lib):
        """library= picks the client class, sync and async."""
        p = make_policy("api", timeout=7)
        async with async_client(lib, p) as a:
            assert (lib.AsyncClient, lib.Timeout(7)) == (type(a), a.timeout)
        with sync_client(lib, p) as s:
            assert lib.Client is type(s)

    def test_default_library_is_httpx_when_installed(self):
        """Without library=, httpx (extra http) wins when both exist."""
        with resilient_sync_client(make_policy()) as c:
            assert httpx.Client is type(c)

    def test_unknown_library_is_a_value_error(self):
        """library= must name one of LIBRARIES."""
        with pytest.raises(ValueError, match="'requests'"):
            resilient_client(make_policy(), library="requests")

    async def test_errors_are_the_libraries_own(self, lib, server):
        """FailureStatusError and PolicyTimeoutError are lib's errors."""
        server.script("/busy", Response(503))
        server.script("/slow", Response(200, delay=5))
        async with client(lib, retrying(failure_threshold=1), server) as c:
            with pytest.raises(CircuitOpenError) as refused:
                await c.get("/busy")  # opens with attempts left
        async with client(lib, make_policy(timeout=0.2), server) as c:
            with pytest.raises(lib.TimeoutException) as timed_out:
                await c.get("/slow")
        assert isinstance(refused.value.__cause__, FailureStatusError)
        assert isinstance(refused.value.__cause__, lib.HTTPStatusError)
        assert isinstance(timed_out.value, PolicyTimeoutError)
        assert isinstance(timed_out.value, TimeoutError)

    async def test_diagnose_understands_both(self, lib, server):
        """Status errors and timeouts of either library get their cause."""
        server.script(
            "/v1/chat",
            Response(
                429,
                headers={"Retry-After": "3"},
                json={"error": {"message": "slow down"}},
            ),
        )
        async with lib.AsyncClient(base_url=server.url) as c:
            response = await c.get("/v1/chat")
            with pytest.raises(lib.HTTPStatusError) as failed:
                response.raise_for_status()
        found = diagnose(failed.value)
        assert ("http_rate_limited", 3.0) == (
            found.cause,
            found.details["retry_after"],
        )
        assert "slow down" in found.explanation
        with SilentServer() as silent:
            async with lib.AsyncClient(timeout=0.2) as c:
                with pytest.raises(lib.TimeoutException) as hung:
                    await c.get(f"http://127.0.0.1:{silent.port}/")
        assert "http_timeout" == diagnose(hung.value).cause

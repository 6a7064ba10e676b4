"""The real openai SDK against an OpenAI-compatible server on 127.0.0.1.

Every scenario runs with the SDK of this environment (openai 3.x, built on
httpx2) and, through :class:`TestOpenAI2`, once more in a child process
with openai 2.x (built on httpx) from the second virtualenv that
``scripts/test`` makes (``.venv-openai2``).
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import openai
import pytest
from sage_resilience import CircuitOpenError, configure, diagnose, policy
from sage_resilience._config import load_config_text
from sage_resilience.openai import (
    http_library,
    openai_client,
    sync_openai_client,
)
from tests.helpers import make_policy, named
from tests.support import unavailable
from tests.support.http_servers import Response, StandInServer
from tests.support.openai_server import (
    CHAT,
    MODEL,
    completion,
    provider_error,
    stream,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sage_resilience import Policy

#: The HTTP library of the SDK under test (httpx2 for 3.x, httpx for 2.x).
LIB = importlib.import_module(http_library())
SDK_MAJOR = int(openai.__version__.split(".")[0])

KEY = "sk-test-0123456789abcdef"
MESSAGES = [{"role": "user", "content": "hi"}]
ROOT = Path(__file__).resolve().parents[1]
CHILD_PYTHON = ROOT / ".venv-openai2" / "bin" / "python"


@pytest.fixture
def server() -> Iterator[StandInServer]:
    with StandInServer() as s:
        yield s


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_LLM_KEY", KEY)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def llm(server: StandInServer, **settings) -> Policy:
    """The policy of an LLM API served by *server*: 3 attempts."""
    config = {
        "kind": "http",
        "failure_threshold": 5,
        "timeout": 5,
        "retry": {"attempts": 3, "backoff": {"initial": 0.1, "max": 10}},
        "settings": {
            "base_url": server.url + "/v1",
            "api_key_env": "TEST_LLM_KEY",
        },
    }
    config.update(settings)
    return make_policy("llm", **config)


async def ask(client: openai.AsyncOpenAI) -> str | None:
    reply = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES
    )
    return reply.choices[0].message.content


async def read_into(got: list[str], events) -> None:
    async for event in events:
        got.append(event.choices[0].delta.content or "")


def refused_by_the_circuit(exc: BaseException) -> bool:
    """CircuitOpenError itself (3.x) or an SDK error raised from it (2.x)."""
    seen = exc
    while seen is not None:
        if isinstance(seen, CircuitOpenError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class TestWiring:
    async def test_settings_key_timeout_and_no_sdk_retries(self, server):
        """base_url, key from api_key_env, policy timeout, max_retries=0."""
        p = llm(server, timeout=12.5)
        server.script(CHAT, completion("hello"))
        async with openai_client(p) as client:
            assert "hello" == await ask(client)
            assert (0, 12.5, KEY) == (
                client.max_retries,
                client.timeout,
                client.api_key,
            )
        [request] = server.requests
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert f"Bearer {KEY}" == headers["authorization"]
        assert (1, 1) == (p.status()["calls"], p.status()["successes"])

    async def test_the_http_client_is_of_the_sdks_library(self, server):
        """openai 3.x gets an httpx2 client, 2.x an httpx one."""
        async with openai_client(llm(server)) as client:
            http = client._client  # the SDK keeps the client it was given
        expected = "httpx2" if SDK_MAJOR >= 3 else "httpx"
        assert (expected, True) == (
            http_library(),
            isinstance(http, LIB.AsyncClient),
        )

    async def test_keyword_arguments_win(self, server):
        """kwargs go to the SDK constructor, over the policy's values."""
        server.script(CHAT, completion("ok"))
        async with openai_client(
            llm(server), api_key="sk-mine-000000000000", max_retries=1
        ) as client:
            await ask(client)
            assert 1 == client.max_retries
        headers = {k.lower(): v for k, v in server.requests[0].headers.items()}
        assert "Bearer sk-mine-000000000000" == headers["authorization"]

    def test_missing_key_variable_names_it_without_a_secret(
        self, server, monkeypatch
    ):
        """api_key_env unset: OpenAIError naming the variable and policy."""
        monkeypatch.delenv("TEST_LLM_KEY")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-other-provider-0000")
        with pytest.raises(openai.OpenAIError) as failed:
            openai_client(llm(server))
        message = str(failed.value)
        assert "TEST_LLM_KEY" in message
        assert "'llm'" in message
        assert "sk-other" not in message

    def test_an_http_client_of_ones_own_is_refused(self, server):
        """http_client= would bypass the policy: a TypeError says so."""
        with pytest.raises(TypeError, match="ResilientTransport"):
            openai_client(llm(server), http_client=LIB.AsyncClient())

    async def test_by_name_from_the_registry(self, server):
        """A policy name resolves through the configured registry."""
        configure(
            load_config_text(
                "version: 1\npolicies:\n  llm:\n    kind: http\n"
                f"    settings: {{base_url: '{server.url}/v1', "
                "api_key_env: TEST_LLM_KEY}\n",
                environ={},
            )
        )
        server.script(CHAT, completion("named"))
        async with openai_client("llm") as client:
            assert "named" == await ask(client)
        assert 1 == policy("llm").status()["successes"]


class TestVerdicts:
    async def test_bad_request_reaches_the_user_uncounted(self, server):
        """A 400 with SiliconFlow's body: BadRequestError, one hit."""
        p = llm(server, failure_threshold=1)
        message = "Model does not exist. Please check it carefully."
        server.script(CHAT, provider_error(400, message))
        async with openai_client(p) as client:
            for _ in range(3):
                with pytest.raises(openai.BadRequestError) as failed:
                    await ask(client)
        assert message in str(failed.value)
        assert (400, 3) == (failed.value.status_code, server.hits[CHAT])
        assert ("closed", 0) == (p.state, p.status()["failures"])
        found = diagnose(failed.value)
        assert ("http_bad_request", message) == (
            found.cause,
            found.details["provider_message"],
        )

    async def test_unauthorized_reaches_the_user_uncounted(self, server):
        """A 401: AuthenticationError at once, never retried."""
        p = llm(server, failure_threshold=1)
        server.script(CHAT, provider_error(401, "Invalid token", code=20015))
        async with openai_client(p) as client:
            with pytest.raises(openai.AuthenticationError):
                await ask(client)
        assert (1, "closed", 0) == (
            server.hits[CHAT],
            p.state,
            p.status()["failures"],
        )

    async def test_rate_limit_retry_after_is_the_wait(self, server, events):
        """A 429 with Retry-After: the policy waits that long, then 200."""
        p = llm(server)
        server.script(
            CHAT,
            [
                provider_error(429, "TPM limit", headers={"Retry-After": "2"}),
                completion("after the wait"),
            ],
        )
        async with openai_client(p) as client:
            assert "after the wait" == await ask(client)
        [scheduled] = named(events, "retry_scheduled")
        assert (2.0, 2) == (scheduled["wait"], server.hits[CHAT])

    async def test_lasting_rate_limit_is_the_sdks_error(self, server):
        """429 on every attempt: RateLimitError after 3 requests, not 9."""
        p = llm(server)
        server.script(CHAT, provider_error(429, "TPM limit"))
        async with openai_client(p) as client:
            with pytest.raises(openai.RateLimitError):
                await ask(client)
        assert (3, 3) == (server.hits[CHAT], p.status()["failures"])

    async def test_a_429_that_opens_keeps_it_open_as_asked(self, server):
        """Retry-After: 1 on the opening answer: open 1 s, not 120 s."""
        p = llm(server, failure_threshold=3, recovery_timeout=120)
        server.script(
            CHAT, provider_error(429, "TPM", headers={"Retry-After": "1"})
        )
        async with openai_client(p) as client:
            with pytest.raises(openai.RateLimitError):
                await ask(client)
        assert ("open", 1.0) == (
            p.state,
            p.status()["current_recovery_timeout"],
        )

    async def test_under_a_decorator_the_sdk_error_sets_it_too(self, server):
        """@policy around the SDK: its RateLimitError's Retry-After counts."""
        p = llm(server, failure_threshold=1, recovery_timeout=120)
        server.script(
            CHAT, provider_error(429, "TPM", headers={"Retry-After": "4"})
        )
        async with openai.AsyncOpenAI(
            base_url=server.url + "/v1", api_key=KEY, max_retries=0
        ) as client:
            with pytest.raises(CircuitOpenError) as refused:
                await p.acall(ask, client)
        assert isinstance(refused.value.__cause__, openai.RateLimitError)
        assert (4.0, 1) == (
            p.status()["current_recovery_timeout"],
            server.hits[CHAT],
        )

    async def test_unavailable_opens_then_refuses_at_once(self, server):
        """503s open the circuit; then the SDK call is refused unsent."""
        p = llm(server, failure_threshold=3)
        server.script(CHAT, provider_error(503, "busy", code=50501))
        async with openai_client(p) as client:
            with pytest.raises(openai.InternalServerError):
                await ask(client)  # opens on its last attempt
            assert "open" == p.state
            with pytest.raises(Exception) as refused:
                await ask(client)
        assert refused_by_the_circuit(refused.value)
        assert "circuit_open" == diagnose(refused.value).cause
        assert 3 == server.hits[CHAT]

    async def test_a_hang_is_a_counted_timeout(self, server):
        """No answer within the policy timeout: APITimeoutError, counted."""
        p = llm(server, timeout=0.3, retry={"attempts": 2})
        server.script(CHAT, Response(200, delay=10))
        async with openai_client(p) as client:
            with pytest.raises(openai.APITimeoutError) as timed_out:
                await ask(client)
        assert (2, 2) == (server.hits[CHAT], p.status()["failures"])
        assert "http_timeout" == diagnose(timed_out.value).cause


class TestStreaming:
    async def test_a_whole_stream_arrives_and_counts_a_success(self, server):
        """stream=True: every piece arrives; one success."""
        p = llm(server, failure_threshold=1)
        server.script(CHAT, stream(["Hel", "lo", "!"]))
        async with openai_client(p) as client:
            events = await client.chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True
            )
            text = "".join(
                [e.choices[0].delta.content or "" async for e in events]
            )
        assert "Hello!" == text
        assert (1, 0) == (p.status()["successes"], p.status()["failures"])

    async def test_a_stream_cut_mid_way_is_a_counted_failure(self, server):
        """Two events, then the connection drops: one counted failure."""
        p = llm(server, failure_threshold=1)
        server.script(CHAT, stream(["a", "b", "c", "d"], cut_after=2))
        got: list[str] = []
        async with openai_client(p) as client:
            events = await client.chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True
            )
            with pytest.raises((openai.APIConnectionError, LIB.HTTPError)):
                await read_into(got, events)
            with pytest.raises(Exception) as refused:
                await ask(client)
        assert ["a", "b"] == got
        assert (0, 1, "open") == (
            p.status()["successes"],
            p.status()["failures"],
            p.state,
        )
        assert refused_by_the_circuit(refused.value)
        assert 1 == server.hits[CHAT]


class TestSync:
    def test_sync_client_retries_and_refuses(self, server):
        """OpenAI (sync): 503 then 200 in one call; open circuit refuses."""
        p = llm(server, failure_threshold=2)
        server.script(
            CHAT, [provider_error(503, "busy"), completion("second try")]
        )
        with sync_openai_client(p) as client:
            reply = client.chat.completions.create(
                model=MODEL, messages=MESSAGES
            )
            assert "second try" == reply.choices[0].message.content
            assert (0, 5.0) == (client.max_retries, client.timeout)
            p.open()
            with pytest.raises(Exception) as refused:
                client.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert refused_by_the_circuit(refused.value)
        assert 2 == server.hits[CHAT]


class TestRequestsPerCall:
    """Requests the provider receives for one user call into an outage."""

    async def test_plain_sdk_under_a_policy_multiplies(self, server):
        """Before: SDK max_retries=2 under @policy with 3 attempts: 9."""
        p = llm(server)
        server.script(CHAT, provider_error(503, "busy"))
        # The SDK as the README used to show it: its default max_retries
        # (2) retries each of the policy's attempts.
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=KEY)

        @p
        async def call() -> str | None:
            return await ask(client)

        with pytest.raises(openai.InternalServerError):
            await call()
        await client.close()
        assert 9 == server.hits[CHAT]

    async def test_openai_client_sends_one_request_per_attempt(self, server):
        """After: openai_client, 3 attempts: 3 requests."""
        p = llm(server)
        server.script(CHAT, provider_error(503, "busy"))
        async with openai_client(p) as client:
            with pytest.raises(openai.InternalServerError):
                await ask(client)
        assert 3 == server.hits[CHAT]


class TestOpenAI2:
    def test_every_scenario_passes_with_openai_2(self):
        """The scenarios above, in a child process with openai 2.x."""
        if not CHILD_PYTHON.exists():
            unavailable(
                "the openai 2.x virtualenv .venv-openai2",
                "scripts/test creates it",
            )
        env = dict(os.environ)
        done = subprocess.run(
            [
                str(CHILD_PYTHON),
                "-c",
                (
                    "import openai, sys; print(openai.__version__); "
                    "import pytest; sys.exit(pytest.main(sys.argv[1:]))"
                ),
                "-q",
                "-p",
                "no:cacheprovider",
                str(Path(__file__)),
                "-k",
                "not TestOpenAI2",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        output = done.stdout + done.stderr
        version = done.stdout.splitlines()[0] if done.stdout else ""
        passed = re.search(r"(\d+) passed", output)
        here = len(
            [
                name
                for cls in (
                    TestWiring,
                    TestVerdicts,
                    TestStreaming,
                    TestSync,
                    TestRequestsPerCall,
                )
                for name in vars(cls)
                if name.startswith("test_")
            ]
        )
        assert (0, "2", here) == (
            done.returncode,
            version.split(".")[0],
            int(passed.group(1)) if passed else 0,
        ), output[-3000:]

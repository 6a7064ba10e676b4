"""The real OpenAI SDK through a policy, against a local stand-in API."""

from __future__ import annotations

from typing import TYPE_CHECKING

import openai
import pytest
from sage_resilience import CircuitOpenError, configure, policy
from sage_resilience._config import load_config_text
from sage_resilience.openai import openai_client, sync_openai_client
from tests.support.http_servers import Response, StandInServer

if TYPE_CHECKING:
    from collections.abc import Iterator

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hi"}]
#: SiliconFlow's error body for an unknown model.
UNKNOWN_MODEL = {
    "code": 20012,
    "message": "Model does not exist. Please check it carefully.",
    "data": None,
}
OK = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1,
    "model": "Qwen/Qwen2.5-7B",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hello"},
            "finish_reason": "stop",
        }
    ],
}


@pytest.fixture
def server() -> Iterator[StandInServer]:
    with StandInServer() as s:
        yield s


@pytest.fixture
def llm(server, monkeypatch) -> str:
    monkeypatch.setenv("TEST_LLM_KEY", "sk-test-0123456789")
    configure(
        load_config_text(
            f"""
version: 1
policies:
  llm:
    kind: http
    failure_threshold: 5
    recovery_timeout: 60
    timeout: 2
    retry: {{attempts: 3, backoff: {{initial: 0.01, max: 0.05, jitter: 0}}}}
    settings: {{base_url: "{server.url}/v1", api_key_env: TEST_LLM_KEY}}
""",
            environ={},
            platform="linux",
        )
    )
    return "llm"


class TestAsyncClient:
    async def test_wired_to_the_policy(self, server, llm):
        """base_url, key, timeout, max_retries=0 come from the policy."""
        server.script(CHAT, Response(json=OK))
        client = openai_client(llm)
        try:
            reply = await client.chat.completions.create(
                model="Qwen/Qwen2.5-7B", messages=MESSAGES
            )
        finally:
            await client.close()
        assert "hello" == reply.choices[0].message.content
        assert 0 == client.max_retries
        assert 2 == client.timeout
        sent = server.requests[0]
        headers = {k.lower(): v for k, v in sent.headers.items()}
        assert "Bearer sk-test-0123456789" == headers["authorization"]
        assert 1 == policy(llm).status()["successes"]

    async def test_bad_request_is_the_sdks_and_uncounted(self, server, llm):
        """A 400 is BadRequestError with the provider's message: 1 request."""
        server.script(CHAT, Response(400, json=UNKNOWN_MODEL))
        client = openai_client(llm)
        try:
            with pytest.raises(openai.BadRequestError) as info:
                await client.chat.completions.create(
                    model="nope", messages=MESSAGES
                )
        finally:
            await client.close()
        assert "Model does not exist" in str(info.value)
        assert 1 == server.hits[CHAT]
        assert 0 == policy(llm).status()["failures"]

    async def test_unauthorized_is_uncounted(self, server, llm):
        """A 401 is AuthenticationError, not retried, not counted."""
        server.script(CHAT, Response(401, json={"message": "Invalid token"}))
        client = openai_client(llm)
        try:
            with pytest.raises(openai.AuthenticationError):
                await client.chat.completions.create(
                    model="x", messages=MESSAGES
                )
        finally:
            await client.close()
        assert 1 == server.hits[CHAT]
        assert "closed" == policy(llm).state

    async def test_outage_costs_attempts_requests_then_none(self, server, llm):
        """503: 3 requests per call (not 9), then refused without sending."""
        server.script(CHAT, Response(503, json={"message": "busy"}))
        client = openai_client(llm)
        try:
            with pytest.raises(openai.InternalServerError):
                await client.chat.completions.create(
                    model="x", messages=MESSAGES
                )
            assert 3 == server.hits[CHAT]
            with pytest.raises(CircuitOpenError):
                await client.chat.completions.create(
                    model="x", messages=MESSAGES
                )
            assert 5 == server.hits[CHAT]  # opened at the 5th failure
            with pytest.raises(CircuitOpenError):
                await client.chat.completions.create(
                    model="x", messages=MESSAGES
                )
            assert 5 == server.hits[CHAT]
        finally:
            await client.close()

    async def test_rate_limit_keeps_it_open_as_asked(self, server, llm):
        """429 with Retry-After: honoured between attempts and when open."""
        server.script(
            CHAT,
            Response(
                429, json={"message": "slow"}, headers={"Retry-After": "7"}
            ),
        )
        client = openai_client(llm)
        try:
            for _ in range(2):
                with pytest.raises((openai.RateLimitError, CircuitOpenError)):
                    await client.chat.completions.create(
                        model="x", messages=MESSAGES
                    )
        finally:
            await client.close()
        status = policy(llm).status()
        assert "open" == status["state"]
        assert 7 == status["current_recovery_timeout"]

    def test_missing_key_is_a_clear_error(self, llm, monkeypatch):
        """No key in the named variable: ValueError naming it."""
        monkeypatch.delenv("TEST_LLM_KEY")
        with pytest.raises(ValueError, match="TEST_LLM_KEY"):
            openai_client(llm)


class TestSyncClient:
    def test_sync_client_goes_through_the_policy(self, server, llm):
        """OpenAI (sync): the same wiring, counted failures on 503."""
        server.script(CHAT, [Response(503), Response(json=OK)])
        with sync_openai_client(llm) as client:
            reply = client.chat.completions.create(
                model="x", messages=MESSAGES
            )
        assert "hello" == reply.choices[0].message.content
        assert 2 == server.hits[CHAT]
        assert 1 == policy(llm).status()["failures"]

"""Requests and seconds per user call into an outage, with the openai SDK.

Run: ``python benchmarks/openai_calls.py`` (needs the ``dev`` extra; it
serves an OpenAI-compatible stand-in on 127.0.0.1).

Two ways to put a chat completion under a policy of 3 attempts:

- before: the plain SDK (default ``max_retries=2``) inside ``@policy``;
- after: ``openai_client(policy)`` (``max_retries=0``, the policy's
  transport).

Two outages: every request answered 503, and a server that never answers.
For the hang, the bound is 1.5 s per request: the SDK's ``timeout`` before
(the policy without a timeout of its own, so that it does not cut the
SDK's retries short), the policy's ``timeout`` after (``openai_client``
hands it to the SDK). Retry waits are the real ones (the
SDK's backoff, the policy's ``backoff``), shortened in the policy to
``initial: 0.1, max: 0.5``. One call per case: the figures are counts
first, seconds only as an indication.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sage_resilience import Policy, PolicyConfig
from sage_resilience.openai import openai_client
from tests.support.http_servers import Response, StandInServer
from tests.support.openai_server import CHAT, MODEL, provider_error

TIMEOUT = 1.5
MESSAGES = [{"role": "user", "content": "hi"}]


def make_policy(url: str, timeout: float | None) -> Policy:
    return Policy(
        "llm",
        PolicyConfig.model_validate(
            {
                "kind": "http",
                "failure_threshold": 100,
                "timeout": timeout,
                "retry": {
                    "attempts": 3,
                    "backoff": {"initial": 0.1, "max": 0.5, "jitter": 0},
                },
                "settings": {"base_url": url + "/v1"},
            }
        ),
    )


async def one_call(way: str, server: StandInServer) -> tuple[int, float]:
    p = make_policy(server.url, None if way == "before" else TIMEOUT)
    if way == "before":
        client = openai.AsyncOpenAI(
            base_url=server.url + "/v1", api_key="sk-bench", timeout=TIMEOUT
        )
    else:
        client = openai_client(p, api_key="sk-bench")
    before = server.hits[CHAT]
    started = time.perf_counter()
    try:
        if way == "before":
            await p.acall(
                client.chat.completions.create, model=MODEL, messages=MESSAGES
            )
        else:
            await client.chat.completions.create(
                model=MODEL, messages=MESSAGES
            )
    except Exception:
        pass
    elapsed = time.perf_counter() - started
    await client.close()
    return server.hits[CHAT] - before, elapsed


async def main() -> None:
    print(
        f"openai {openai.__version__}; policy: 3 attempts, timeout {TIMEOUT}s"
    )
    print(f"{'outage':<8} {'way':<7} {'requests':>8} {'seconds':>8}")
    outages = {
        "503": provider_error(503, "busy"),
        "hang": Response(200, delay=30),
    }
    for outage, answer in outages.items():
        for way in ("before", "after"):
            with StandInServer() as server:
                server.script(CHAT, answer)
                hits, elapsed = await one_call(way, server)
            print(f"{outage:<8} {way:<7} {hits:>8} {elapsed:>8.1f}")


if __name__ == "__main__":
    asyncio.run(main())

"""What redaction costs per failure, whatever the failure's message.

Every counted failure describes its error for ``last_failure`` and the
events (``describe_failure``: first line, cut, redacted), under the gate's
lock and on the event loop. Two figures per kind of message, median of
the trials:

- ``describe``: one ``describe_failure(exc)``;
- ``loop``: how long one failing ``await p.acall(f)`` with two attempts
  (a retry scheduled, then exhausted) keeps the event loop busy.

Kinds: a short refusal, a message holding a URL password and a token, 100k
letters in one word (the old URL-password pattern was quadratic on it),
10 MB of words (redacted before being cut, once), and the runs that make
a backtracking pattern work hardest, cut to 8 KB.

    python benchmarks/redact.py [--trials 5] [--cases short,letters_100k]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from typing import Any

import structlog
from sage_resilience import Policy, PolicyConfig
from sage_resilience._breaker import describe_failure

#: Runs that make a backtracking pattern work hardest (100k characters).
ADVERSARIAL = {
    "run_url_colon": "a://b:",
    "run_url_at": "a://:@",
    "run_password_eq": "password=",
    "run_password_quote": 'password:"',
    "run_bearer": "bearer ",
    "run_query_key": "?key=",
    "run_api_key": "API key: ",
    "run_jwt": "eyJaaaaa.",
}


def _messages() -> dict[str, str]:
    cases = {
        "short": "[Errno 111] Connect call failed ('127.0.0.1', 5432)",
        "secrets": "cannot reach postgresql://sage:p@ss/w0rd@db:5432/sage "
        "with Authorization: Bearer sk-proj-abcdefgh12345678 (401)",
        "letters_100k": "a" * 100_000,
        "words_10mb": "it failed: x=1, see http://h/p " * 320_000,
    }
    for name, unit in ADVERSARIAL.items():
        cases[name] = unit * (100_000 // len(unit))
    return cases


class BoomError(ConnectionError):
    pass


def _policy() -> Policy:
    config = PolicyConfig.model_validate(
        {
            "failure_threshold": 1_000_000,
            "retry": {
                "attempts": 2,
                "backoff": {"initial": 0, "max": 0, "jitter": 0},
            },
        }
    )
    return Policy("bench", config)


async def _loop_times(exc: BaseException, trials: int) -> list[float]:
    """Seconds each failing call kept this event loop busy."""
    policy = _policy()

    async def fail() -> None:
        raise exc

    times = []
    for _ in range(trials):
        start = time.perf_counter()
        try:
            await policy.acall(fail)  # no await yields: all of it blocks
        except BoomError:
            pass
        times.append(time.perf_counter() - start)
    return times


def measure(text: str, trials: int) -> dict[str, float]:
    """Median seconds of describe_failure and of one failing call."""
    exc = BoomError(text)
    described = []
    for _ in range(trials):
        start = time.perf_counter()
        describe_failure(exc)
        described.append(time.perf_counter() - start)
    loop = asyncio.run(_loop_times(exc, trials))
    return {
        "describe": statistics.median(described),
        "loop": statistics.median(loop),
    }


def _show(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def main() -> None:
    """Print one line per kind of message."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--cases", help="comma-separated kinds; default all")
    args = parser.parse_args()
    # The events are formatted but go nowhere: the cost measured is the
    # library's, not a log sink's.
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.ReturnLoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    messages = _messages()
    wanted: list[Any] = args.cases.split(",") if args.cases else list(messages)
    print(f"{'message':<18}{'chars':>11}{'describe':>12}{'loop':>12}")
    for name in wanted:
        text = messages[name]
        figures = measure(text, args.trials)
        print(
            f"{name:<18}{len(text):>11,}{_show(figures['describe']):>12}"
            f"{_show(figures['loop']):>12}",
            flush=True,
        )


if __name__ == "__main__":
    main()

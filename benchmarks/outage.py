"""A dependency outage under load: five ways to call it, side by side.

A real HTTP dependency (an asyncio server in a child process, on
127.0.0.1) serves steady concurrent load, goes down for ``--down`` seconds,
then comes back. The same scenario runs once per client:

  a  no protection            httpx, raise_for_status()
  b  naive tenacity           (a) retried: 3 attempts, exponential backoff
  c  pybreaker + tenacity     pybreaker (fail_max 5, reset_timeout 2)
                              wrapping (b) with ``breaker.calling()``
  d  sage_resilience policy   ResilientTransport: failure_threshold 5,
                              recovery_timeout 2, half_open_max_calls 1,
                              attempts 3 (same backoff as b)
  e  the same policy          around the whole httpx call (policy.acall),
                              outside the client like pybreaker in (c):
                              its refusals skip httpx's request building

Reported per client: requests sent into the outage (attempts that started
while the dependency was down, retries and probes included, counted where
the request leaves the client), requests already in flight when it went
down, what the server itself saw while down, p50/p99 latency of failed
calls and of untried refusals (calls refused with nothing sent: the
fail-fast path of the breakers), and the time from the dependency's
recovery to the first success. Then the goals for (d) and (e):

  sent into the outage <= failure_threshold
                          + half_open_max_calls * ceil(down / recovery_timeout)
  p99 of untried refusals during the outage < 1 ms
  recovery to first success <= recovery_timeout + one probe

Latencies are wall-clock times of whole calls: on a busy machine they
include the time the process waits for a CPU.

Usage::

    python benchmarks/outage.py [--down 6] [--concurrency 50] [--rate 100]
        [--mode 503|refuse|hang] [--only abcde] [--json]

Modes: ``503`` the server answers 503 at once (default; exact server-side
counts), ``refuse`` it stops listening (connections refused),
``hang`` it accepts and never answers (every attempt waits for the 1 s
timeout: no breaker can know of the outage before the first timeout, so
every caller in flight at that moment is sent into it). Linux and macOS.
The default run takes about 55 s; exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import math
import socket
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import pybreaker
import structlog
import tenacity
from sage_resilience import CircuitOpenError, Policy, PolicyConfig
from sage_resilience.http import ResilientTransport

HOST = "127.0.0.1"
TIMEOUT = 1.0
FAILURE_THRESHOLD = 5
RECOVERY_TIMEOUT = 2.0
HALF_OPEN_MAX_CALLS = 1
ATTEMPTS = 3
BACKOFF = {"initial": 0.1, "multiplier": 2, "max": 1.0, "jitter": 0.1}
#: The scenarios that use a sage_resilience policy (goals are checked).
POLICY_KEYS = ("d", "e")

# -- the dependency (child process) -------------------------------------------


class _Dependency:
    """A minimal keep-alive HTTP/1.1 server whose health is switchable."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.mode = "up"
        self.hits: Counter[str] = Counter()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.released = asyncio.Event()

    async def listen(self) -> None:
        self.server = await asyncio.start_server(
            self.handle, HOST, self.port, reuse_address=True, backlog=4096
        )

    def cut(self) -> None:
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    async def set_mode(self, mode: str) -> int:
        """Switch; return the requests received in the mode just left."""
        previous, self.mode = self.mode, mode
        seen = self.hits.pop(previous, 0)
        self.released.set()
        self.released = asyncio.Event()
        if previous == "hang":
            self.cut()
        if mode == "refuse" and self.server is not None:
            self.server.close()
            self.server = None
            self.cut()
        if mode != "refuse" and self.server is None:
            await self.listen()
        return seen

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                mode = self.mode
                self.hits[mode] += 1
                if mode == "hang":
                    await self.released.wait()
                    return
                if mode == "up":
                    status, body = b"200 OK", b'{"ok":true}'
                else:
                    status, body = b"503 Service Unavailable", b'{"down":1}'
                writer.write(
                    b"HTTP/1.1 " + status + b"\r\nContent-Type: "
                    b"application/json\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()


async def _serve() -> None:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    dependency = _Dependency(port)
    await dependency.listen()
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(commands), sys.stdin
    )
    print(f"ready {port}", flush=True)
    while line := await commands.readline():
        seen = await dependency.set_mode(line.decode().strip())
        print(f"ok {seen}", flush=True)


class Dependency:
    """The controller's handle on the child process."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.url = f"http://{HOST}:{port}"

    @classmethod
    async def start(cls) -> Dependency:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        return cls(proc, int(line.split()[1]))

    async def set_mode(self, mode: str) -> int:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(mode.encode() + b"\n")
        await self.proc.stdin.drain()
        return int((await self.proc.stdout.readline()).split()[1])

    async def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


# -- the clients ----------------------------------------------------------------


#: Requests sent by the current call (each worker task has its own).
SENT_BY_CALL: contextvars.ContextVar[list[int]] = contextvars.ContextVar(
    "SENT_BY_CALL"
)


class Counting(httpx.AsyncBaseTransport):
    """Where a request leaves the client: counts attempts and in-flight."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=200)
        )
        self.sent: list[float] = []
        self.in_flight = 0

    async def handle_async_request(
        self, request: httpx.Request
    ) -> httpx.Response:
        self.sent.append(time.perf_counter())
        SENT_BY_CALL.get()[0] += 1
        self.in_flight += 1
        try:
            return await self.inner.handle_async_request(request)
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


def _retrying() -> tenacity.AsyncRetrying:
    return tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(ATTEMPTS),
        wait=tenacity.wait_exponential_jitter(
            multiplier=BACKOFF["initial"],
            exp_base=BACKOFF["multiplier"],
            max=BACKOFF["max"],
            jitter=BACKOFF["jitter"],
        ),
        reraise=True,
    )


@dataclass
class Client:
    """One way of calling the dependency."""

    key: str
    label: str
    transport: Counting
    client: httpx.AsyncClient
    call: Any
    rejection: tuple[type[BaseException], ...] = ()
    policy: Policy | None = None


def _policy() -> Policy:
    return Policy(
        "dependency",
        PolicyConfig.model_validate(
            {
                "failure_threshold": FAILURE_THRESHOLD,
                "recovery_timeout": RECOVERY_TIMEOUT,
                "half_open_max_calls": HALF_OPEN_MAX_CALLS,
                "timeout": TIMEOUT,
                "retry": {"attempts": ATTEMPTS, "backoff": BACKOFF},
            }
        ),
    )


def make_client(key: str, url: str) -> Client:
    counting = Counting()
    if key == "d":
        policy = _policy()
        client = httpx.AsyncClient(
            base_url=url,
            timeout=TIMEOUT,
            transport=ResilientTransport(policy, counting),
        )

        async def call_d() -> None:
            (await client.get("/work")).raise_for_status()

        return Client(
            key,
            "sage_resilience policy",
            counting,
            client,
            call_d,
            (CircuitOpenError,),
            policy,
        )

    client = httpx.AsyncClient(
        base_url=url, timeout=TIMEOUT, transport=counting
    )

    async def call_a() -> None:
        (await client.get("/work")).raise_for_status()

    async def call_b() -> None:
        async for attempt in _retrying():
            with attempt:
                await call_a()

    if key == "a":
        return Client(key, "no protection", counting, client, call_a)
    if key == "e":
        policy = _policy()

        async def call_e() -> None:
            await policy.acall(call_a)

        return Client(
            key,
            "policy around the call",
            counting,
            client,
            call_e,
            (CircuitOpenError,),
            policy,
        )
    if key == "b":
        return Client(key, "naive tenacity (3)", counting, client, call_b)
    breaker = pybreaker.CircuitBreaker(
        fail_max=FAILURE_THRESHOLD, reset_timeout=RECOVERY_TIMEOUT
    )

    async def call_c() -> None:
        with breaker.calling():
            await call_b()

    return Client(
        key,
        "pybreaker + tenacity",
        counting,
        client,
        call_c,
        (pybreaker.CircuitBreakerError,),
    )


# -- one scenario ----------------------------------------------------------------


@dataclass
class Outcome:
    started: float
    ended: float
    kind: str  # ok | failed | refused (refused with nothing sent)


@dataclass
class Result:
    key: str
    label: str
    calls: int = 0
    ok: int = 0
    failed: int = 0
    rejected: int = 0
    sent_into_outage: int = 0
    in_flight_at_outage: int = 0
    server_saw_while_down: int | None = None
    failed_p50_ms: float | None = None
    failed_p99_ms: float | None = None
    rejected_p50_ms: float | None = None
    rejected_p99_ms: float | None = None
    probe_ms: float | None = None
    recovery_s: float | None = None
    events: dict[str, int] = field(default_factory=dict)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[rank]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


async def _worker(
    c: Client, interval: float, offset: float, until: float, out: list[Outcome]
) -> None:
    # Workers are spread over the interval: a steady load, not bursts.
    await asyncio.sleep(offset)
    loop = asyncio.get_running_loop()
    tick = loop.time()
    sent = [0]
    SENT_BY_CALL.set(sent)
    while time.perf_counter() < until:
        sent[0] = 0
        started = time.perf_counter()
        try:
            await c.call()
        except c.rejection:
            # Refused before anything was sent: the fail-fast path. A
            # refusal after attempts were sent (retrying stopped because
            # the circuit opened) is a failed call like any other.
            kind = "refused" if sent[0] == 0 else "failed"
        except Exception:
            kind = "failed"
        else:
            kind = "ok"
        out.append(Outcome(started, time.perf_counter(), kind))
        tick += interval
        delay = tick - loop.time()
        if delay <= 0:
            tick = loop.time()
            delay = 0
        await asyncio.sleep(delay)


async def run_scenario(
    key: str, dep: Dependency, args: argparse.Namespace, tally: Counter[str]
) -> Result:
    c = make_client(key, dep.url)
    interval = args.concurrency / args.rate
    outcomes: list[Outcome] = []
    tally.clear()
    start = time.perf_counter()
    until = start + args.before + args.down + args.after
    workers = [
        asyncio.create_task(
            _worker(
                c, interval, i * interval / args.concurrency, until, outcomes
            )
        )
        for i in range(args.concurrency)
    ]
    await asyncio.sleep(args.before)
    in_flight = c.transport.in_flight
    await dep.set_mode(args.mode)
    down_at = time.perf_counter()
    await asyncio.sleep(args.down)
    seen_down = await dep.set_mode("up")
    up_at = time.perf_counter()
    await asyncio.gather(*workers)
    await c.client.aclose()

    result = Result(key, c.label)
    result.calls = len(outcomes)
    result.ok = sum(o.kind == "ok" for o in outcomes)
    result.failed = sum(o.kind == "failed" for o in outcomes)
    result.rejected = sum(o.kind == "refused" for o in outcomes)
    result.sent_into_outage = sum(
        down_at <= t < up_at for t in c.transport.sent
    )
    result.in_flight_at_outage = in_flight
    if args.mode != "refuse":
        result.server_saw_while_down = seen_down
    failed = [
        o.ended - o.started
        for o in outcomes
        if o.kind != "ok" and down_at <= o.started < up_at
    ]
    rejected = [
        o.ended - o.started
        for o in outcomes
        if o.kind == "refused" and down_at <= o.started < up_at
    ]
    result.failed_p50_ms = _ms(_percentile(failed, 0.5))
    result.failed_p99_ms = _ms(_percentile(failed, 0.99))
    result.rejected_p50_ms = _ms(_percentile(rejected, 0.5))
    result.rejected_p99_ms = _ms(_percentile(rejected, 0.99))
    recovered = [o for o in outcomes if o.kind == "ok" and o.ended >= up_at]
    if recovered:
        first = min(recovered, key=lambda o: o.ended)
        result.recovery_s = round(first.ended - up_at, 3)
        result.probe_ms = _ms(first.ended - first.started)
    result.events = dict(tally)
    return result


# -- report ----------------------------------------------------------------------


def goals(result: Result, down: float) -> list[tuple[str, bool, str]]:
    bound = FAILURE_THRESHOLD + HALF_OPEN_MAX_CALLS * math.ceil(
        down / RECOVERY_TIMEOUT
    )
    checks = [
        (
            (
                "sent into the outage <= failure_threshold + "
                "half_open_max_calls x ceil(down / recovery_timeout)"
            ),
            result.sent_into_outage <= bound,
            f"{result.sent_into_outage} <= {bound}",
        ),
        (
            "p99 of refusals while open (nothing sent) < 1 ms",
            result.rejected_p99_ms is not None and result.rejected_p99_ms < 1,
            f"{result.rejected_p99_ms} ms",
        ),
    ]
    limit = None
    if result.recovery_s is not None and result.probe_ms is not None:
        limit = RECOVERY_TIMEOUT + result.probe_ms / 1000
    checks.append(
        (
            "recovery to first success <= recovery_timeout + one probe",
            limit is not None
            and result.recovery_s is not None
            and result.recovery_s <= limit,
            f"{result.recovery_s} s <= {limit and round(limit, 3)} s",
        )
    )
    return checks


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"\noutage: mode {args.mode}, down {args.down:g} s, concurrency "
        f"{args.concurrency}, target {args.rate:g} req/s, timeout "
        f"{TIMEOUT:g} s\n"
    )
    rows = [
        ("client", [f"({r.key}) {r.label}" for r in results]),
        ("calls (ok / failed / refused untried)", [
            f"{r.calls} ({r.ok} / {r.failed} / {r.rejected})" for r in results
        ]),
        ("sent into the outage", [r.sent_into_outage for r in results]),
        ("in flight when it went down", [
            r.in_flight_at_outage for r in results
        ]),
        ("server saw while down", [r.server_saw_while_down for r in results]),
        ("failed calls p50 ms", [r.failed_p50_ms for r in results]),
        ("failed calls p99 ms", [r.failed_p99_ms for r in results]),
        ("untried refusals p50 ms", [r.rejected_p50_ms for r in results]),
        ("untried refusals p99 ms", [r.rejected_p99_ms for r in results]),
        ("recovery to first success s", [r.recovery_s for r in results]),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    cols = [
        max(len(_cell(row[1][i])) for row in rows) for i in range(len(results))
    ]
    for name, values in rows:
        cells = "  ".join(
            _cell(v).rjust(w) for v, w in zip(values, cols, strict=True)
        )
        print(f"{name.ljust(width)}  {cells}")


async def main_async(args: argparse.Namespace) -> int:
    tally: Counter[str] = Counter()

    def count_and_drop(_: Any, __: str, event: dict[str, Any]) -> Any:
        tally[event["event"]] += 1
        raise structlog.DropEvent

    structlog.configure(processors=[count_and_drop])
    dep = await Dependency.start()
    results = []
    try:
        for key in args.only:
            print(f"running ({key}) ...", file=sys.stderr, flush=True)
            results.append(await run_scenario(key, dep, args, tally))
    finally:
        await dep.stop()
    checked = {
        r.key: goals(r, args.down) for r in results if r.key in POLICY_KEYS
    }
    met = all(ok for found in checked.values() for _, ok, _ in found)
    if args.json:
        payload: dict[str, Any] = {
            "results": [asdict(r) for r in results],
            "goals": {
                key: [
                    {"goal": g, "met": ok, "measured": m} for g, ok, m in found
                ]
                for key, found in checked.items()
            },
        }
        print(json.dumps(payload, indent=2))
        return 0 if met else 1
    print_table(results, args)
    by_key = {r.key: r for r in results}
    for key, found in checked.items():
        print(f"\ngoals for ({key}):")
        for goal, ok, measured in found:
            print(f"  [{'met' if ok else 'MISSED'}] {goal}: {measured}")
        print(f"  events: {by_key[key].events}")
    return 0 if met else 1


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--down", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="target calls/s, all workers",
    )
    parser.add_argument("--before", type=float, default=1.0)
    parser.add_argument("--after", type=float, default=3.0)
    parser.add_argument(
        "--mode", choices=("503", "refuse", "hang"), default="503"
    )
    parser.add_argument("--only", default="abcde")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> int:
    args = parse()
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve())
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())

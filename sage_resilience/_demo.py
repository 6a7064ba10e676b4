"""``sage-resilience demo``: a scripted outage and recovery, all local.

Stand-ins, started and stopped here, on loopback or a Unix socket only:

* an OpenAI-compatible chat/embeddings API (asyncio, in process) whose
  behaviour the script switches: a 400 for a bad model name, then 503s (an
  outage), then answers again; and a partly failing, slow embeddings
  endpoint for the rate-tripping scene;
* PostgreSQL with pgvector (the ``pgserver`` package), stopped and
  restarted mid-run.

Every policy event is printed (the CLI configures structlog: one readable
line per event on a terminal, JSON lines otherwise), the demo's own
narration as ``demo_step`` events, and a status table ends the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import structlog

from sage_resilience._config import load_config
from sage_resilience._registry import configure, policy
from sage_resilience._terminal import aligned, printable
from sage_resilience.exceptions import CircuitOpenError
from sage_resilience.status import breaker_status

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from sage_resilience._config import ResilienceConfig

__all__ = ["run_demo"]

log = structlog.get_logger("sage_resilience.demo")

#: How long the demo's circuits stay open (the shipped ones: 30-120 s).
RECOVERY = 1.5

#: The first Python the demo extra leaves pgserver out on (no wheel yet;
#: the marker in pyproject.toml says the same).
_PGSERVER_UNTIL = (3, 13)


# -- the API stand-in -----------------------------------------------------


class ApiStandIn:
    """An OpenAI-compatible API on 127.0.0.1 whose mood the script sets."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.hits = 0
        self.embedding_calls = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, host="127.0.0.1", port=0
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                request = await reader.readline()
                if not request:
                    break
                length = 0
                while (line := await reader.readline()) not in {b"\r\n", b""}:
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length) if length else b""
                path = request.split()[1].decode()
                status, payload, delay = self._answer(path, body)
                if delay:
                    await asyncio.sleep(delay)
                data = json.dumps(payload).encode()
                head = (
                    f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                    "Content-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\n"
                )
                if status == 503:
                    head += "Retry-After: 0.1\r\n"
                writer.write(head.encode() + b"\r\n" + data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, IndexError):
            pass
        finally:
            writer.close()

    def _answer(self, path: str, body: bytes) -> tuple[int, Any, float]:
        self.hits += 1
        if path.endswith("/embeddings"):
            self.embedding_calls += 1
            n = self.embedding_calls
            if n % 5 in {1, 3}:  # 40 % fail
                return 500, {"message": "upstream overloaded"}, 0.0
            # ... and every success is slow.
            return 200, {"data": [{"embedding": [0.1, 0.2, 0.3]}]}, 0.25
        if self.mode == "down":
            return 503, {"message": "service unavailable"}, 0.0
        request = json.loads(body or b"{}")
        if request.get("model") == "bad-model":
            return (
                400,
                {
                    "code": 20012,
                    "message": "Model does not exist. Please check it "
                    "carefully.",
                    "data": None,
                },
                0.0,
            )
        return (
            200,
            {
                "id": "chatcmpl-demo",
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Hello!"},
                        "finish_reason": "stop",
                    }
                ],
            },
            0.0,
        )


_REASONS = {
    200: "OK",
    400: "Bad Request",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


# -- the PostgreSQL stand-in ------------------------------------------------


class PostgresStandIn:
    """pgserver's PostgreSQL + pgvector, which the script stops and starts."""

    def __init__(self, directory: Path) -> None:
        import pgserver  # noqa: PLC0415 - optional (extra "demo")

        self._pgserver = pgserver
        self.pgdata = directory / "pgdata"
        self.server = pgserver.get_server(  # type: ignore[attr-defined]
            self.pgdata, cleanup_mode="delete"
        )
        info = self.server.get_postmaster_info()
        assert info.socket_path is not None
        self.socket_dir = str(info.socket_path.parent)
        self.port = _free_port()
        self._bin = Path(pgserver.__file__).parent / "pginstall" / "bin"
        # pgserver listens on a Unix socket only; Sage talks TCP.
        self.stop()
        self.start()

    def _pg_ctl(self, *args: str) -> None:
        command = [str(self._bin / "pg_ctl"), "-D", str(self.pgdata), *args]
        user = self.server.system_user
        if user is not None:
            command = ["runuser", "-u", user, "--", *command]
        subprocess.run(  # noqa: S603 - our own pg_ctl, fixed arguments
            command, capture_output=True, check=True, timeout=60
        )

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        self._pg_ctl(
            "-w",
            "-o",
            f"-h 127.0.0.1 -p {self.port} -k {self.socket_dir}",
            "-l",
            str(self.pgdata / "log"),
            "start",
        )

    def close(self) -> None:
        from pgserver.utils import PostmasterInfo  # noqa: PLC0415

        with contextlib.suppress(Exception):
            # Our restart left pgserver's view of the process stale.
            self.server._postmaster_info = PostmasterInfo.read_from_pgdata(
                self.pgdata
            )
        with contextlib.suppress(Exception):
            self.server.cleanup()


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the script -------------------------------------------------------------


def _config(api: ApiStandIn, pg: PostgresStandIn | None) -> ResilienceConfig:
    """The shipped configuration, pointed at the stand-ins and sped up."""
    base = load_config()
    fast_retry = {
        "attempts": 3,
        "backoff": {"initial": 0.05, "multiplier": 2, "max": 0.3, "jitter": 0},
    }
    overrides: dict[str, dict[str, Any]] = {
        "siliconflow_api": {
            "failure_threshold": 3,
            "recovery_timeout": RECOVERY,
            "timeout": 2,
            "retry": fast_retry,
            "settings": {"base_url": api.url},
        },
        "vectorizer": {
            "failure_threshold": 5,
            "recovery_timeout": RECOVERY,
            "timeout": 2,
            "retry": {"attempts": 1},
            "trip": {
                "failure_rate": 0.6,
                "minimum_calls": 10,
                "window": 30,
                "slow_call_duration": 0.2,
                "slow_call_rate": 0.5,  # 60 % of the calls are slow
            },
            "settings": {"base_url": api.url},
        },
        "database_connection": {
            "failure_threshold": 3,
            "recovery_timeout": RECOVERY,
            "timeout": 2,
            "retry": {**fast_retry, "attempts": 2},
            "settings": {
                "host": "127.0.0.1",
                "port": pg.port if pg else 5432,
                "database": "postgres",
                "user": "postgres",
            },
        },
    }
    policies = {}
    for name, resolved in base.policies.items():
        merged = resolved.model_dump()
        for key, value in overrides.get(name, {}).items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        policies[name] = type(resolved).model_validate(merged)
    return base.model_copy(update={"policies": policies, "path": "<demo>"})


def _step(number: int, title: str, **details: Any) -> None:
    log.info("demo_step", step=number, title=title, **details)


async def _chat(client: Any, model: str) -> Any:
    response = await client.post(
        "/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    )
    return response.raise_for_status()


async def _api_scenes(api: ApiStandIn) -> None:
    import httpx  # noqa: PLC0415

    from sage_resilience._diagnosis.describe import diagnose  # noqa: PLC0415

    api_policy = policy("siliconflow_api")
    async with httpx.AsyncClient(base_url=api.url, timeout=5) as client:
        _step(1, "API: a bad model name is the caller's fault")
        try:
            await api_policy.acall(_chat, client, "bad-model")
        except httpx.HTTPStatusError as exc:
            found = diagnose(exc, policy=api_policy)
            _step(
                1,
                "400 passed straight through; the circuit stays closed",
                state=api_policy.state,
                cause=found.cause,
                explanation=found.explanation,
                fix=found.fix,
            )

        _step(2, "API: the provider goes down (503 with Retry-After)")
        api.mode = "down"
        hits_before = api.hits
        for _ in range(5):
            try:
                await api_policy.acall(_chat, client, "Qwen/Qwen2.5-7B")
            except CircuitOpenError as exc:
                found = diagnose(exc, policy=api_policy)
                _step(
                    2,
                    "the breaker refused the call (not the provider)",
                    error=str(exc),
                    cause=found.cause,
                    last_cause=found.details.get("last_cause"),
                )
            except httpx.HTTPStatusError as exc:
                _step(
                    2, "the provider answered", status=exc.response.status_code
                )
        _step(
            2,
            "requests that reached the dead API",
            hits=api.hits - hits_before,
            state=api_policy.state,
        )

        _step(
            3,
            "API: the provider recovers; after recovery_timeout a "
            "probe closes the circuit",
        )
        api.mode = "ok"
        await asyncio.sleep(RECOVERY)
        response = await api_policy.acall(_chat, client, "Qwen/Qwen2.5-7B")
        _step(
            3, "recovered", status=response.status_code, state=api_policy.state
        )


async def _rate_scene(api: ApiStandIn) -> None:
    import httpx  # noqa: PLC0415

    vectorizer = policy("vectorizer")

    async def embed(client: httpx.AsyncClient) -> Any:
        response = await client.post("/embeddings", json={"input": "memo"})
        return response.raise_for_status()

    _step(
        4,
        "embeddings: 40 % of calls fail and every success is slow - never "
        "5 failures in a row, but the slow-call rate trips the circuit",
    )
    outcomes: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=api.url, timeout=5) as client:
        for _ in range(20):
            try:
                await vectorizer.acall(embed, client)
                key = "ok"
            except CircuitOpenError:
                key = "refused"
            except httpx.HTTPStatusError:
                key = "failed"
            outcomes[key] = outcomes.get(key, 0) + 1
    _step(4, "embeddings outcomes", state=vectorizer.state, **outcomes)


async def _database_scenes(pg: PostgresStandIn) -> None:
    import asyncpg  # noqa: PLC0415

    db = policy("database_connection")
    settings = db.config.settings

    async def connect() -> Any:
        return await asyncpg.connect(
            host=settings["host"],
            port=settings["port"],
            user=settings["user"],
            database=settings["database"],
        )

    _step(5, "database: store a memory with its embedding (pgvector)")
    conn = await db.acall(connect)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS memories "
            "(id serial PRIMARY KEY, text text, embedding vector(3))"
        )
        await conn.execute(
            "INSERT INTO memories (text, embedding) VALUES ($1, $2)",
            "the user likes tea",
            "[0.1,0.2,0.3]",
        )
        count = await conn.fetchval("SELECT count(*) FROM memories")
    finally:
        await conn.close()
    _step(5, "stored", memories=count)

    _step(6, "database: PostgreSQL is stopped")
    await asyncio.to_thread(pg.stop)
    for _ in range(4):
        try:
            conn = await db.acall(connect)
            await conn.close()
        except CircuitOpenError as exc:
            _step(6, "the breaker refused to connect", error=str(exc))
        except OSError as exc:
            _step(6, "connecting failed", error=f"{type(exc).__name__}")
    _step(6, "database circuit", state=db.state)

    _step(7, "database: PostgreSQL is back; the next probe closes the circuit")
    await asyncio.to_thread(pg.start)
    await asyncio.sleep(RECOVERY)
    conn = await db.acall(connect)
    try:
        count = await conn.fetchval("SELECT count(*) FROM memories")
    finally:
        await conn.close()
    _step(7, "recovered", memories=count, state=db.state)


async def _run(quick: bool) -> None:
    api = ApiStandIn()
    await api.start()
    pg: PostgresStandIn | None = None
    with _workdir() as work:
        try:
            if not quick:
                _step(0, "starting PostgreSQL with pgvector (pgserver)")
                pg = await asyncio.to_thread(PostgresStandIn, work)
            configure(_config(api, pg))
            await _api_scenes(api)
            await _rate_scene(api)
            if pg is not None:
                await _database_scenes(pg)
        finally:
            await api.stop()
            if pg is not None:
                await asyncio.to_thread(pg.close)


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sage-resilience-demo-"))
    path.chmod(0o755)  # pgserver runs PostgreSQL as its own user when root
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def status_table(status: Mapping[str, Mapping[str, object]]) -> str:
    """A plain-text table of breaker statuses, control characters escaped."""
    columns = (
        ("breaker", "name"),
        ("state", "state"),
        ("fails", "failure_count"),
        ("calls", "calls"),
        ("ok", "successes"),
        ("failed", "failures"),
        ("refused", "rejections"),
        ("retries", "retries"),
        ("last failure", "last_failure"),
    )
    rows = [[title for title, _ in columns]]
    for entry in status.values():
        row = []
        for _, key in columns:
            value = entry.get(key)
            text = "-" if value is None else printable(str(value))
            row.append(text if len(text) <= 48 else text[:45] + "...")
        rows.append(row)
    return "\n".join(aligned(rows, rule=True))


def _missing(module: str | None, quick: bool) -> str:
    """What to do about *module* missing, for the demo's error line."""
    if module == "pgserver" and sys.version_info >= _PGSERVER_UNTIL:
        major, minor = _PGSERVER_UNTIL
        return (
            "pgserver is missing: it has no release for Python "
            f"{sys.version_info.major}.{sys.version_info.minor} yet (the demo "
            f"extra installs it up to {major}.{minor - 1}); run with --quick, "
            "which has no PostgreSQL part"
        )
    hint = "" if quick else " or run with --quick"
    return (
        f"{module} is missing; install the demo extra "
        f"(pip install 'sage-resilience[demo]'){hint}"
    )


def run_demo(*, quick: bool = False, table_to: IO[str] = sys.stdout) -> int:
    """Run the scripted outage and recovery; returns the exit code."""
    started = time.monotonic()
    # pgserver wants a runtime directory; containers often lack one.
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    needed = ["httpx"] if quick else ["httpx", "asyncpg", "pgserver"]
    for module in needed:
        try:
            __import__(module)
        except ImportError as exc:
            print(
                f"sage-resilience demo: {_missing(exc.name, quick)}",
                file=sys.stderr,
            )
            return 1
    asyncio.run(_run(quick))
    log.info("demo_finished", seconds=round(time.monotonic() - started, 1))
    print(file=table_to)
    print(status_table(breaker_status()), file=table_to)
    return 0

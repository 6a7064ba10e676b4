"""The drop-in for Sage's resilience package (sage_resilience.compat)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
import structlog
from sage_resilience import (
    CircuitOpenError,
    ConfigError,
    breaker_status,
    configure,
    policy,
)
from sage_resilience import compat as compat_module
from sage_resilience.compat import (
    DATABASE_RETRY_CONFIG,
    NETWORK_RETRY_CONFIG,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerOpenError,
    CircuitState,
    RetryConfig,
    RetryManager,
    RetryStrategy,
    breaker_manager,
    circuit_breaker,
    get_breaker_stats,
    retry,
)
from tests.support.pg import pgvector_cluster

ROOT = Path(__file__).resolve().parent.parent

PUBLIC = [
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakerManager",
    "CircuitBreakerOpenError",
    "CircuitState",
    "DATABASE_RETRY_CONFIG",
    "DEFAULT_RETRY_CONFIG",
    "NETWORK_RETRY_CONFIG",
    "RetryConfig",
    "RetryManager",
    "RetryStrategy",
    "breaker_manager",
    "circuit_breaker",
    "get_breaker_stats",
    "retry",
]


class Business(Exception):
    """Not a dependency failure for the old call site."""


class TestSurface:
    def test_all_is_exactly_the_contract(self):
        """compat.__all__ holds exactly Sage's names."""
        assert sorted(PUBLIC) == sorted(compat_module.__all__)

    def test_star_import_gives_them(self):
        """`from sage_resilience.compat import *` binds every name."""
        namespace: dict[str, object] = {}
        exec("from sage_resilience.compat import *", namespace)
        assert sorted(PUBLIC) == sorted(
            k for k in namespace if k != "__builtins__"
        )

    def test_open_error_from_a_message(self):
        """CircuitBreakerOpenError("...") works as Sage raised it."""
        error = CircuitBreakerOpenError("breaker 'db' is open")
        assert CircuitBreakerOpenError is CircuitOpenError
        assert "breaker 'db' is open" == str(error)
        assert error.policy is None
        assert 0 == error.retry_after

    def test_states_are_sages(self):
        """CircuitState values are Sage's, half_open with an underscore."""
        assert ["closed", "open", "half_open"] == [
            s.value for s in CircuitState
        ]

    def test_presets(self):
        """The three presets carry Sage's values."""
        assert 5 == DATABASE_RETRY_CONFIG.max_attempts
        assert 0.5 == DATABASE_RETRY_CONFIG.initial_delay
        assert 30.0 == DATABASE_RETRY_CONFIG.max_delay
        assert [
            ConnectionError,
            TimeoutError,
        ] == DATABASE_RETRY_CONFIG.retryable_exceptions
        assert (3, 1.0, 10.0) == (
            NETWORK_RETRY_CONFIG.max_attempts,
            NETWORK_RETRY_CONFIG.initial_delay,
            NETWORK_RETRY_CONFIG.max_delay,
        )


class TestCircuitBreaker:
    async def test_old_async_call_site_works(self):
        """The old decorator with its arguments opens after the threshold."""
        calls = 0

        @circuit_breaker("legacy_db", failure_threshold=2, recovery_timeout=30)
        async def get_connection() -> None:
            nonlocal calls
            calls += 1
            raise OSError("refused")

        for _ in range(2):
            with pytest.raises(OSError):
                await get_connection()
        with pytest.raises(CircuitBreakerOpenError):
            await get_connection()
        assert 2 == calls
        assert CircuitState.OPEN is get_connection.breaker.state
        stats = get_breaker_stats("legacy_db")
        assert 2 == stats["failure_threshold"]
        assert 30 == stats["recovery_timeout"]

    def test_old_sync_call_site_works(self):
        """Sync functions are decorated too, and show in breaker_status."""

        @circuit_breaker("legacy_cache", failure_threshold=1)
        def read() -> str:
            return "value"

        assert "value" == read()
        assert "closed" == get_breaker_stats("legacy_cache")["state"]
        assert "legacy_cache" in breaker_status()

    async def test_only_expected_exceptions_count(self):
        """Other exceptions pass through without counting."""

        @circuit_breaker(
            "api", failure_threshold=1, expected_exception=ConnectionError
        )
        async def call(exc: Exception) -> None:
            raise exc

        with pytest.raises(Business):
            await call(Business())
        assert "closed" == get_breaker_stats("api")["state"]
        with pytest.raises(ConnectionError):
            await call(ConnectionError())
        assert "open" == get_breaker_stats("api")["state"]

    async def test_breaker_object_and_manager(self):
        """CircuitBreaker, register, call, async_call, stats and resets."""
        cfg = CircuitBreakerConfig(failure_threshold=2)
        first = CircuitBreaker("test_database", cfg)
        second = CircuitBreaker("test_api", cfg)
        breaker_manager.register(first)
        breaker_manager.register(second)

        def fail() -> None:
            raise RuntimeError("simulated")

        async def ok() -> str:
            return "ok"

        assert "ok" == await first.async_call(ok)
        for _ in range(3):
            with pytest.raises((RuntimeError, CircuitOpenError)):
                first.call(fail)
        stats = {s["name"]: s for s in breaker_manager.get_all_stats()}
        assert "open" == stats["test_database"]["state"]
        assert 2 == stats["test_database"]["failure_count"]
        assert "closed" == stats["test_api"]["state"]
        assert {
            "name",
            "state",
            "failure_count",
            "success_count",
            "failure_rate_per_minute",
            "last_failure_time",
            "last_attempt_time",
        } == set(stats["test_database"])
        assert isinstance(stats["test_database"]["last_failure_time"], float)
        assert isinstance(stats["test_database"]["last_attempt_time"], float)

        breaker_manager.reset_all()
        assert CircuitState.CLOSED is first.state
        assert 0 == first.get_stats()["failure_count"]
        with pytest.raises(RuntimeError):
            second.call(fail)
        with pytest.raises(RuntimeError):
            second.call(fail)
        found = breaker_manager.get("test_api")
        assert found is second
        assert "open" == found.get_stats()["state"]
        found.reset()
        assert "closed" == found.get_stats()["state"]
        assert breaker_manager.get("no_such_breaker") is None

    def test_manager_lists_every_policy(self):
        """get_all_stats() has one entry per registered policy."""
        names = [s["name"] for s in breaker_manager.get_all_stats()]
        assert sorted(policy_names()) == names

    def test_half_open_state_is_sages(self, monkeypatch):
        """A half-open circuit reads as CircuitState.HALF_OPEN."""
        breaker = CircuitBreaker(
            "flaky", CircuitBreakerConfig(failure_threshold=1)
        )
        with pytest.raises(RuntimeError):
            breaker.call(_raise, RuntimeError("x"))
        p = breaker.policy
        p.breaker.half_open()
        assert CircuitState.HALF_OPEN is breaker.state
        assert "half_open" == breaker.get_stats()["state"]

    def test_failure_count_is_within_the_monitoring_window(self):
        """Failures older than monitoring_window leave failure_count."""
        breaker = CircuitBreaker(
            "windowed",
            CircuitBreakerConfig(failure_threshold=10, monitoring_window=0.05),
        )
        with pytest.raises(RuntimeError):
            breaker.call(_raise, RuntimeError("x"))
        assert 1 == breaker.get_stats()["failure_count"]
        import time  # noqa: PLC0415

        time.sleep(0.1)
        assert 0 == breaker.get_stats()["failure_count"]

    def test_callbacks_run_and_may_raise(self, events):
        """on_open/on_half_open/on_close run; a raising one is logged."""
        seen: list[str] = []

        def boom() -> None:
            seen.append("open")
            raise ValueError("callback bug")

        @circuit_breaker(
            "watched",
            failure_threshold=1,
            on_open=boom,
            on_half_open=lambda: seen.append("half_open"),
            on_close=lambda: seen.append("closed"),
        )
        def call(fail: bool) -> str:
            if fail:
                raise ConnectionError("down")
            return "ok"

        with pytest.raises(ConnectionError):
            call(True)
        assert CircuitState.OPEN is call.breaker.state
        call.breaker.policy.breaker.half_open()
        assert "ok" == call(False)
        assert ["open", "half_open", "closed"] == seen
        failed = [e for e in events if e["event"] == "callback_failed"]
        assert 1 == len(failed)
        assert "ValueError: callback bug" == failed[0]["error"]


def _raise(exc: BaseException) -> None:
    raise exc


def policy_names() -> list[str]:
    from sage_resilience import _registry  # noqa: PLC0415

    return list(_registry.policies())


LAYERS = """\
version: 1
defaults: {failure_threshold: 2}
policies:
  filed: {failure_threshold: 4}
platforms:
  linux:
    defaults: {failure_threshold: 5}
    policies:
      filed: {failure_threshold: 6}
"""


def _layers(keep: set[str]) -> str:
    """LAYERS with only the layers in *keep* (by name)."""
    lines = ["version: 1"]
    if "defaults" in keep:
        lines.append("defaults: {failure_threshold: 2}")
    lines.append("policies:")
    lines.append(
        "  filed: {failure_threshold: 4}"
        if "policy" in keep
        else "  filed: {}"
    )
    lines.append("platforms:")
    lines.append("  linux:")
    if "platform_defaults" in keep:
        lines.append("    defaults: {failure_threshold: 5}")
    if "platform_policy" in keep:
        lines.append("    policies:")
        lines.append("      filed: {failure_threshold: 6}")
    if len(lines) == 5:  # an empty platform section
        lines[-1] = "  linux: {}"
    return "\n".join(lines) + "\n"


class TestPrecedence:
    @pytest.mark.parametrize(
        ("name", "layers", "expected"),
        [
            # A name the file declares: every layer, each over the last.
            ("filed", set(), 5),
            ("filed", {"defaults"}, 2),
            ("filed", {"defaults", "code"}, 3),
            ("filed", {"defaults", "code", "policy"}, 4),
            ("filed", {"defaults", "code", "policy", "platform_defaults"}, 5),
            (
                "filed",
                {
                    "defaults",
                    "code",
                    "policy",
                    "platform_defaults",
                    "platform_policy",
                },
                6,
            ),
            (
                "filed",
                {
                    "defaults",
                    "code",
                    "policy",
                    "platform_defaults",
                    "platform_policy",
                    "env",
                },
                7,
            ),
            # A name only code declares gets every layer that names no
            # policy: defaults, platform defaults, the environment.
            ("code_only", {"defaults"}, 2),
            ("code_only", {"defaults", "code"}, 3),
            ("code_only", {"defaults", "code", "platform_defaults"}, 5),
            ("code_only", {"code", "env"}, 7),
            ("code_only", {"defaults", "code", "platform_defaults", "env"}, 7),
        ],
    )
    @pytest.mark.parametrize("declare_first", [True, False])
    def test_every_layer(
        self, tmp_path, monkeypatch, name, layers, expected, declare_first
    ):
        """built-ins < defaults < code < policy < platform < environment."""
        path = tmp_path / "resilience.yaml"
        path.write_text(_layers(layers), encoding="utf-8")
        if "env" in layers:
            monkeypatch.setenv(
                f"SAGE_RESILIENCE__{name.upper()}__FAILURE_THRESHOLD", "7"
            )

        def declare() -> None:
            kwargs = {"failure_threshold": 3} if "code" in layers else {}

            @circuit_breaker(name, **kwargs)
            def call() -> None:
                return None

        if declare_first:
            declare()
            configure(path, platform="linux")
        else:
            configure(path, platform="linux")
            declare()
        if name == "code_only" and layers <= {"env"}:
            expected = 5  # the built-in
        assert expected == policy(name).config.failure_threshold

    def test_env_for_a_code_only_name_never_crashes(self, monkeypatch):
        """An override for a name no file declares waits for the code."""
        monkeypatch.setenv("SAGE_RESILIENCE__DATABASE_EXECUTE__TIMEOUT", "3")
        config = configure()
        assert {
            "database_execute": ["SAGE_RESILIENCE__DATABASE_EXECUTE__TIMEOUT"]
        } == config.pending_env or "database_execute" in config.policies

        @circuit_breaker("database_execute", failure_threshold=5)
        async def execute() -> None:
            return None

        assert 3 == policy("database_execute").config.timeout

    def test_two_places_disagreeing_is_an_error(self):
        """Same name, different arguments: ConfigError naming both lines."""

        @circuit_breaker("twice", failure_threshold=2)
        def first() -> None:
            return None

        with pytest.raises(ConfigError) as info:

            @circuit_breaker("twice", failure_threshold=3)
            def second() -> None:
                return None

        message = str(info.value)
        here = Path(__file__).name
        assert message.count(here) == 2
        assert "policies.twice" in message
        assert "failure_threshold=2" in message
        assert "failure_threshold=3" in message

    def test_two_places_agreeing_share_one_breaker(self):
        """Same name and arguments: one policy behind both."""

        @circuit_breaker("shared", failure_threshold=1)
        def first() -> None:
            raise ConnectionError("down")

        @circuit_breaker("shared", failure_threshold=1)
        def second() -> str:
            return "never called"

        with pytest.raises(ConnectionError):
            first()
        with pytest.raises(CircuitOpenError):
            second()

    def test_bad_code_argument_names_the_decorator(self):
        """An invalid argument is a ConfigError at the decorator's line."""
        configure()
        with pytest.raises(ConfigError) as info:
            circuit_breaker("broken", failure_threshold=0)
        assert f"{Path(__file__).name}:" in str(info.value)
        assert "policies.broken.failure_threshold: must be >= 1" in str(
            info.value
        )

    def test_one_config_loaded_for_many_decorators(self, events):
        """Declaring logs nothing; the first call loads the config once."""
        wrapped = []
        for index in range(12):

            @circuit_breaker(f"many_{index}", failure_threshold=3)
            async def call() -> str:
                return "ok"

            wrapped.append(call)
        assert [] == [e for e in events if e["event"] == "config_loaded"]
        for call in wrapped:
            assert "ok" == await_(call())
        assert 1 == len([e for e in events if e["event"] == "config_loaded"])

    def test_declarations_survive_a_reload(self):
        """Code arguments keep applying after configure()."""

        @circuit_breaker("reloaded", failure_threshold=7)
        def call() -> None:
            return None

        call()
        configure()
        assert 7 == get_breaker_stats("reloaded")["failure_threshold"]


def await_(coro):
    import asyncio  # noqa: PLC0415

    return asyncio.run(coro)


class Calls:
    """How many times the dependency was called."""

    def __init__(self) -> None:
        self.n = 0


def stacked(name: str, attempts: int, threshold: int):
    """Sage's stacking: @retry over @circuit_breaker on an async function."""
    calls = Calls()

    @retry(max_attempts=attempts, initial_delay=0.01)
    @circuit_breaker(name, failure_threshold=threshold)
    async def save() -> None:
        calls.n += 1
        raise ConnectionError("down")

    return save, calls


class TestRetryOverBreaker:
    async def test_runs_exactly_attempts_times(self):
        """retry over circuit_breaker: one loop of max_attempts attempts."""
        save, calls = stacked("stacked", attempts=4, threshold=10)
        with pytest.raises(ConnectionError):
            await save()
        assert 4 == calls.n
        assert 4 == policy("stacked").config.retry.attempts
        assert 3 == policy("stacked").status()["retries"]

    async def test_stops_at_the_first_refusal(self):
        """Once the circuit opens, retrying stops with CircuitOpenError."""
        save, calls = stacked("stacked_open", attempts=5, threshold=2)
        with pytest.raises(CircuitOpenError) as info:
            await save()
        assert 2 == calls.n
        assert isinstance(info.value.__cause__, ConnectionError)

    async def test_yaml_retry_beats_the_code(self, tmp_path):
        """policies.<name>.retry in the YAML wins over retry(...)."""
        path = tmp_path / "r.yaml"
        path.write_text(
            "version: 1\npolicies:\n  yaml_retry: {retry: {attempts: 2}}\n",
            encoding="utf-8",
        )
        configure(path)
        save, calls = stacked("yaml_retry", attempts=5, threshold=10)
        with pytest.raises(ConnectionError):
            await save()
        assert 2 == calls.n

    async def test_filters_and_callbacks(self):
        """retryable_exceptions narrows; before_retry and on_exhausted run."""
        seen: list[object] = []

        @retry(
            max_attempts=3,
            initial_delay=0.01,
            retryable_exceptions=[ConnectionError],
            before_retry=lambda n, e: seen.append((n, type(e).__name__)),
            on_exhausted=lambda e: seen.append(("exhausted", str(e))),
        )
        @circuit_breaker("filtered", failure_threshold=10)
        async def save(exc: Exception) -> None:
            raise exc

        with pytest.raises(OSError):
            await save(OSError("not retried"))
        assert [] == seen
        with pytest.raises(ConnectionError):
            await save(ConnectionError("down"))
        assert [
            (1, "ConnectionError"),
            (2, "ConnectionError"),
            ("exhausted", "down"),
        ] == seen


class TestPlainRetry:
    async def test_retries_with_sages_semantics(self, events):
        """A plain async function is retried; events are logged."""
        calls = 0

        @retry(max_attempts=3, initial_delay=0.5)
        async def flaky() -> str:
            nonlocal calls
            calls += 1
            if calls < 3:
                raise ConnectionError(f"attempt {calls}")
            return f"ok after {calls}"

        assert "ok after 3" == await flaky()
        scheduled = [e for e in events if e["event"] == "retry_scheduled"]
        assert [1, 2] == [e["attempt"] for e in scheduled]
        assert "flaky" in scheduled[0]["function"]

    def test_sync_function(self, events):
        """A plain sync function is retried until exhausted."""
        calls = 0

        @retry(max_attempts=2, initial_delay=0.01)
        def read() -> None:
            nonlocal calls
            calls += 1
            raise TimeoutError("slow")

        with pytest.raises(TimeoutError):
            read()
        assert 2 == calls
        assert 1 == len([e for e in events if e["event"] == "retry_exhausted"])

    async def test_caller_faults_are_never_retried(self):
        """An HTTP 400 is the caller's fault: one attempt only."""
        calls = 0
        request = httpx.Request("POST", "http://127.0.0.1/v1/chat")
        response = httpx.Response(400, request=request)

        @retry(max_attempts=3, initial_delay=0.01)
        async def post() -> None:
            nonlocal calls
            calls += 1
            response.raise_for_status()

        with pytest.raises(httpx.HTTPStatusError):
            await post()
        assert 1 == calls

    async def test_refusals_are_never_retried(self):
        """A refusal from a breaker inside is not retried."""
        calls = 0

        @retry(max_attempts=3, initial_delay=0.01)
        async def outer() -> None:
            nonlocal calls
            calls += 1
            raise CircuitBreakerOpenError("open")

        with pytest.raises(CircuitOpenError):
            await outer()
        assert 1 == calls

    @pytest.mark.parametrize(
        ("strategy", "expected"),
        [
            (RetryStrategy.FIXED, [1.0, 1.0, 1.0, 1.0, 1.0]),
            (RetryStrategy.LINEAR, [1.0, 2.0, 3.0, 4.0, 5.0]),
            (RetryStrategy.EXPONENTIAL, [1.0, 2.0, 4.0, 8.0, 10.0]),
            (RetryStrategy.FIBONACCI, [1.0, 1.0, 2.0, 3.0, 5.0]),
        ],
    )
    def test_strategies(self, strategy, expected):
        """Each strategy's delays, capped by max_delay, without jitter."""
        manager = RetryManager(
            RetryConfig(
                initial_delay=1.0,
                max_delay=10.0,
                jitter=False,
                strategy=strategy,
            )
        )
        assert expected == [manager.get_delay(n) for n in range(1, 6)]

    def test_jitter_shortens_by_up_to_half(self):
        """With jitter a delay lies between half and all of it."""
        manager = RetryManager(RetryConfig(initial_delay=2.0))
        delays = [manager.get_delay(1) for _ in range(200)]
        assert all(1.0 <= d <= 2.0 for d in delays)
        assert max(delays) - min(delays) > 0.1

    @pytest.mark.parametrize(
        ("strategy", "expected"),
        [
            ("fixed", [1.0, 1.0, 1.0]),
            ("linear", [1.0, 2.0, 3.0]),
            ("fibonacci", [1.0, 1.0, 2.0]),
        ],
    )
    def test_policy_backoff_strategies(self, tmp_path, strategy, expected):
        """The YAML's backoff.strategy gives the same series."""
        import tenacity  # noqa: PLC0415
        from sage_resilience._retry import RetryPlan  # noqa: PLC0415

        path = tmp_path / "s.yaml"
        path.write_text(
            "version: 1\npolicies:\n  s: {retry: {attempts: 4, backoff: "
            f"{{strategy: {strategy}, initial: 1, jitter: 0, max: 10}}}}}}\n",
            encoding="utf-8",
        )
        plan = RetryPlan(configure(path).policies["s"].retry)
        waits = []
        for n in range(1, 4):
            state = tenacity.RetryCallState(None, None, (), {})
            state.attempt_number = n
            waits.append(plan.wait(state))
        assert expected == waits


# --------------------------------------------------------------------------
# Output: never stdout
# --------------------------------------------------------------------------

TRIP_SCRIPT = """\
import asyncio, sys
from sage_resilience.compat import circuit_breaker, CircuitBreakerOpenError

@circuit_breaker("child_db", failure_threshold=2, recovery_timeout=30)
async def connect():
    raise ConnectionError("refused")

async def main():
    for _ in range(3):
        try:
            await connect()
        except (ConnectionError, CircuitBreakerOpenError):
            pass
    print("OWN LINE")

asyncio.run(main())
"""


def _child(script: str, *, cwd: Path | None = None, **env: str):
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith("SAGE_")
    }
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=environ,
        check=True,
    )


class TestOutput:
    def test_nothing_on_stdout_without_logging_configured(self):
        """Unconfigured: stdout holds only the program's own line."""
        done = _child(TRIP_SCRIPT)
        assert "OWN LINE\n" == done.stdout
        # Python's last-resort handler shows the warning on stderr.
        assert "circuit_state_changed" in done.stderr

    def test_stdlib_logging_receives_the_events(self):
        """With logging configured, events are records of 'sage_resilience'."""
        script = (
            "import logging, json, sys\n"
            "class H(logging.Handler):\n"
            "    def emit(self, r):\n"
            "        sys.stderr.write(json.dumps({'logger': r.name,"
            " 'event': r.event, 'breaker': getattr(r, 'breaker', None),"
            " 'level': r.levelname}) + '\\n')\n"
            "logging.getLogger('sage_resilience').addHandler(H())\n"
            "logging.getLogger('sage_resilience').setLevel(logging.INFO)\n"
            + TRIP_SCRIPT
        )
        done = _child(script)
        assert "OWN LINE\n" == done.stdout
        records = [json.loads(line) for line in done.stderr.splitlines()]
        opened = [r for r in records if r["event"] == "circuit_state_changed"]
        assert [
            {
                "logger": "sage_resilience",
                "event": "circuit_state_changed",
                "breaker": "child_db",
                "level": "WARNING",
            }
        ] == opened
        assert 1 == len([r for r in records if r["event"] == "config_loaded"])

    def test_structlog_configured_goes_through_structlog(self):
        """With structlog configured, events go where the app sends them."""
        with structlog.testing.capture_logs() as logs:

            @circuit_breaker("via_structlog", failure_threshold=1)
            def call() -> None:
                raise ConnectionError("down")

            with pytest.raises(ConnectionError):
                call()
        assert ["circuit_state_changed"] == [
            e["event"] for e in logs if e["event"] == "circuit_state_changed"
        ]

    def test_stdlib_record_is_readable_as_text(self, caplog):
        """A plain text handler shows the event and its keys."""
        structlog.reset_defaults()
        with caplog.at_level(logging.INFO, logger="sage_resilience"):
            configure()
        messages = [r.getMessage() for r in caplog.records]
        assert any(m.startswith("config_loaded path=") for m in messages)


# --------------------------------------------------------------------------
# Sage's layout, for real: a package whose resilience modules are one line
# each, classes with decorated async methods, PostgreSQL, and an MCP-style
# stdio server whose stdout must stay pure JSON-RPC.
# --------------------------------------------------------------------------

APP_FILES = {
    "app_core/__init__.py": "",
    "app_core/resilience/__init__.py": (
        "from .circuit_breaker import *\nfrom .retry_strategy import *\n"
    ),
    "app_core/resilience/circuit_breaker.py": (
        "from sage_resilience.compat import *\n"
    ),
    "app_core/resilience/retry_strategy.py": (
        "from sage_resilience.compat import *\n"
    ),
    "app_core/store.py": """\
        import asyncpg
        from .resilience import (
            retry, circuit_breaker, CircuitBreakerOpenError,
            DATABASE_RETRY_CONFIG, RetryStrategy,
        )

        class Store:
            def __init__(self, dsn):
                self.dsn = dsn
                self.pool = None
                self.attempts = 0

            @retry(max_attempts=3, initial_delay=0.01)
            @circuit_breaker("database_connection", failure_threshold=3,
                             recovery_timeout=30)
            async def connect(self):
                self.attempts += 1
                self.pool = await asyncpg.create_pool(
                    self.dsn, min_size=1, max_size=2)

            @retry(max_attempts=3, initial_delay=0.01)
            @circuit_breaker("database_execute", failure_threshold=5,
                             recovery_timeout=60)
            async def execute(self, query, *args):
                async with self.pool.acquire() as con:
                    return await con.execute(query, *args)

            @retry(max_attempts=3, initial_delay=0.01)
            @circuit_breaker("database_fetchval", failure_threshold=5,
                             recovery_timeout=60)
            async def fetchval(self, query, *args):
                async with self.pool.acquire() as con:
                    return await con.fetchval(query, *args)
        """,
    "stdio_server.py": """\
        import asyncio, json, sys
        from app_core.resilience import (
            breaker_manager, CircuitBreakerOpenError,
        )
        from app_core.store import Store

        async def handle(store, request):
            method = request["method"]
            if method == "connect":
                store.dsn = request["params"]["dsn"]
                try:
                    await store.connect()
                    return {"connected": True, "attempts": store.attempts}
                except CircuitBreakerOpenError as exc:
                    return {"refused": str(exc), "attempts": store.attempts}
                except Exception as exc:
                    return {"error": type(exc).__name__,
                            "attempts": store.attempts}
            if method == "query":
                try:
                    await store.execute(
                        "INSERT INTO notes(id) VALUES ($1)",
                        request["params"]["id"])
                    return {"count": await store.fetchval(
                        "SELECT count(*) FROM notes")}
                except Exception as exc:
                    return {"error": type(exc).__name__}
            if method == "stats":
                return {s["name"]: s["state"]
                        for s in breaker_manager.get_all_stats()}
            if method == "reset":
                if request["params"].get("name"):
                    found = breaker_manager.get(request["params"]["name"])
                    if found is None:
                        return {"unknown": True}
                    found.reset()
                else:
                    breaker_manager.reset_all()
                return {"reset": True}
            return {"unknown_method": method}

        async def main():
            store = Store(None)
            for line in sys.stdin:
                request = json.loads(line)
                result = await handle(store, request)
                sys.stdout.write(json.dumps(
                    {"jsonrpc": "2.0", "id": request["id"],
                     "result": result}) + "\\n")
                sys.stdout.flush()

        asyncio.run(main())
        """,
}


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    with pgvector_cluster(tmp_path_factory.mktemp("pg")) as server:
        server.psql("CREATE TABLE notes (id int PRIMARY KEY)")
        yield server


def _app(tmp_path: Path) -> Path:
    for name, text in APP_FILES.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return tmp_path


class TestSageLayout:
    def test_stdio_server_stays_pure_json_rpc(self, tmp_path, pg):
        """Breakers trip and reset inside; stdout holds only responses."""
        app = _app(tmp_path)
        dead = "postgresql://nobody@127.0.0.1:9/postgres"
        requests = [
            {"method": "connect", "params": {"dsn": dead}},
            {"method": "connect", "params": {"dsn": dead}},
            {"method": "stats", "params": {}},
            {"method": "reset", "params": {"name": "database_connection"}},
            {"method": "reset", "params": {"name": "no_such"}},
            {"method": "connect", "params": {"dsn": pg.dsn()}},
            {"method": "query", "params": {"id": 1}},
            {"method": "query", "params": {"id": 1}},
            {"method": "stats", "params": {}},
            {"method": "reset", "params": {}},
        ]
        lines = "".join(
            json.dumps({"jsonrpc": "2.0", "id": n, **r}) + "\n"
            for n, r in enumerate(requests)
        )
        environ = {
            k: v for k, v in os.environ.items() if not k.startswith("SAGE_")
        }
        environ["PYTHONPATH"] = str(app)
        done = subprocess.run(
            [sys.executable, str(app / "stdio_server.py")],
            input=lines,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=app,
            env=environ,
            check=False,
        )
        assert 0 == done.returncode, done.stderr[-3000:]
        replies = [json.loads(line) for line in done.stdout.splitlines()]
        assert list(range(len(requests))) == [r["id"] for r in replies]
        results = [r["result"] for r in replies]
        # The shipped YAML beats the code's threshold of 3: 5 counted
        # failures open it. The first call makes its 3 attempts in one loop
        # through the breaker; the second opens it at its 2nd attempt and
        # stops retrying at once.
        assert {"error": "ConnectionRefusedError", "attempts": 3} == results[0]
        assert 5 == results[1]["attempts"]
        assert "refused" in results[1]
        assert "open" == results[2]["database_connection"]
        assert {"reset": True} == results[3]
        assert {"unknown": True} == results[4]
        assert {"connected": True, "attempts": 6} == results[5]
        assert {"count": 1} == results[6]
        # A unique violation is the caller's fault: not retried, no trip.
        assert {"error": "UniqueViolationError"} == results[7]
        assert "closed" == results[8]["database_execute"]
        assert "closed" == results[8]["database_connection"]
        # The library's warnings went to stderr, never stdout.
        assert "circuit_state_changed" in done.stderr

"""The asyncpg integration against a real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
import sage_resilience.postgres as pg_module
import sqlalchemy.exc
from sage_resilience import CircuitOpenError, ConfigError, configure
from sage_resilience._config import load_config_text
from sage_resilience.postgres import (
    Guarded,
    connect,
    connect_kwargs,
    create_pool,
    guard,
)
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from tests.helpers import Clock, make_policy, named, with_clock
from tests.support.http_servers import UNRESOLVABLE_HOST, SilentServer
from tests.support.pg import PgCluster, pgvector_cluster

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

PASSWORD_ENV = "SAGE_TEST_PG_PASSWORD"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    with pgvector_cluster(tmp_path_factory.mktemp("pg")) as server:
        server.psql(
            "CREATE TABLE memories (id int PRIMARY KEY, body text NOT NULL);"
        )
        server.create_role("alice", password="wonder-land-7")
        yield server


@pytest.fixture
def pg(cluster: PgCluster) -> Iterator[PgCluster]:
    """The cluster, running again after the test (some stop it)."""
    yield cluster
    if not cluster.running:
        cluster.start()


@pytest.fixture
async def pool(pg: PgCluster) -> AsyncIterator[Any]:
    p = make_policy("db")
    created = await create_pool(pg.dsn(), policy=p, min_size=1, max_size=2)
    await created.execute("TRUNCATE memories")
    yield created
    await created.close()


class Spy:
    """Counts real calls of ``asyncpg.connect`` (it still connects)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = asyncpg.connect

        async def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await real(*args, **kwargs)

        monkeypatch.setattr(asyncpg, "connect", counting)


async def asyncpg_count(pg: PgCluster, application: str) -> int:
    """Server connections whose application_name is *application*."""
    conn = await asyncpg.connect(pg.dsn())
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = $1",
            application,
        )
    finally:
        await conn.close()


def platform_config(pg: PgCluster, platform: str) -> None:
    """database_connection: a host that never resolves, fixed on Windows."""
    configure(
        load_config_text(
            f"""
version: 1
policies:
  database_connection:
    kind: postgres
    timeout: 5
    settings:
      host: {UNRESOLVABLE_HOST}
      port: {pg.port}
      database: postgres
      user: postgres
platforms:
  windows:
    policies:
      database_connection: {{settings: {{host: 127.0.0.1}}}}
""",
            platform=platform,
            environ={},
        )
    )


class TestConnect:
    async def test_pool_from_a_dsn(self, pg):
        """create_pool with a DSN gives a working pool."""
        pool = await create_pool(
            pg.dsn(), policy=make_policy("db"), min_size=1, max_size=1
        )
        try:
            assert 2 == await pool.fetchval("SELECT 1 + 1")
        finally:
            await pool.close()

    async def test_settings_with_the_platform_override(self, pg):
        """Without a DSN, settings apply, Windows override included."""
        platform_config(pg, "windows")
        conn = await connect()
        try:
            assert "postgres" == await conn.fetchval("SELECT current_user")
        finally:
            await conn.close()
        pool = await create_pool(min_size=1, max_size=1)
        try:
            assert 1 == await pool.fetchval("SELECT 1")
        finally:
            await pool.close()

    def test_settings_without_the_override(self, pg):
        """On Linux the base settings apply; timeout is the policy's."""
        platform_config(pg, "linux")
        assert {
            "host": UNRESOLVABLE_HOST,
            "port": pg.port,
            "database": "postgres",
            "user": "postgres",
            "timeout": 5.0,
        } == connect_kwargs()

    async def test_password_from_password_env(self, pg, monkeypatch):
        """settings.password_env names the variable holding the password."""
        monkeypatch.setenv(PASSWORD_ENV, "wonder-land-7")
        p = make_policy(
            "db",
            settings={
                "host": pg.host,
                "port": pg.port,
                "database": "postgres",
                "user": "alice",
                "password_env": PASSWORD_ENV,
            },
        )
        conn = await connect(policy=p)
        try:
            assert "alice" == await conn.fetchval("SELECT current_user")
        finally:
            await conn.close()

    async def test_pgpassword_is_asyncpgs_fallback(self, pg, monkeypatch):
        """Without password_env, asyncpg's own PGPASSWORD is used."""
        monkeypatch.setenv("PGPASSWORD", "wonder-land-7")
        p = make_policy(
            "db",
            settings={"host": pg.host, "port": pg.port, "user": "alice"},
        )
        conn = await connect(policy=p, database="postgres")
        try:
            assert "alice" == await conn.fetchval("SELECT current_user")
        finally:
            await conn.close()

    def test_password_in_settings_is_refused(self):
        """A password in the YAML settings is a ConfigError, never used."""
        p = make_policy("db", settings={"user": "u", "password": "hunter2"})
        with pytest.raises(ConfigError) as refused:
            connect_kwargs(p)
        assert "policies.db.settings.password" == refused.value.key
        assert "hunter2" not in str(refused.value)

    def test_explicit_arguments_win(self):
        """Keyword arguments override the settings."""
        p = make_policy("db", settings={"host": "db.internal", "port": 1})
        kwargs = pg_module._arguments(p, None, {"port": 6432})
        assert {"host": "db.internal", "port": 6432} == kwargs

    def test_a_dsn_ignores_the_settings(self):
        """A DSN says everything; only the policy timeout is added."""
        p = make_policy("db", timeout=3, settings={"host": "db.internal"})
        kwargs = pg_module._arguments(p, "postgresql://u@h/d", {})
        assert {"dsn": "postgresql://u@h/d", "timeout": 3.0} == kwargs


class TestOutage:
    async def test_outage_opens_then_recovers_end_to_end(
        self, pg, monkeypatch, events
    ):
        """Stop: failures open it; refused untried; restart: probe closes it."""
        clock = Clock()
        p = with_clock(
            make_policy("db", failure_threshold=2, recovery_timeout=30),
            clock,
        )
        spy = Spy(monkeypatch)
        conn = await connect(pg.dsn(), policy=p)
        await conn.close()
        pg.stop()
        for _ in range(2):
            with pytest.raises(ConnectionRefusedError):
                await connect(pg.dsn(), policy=p)
        assert ("open", 3) == (p.state, spy.calls)
        pg.start()
        with pytest.raises(CircuitOpenError) as refused:
            await create_pool(pg.dsn(), policy=p)
        with pytest.raises(CircuitOpenError):
            await connect(pg.dsn(), policy=p)
        assert 3 == spy.calls
        assert "pg_refused" == refused.value.last_cause
        clock.advance(31)
        conn = await connect(pg.dsn(), policy=p)
        try:
            assert 1 == await conn.fetchval("SELECT 1")
        finally:
            await conn.close()
        assert ("closed", 4) == (p.state, spy.calls)
        transitions = [
            (e["old_state"], e["new_state"])
            for e in named(events, "circuit_state_changed")
        ]
        assert [
            ("closed", "open"),
            ("open", "half-open"),
            ("half-open", "closed"),
        ] == transitions

    async def test_timed_out_pool_attempt_leaves_no_connection(self, pg):
        """A pool attempt cut by the policy timeout closes what it opened."""
        p = make_policy("db", timeout=0.3, failure_threshold=5)

        async def slow_init(conn: Any) -> None:
            await asyncio.sleep(30)

        with pytest.raises(TimeoutError):
            await create_pool(
                pg.dsn(),
                policy=p,
                min_size=3,
                max_size=3,
                init=slow_init,
                server_settings={"application_name": "sage-leak-probe"},
            )
        left = None
        for _ in range(50):
            left = await asyncpg_count(pg, "sage-leak-probe")
            if left == 0:
                break
            await asyncio.sleep(0.05)
        assert 0 == left
        assert 1 == p.status()["failure_count"]

    async def test_refused_connections_are_retried(self, pg, events):
        """With attempts left, each refused attempt counts and is retried."""
        p = make_policy("db", failure_threshold=10, retry={"attempts": 3})
        pg.stop()
        with pytest.raises(ConnectionRefusedError):
            await create_pool(pg.dsn(), policy=p, min_size=1)
        assert 3 == p.status()["failure_count"]
        assert [1, 2] == [
            e["attempt"] for e in named(events, "retry_scheduled")
        ]

    async def test_hung_server_times_out_per_attempt(self):
        """A server that never answers: each attempt ends at the timeout."""
        p = make_policy("db", timeout=0.2, failure_threshold=1)
        with SilentServer() as silent:
            with pytest.raises(TimeoutError):
                await connect(
                    host=silent.host, port=silent.port, user="u", policy=p
                )
        assert ("open", 1) == (p.state, silent.accepted)

    async def test_guarded_pool_counts_a_dead_server(self, pg, pool):
        """Queries on a pool whose server died count and open the circuit."""
        db = guard(pool, make_policy("save", failure_threshold=2))
        assert 1 == await db.fetchval("SELECT 1")
        pg.stop()
        for _ in range(2):
            with pytest.raises((OSError, asyncpg.PostgresConnectionError)):
                await db.fetchval("SELECT 1")
        with pytest.raises(CircuitOpenError):
            await db.fetchval("SELECT 1")
        assert "open" == db.policy.state


class TestGuard:
    async def test_queries_run_and_return(self, pool):
        """execute, executemany, fetch, fetchrow, fetchval pass results."""
        db = guard(pool, make_policy("save"))
        assert "INSERT 0 1" == await db.execute(
            "INSERT INTO memories VALUES ($1, $2)", 1, "one"
        )
        await db.executemany(
            "INSERT INTO memories VALUES ($1, $2)", [(2, "two"), (3, "three")]
        )
        rows = await db.fetch("SELECT id FROM memories ORDER BY id")
        assert [1, 2, 3] == [r["id"] for r in rows]
        row = await db.fetchrow("SELECT body FROM memories WHERE id = $1", 2)
        assert "two" == row["body"]
        assert 3 == await db.fetchval("SELECT count(*) FROM memories")
        assert 5 == db.policy.status()["successes"]

    async def test_syntax_error_passes_through_uncounted(self, pool, events):
        """A syntax error is the query's fault: raised, not counted."""
        p = make_policy("save", failure_threshold=1, retry={"attempts": 3})
        db = guard(pool, p)
        with pytest.raises(asyncpg.PostgresSyntaxError):
            await db.execute("SELEC 1")
        assert ("closed", 0) == (p.state, p.status()["failure_count"])
        assert [] == named(events, "retry_scheduled")

    async def test_unique_violation_passes_through_uncounted(self, pool):
        """A constraint violation is raised once, never counted."""
        p = make_policy("save", failure_threshold=1, retry={"attempts": 3})
        db = guard(pool, p)
        await db.execute("INSERT INTO memories VALUES (7, 'seven')")
        for _ in range(3):
            with pytest.raises(asyncpg.UniqueViolationError):
                await db.execute("INSERT INTO memories VALUES (7, 'again')")
        assert ("closed", 0) == (p.state, p.status()["failure_count"])
        assert 1 == await pool.fetchval("SELECT count(*) FROM memories")

    async def test_failed_transaction_is_not_a_server_failure(self, pool):
        """After a violation inside a transaction, the next statement's
        25P02 (transaction aborted) is the caller's too."""
        p = make_policy("save", failure_threshold=1)
        async with pool.acquire() as conn:
            db = guard(conn, p)
            async with conn.transaction():
                await db.execute("INSERT INTO memories VALUES (8, 'a')")
                with pytest.raises(asyncpg.UniqueViolationError):
                    await db.execute("INSERT INTO memories VALUES (8, 'b')")
                with pytest.raises(
                    asyncpg.InFailedSQLTransactionError
                ) as info:
                    await db.fetchval("SELECT 1")
                assert "25P02" == info.value.sqlstate
        assert "closed" == p.state

    async def test_data_error_passes_through_uncounted(self, pool):
        """A data error (division by zero, class 22) is not counted."""
        p = make_policy("save", failure_threshold=1)
        with pytest.raises(asyncpg.DivisionByZeroError):
            await guard(pool, p).fetchval("SELECT 1 / 0")
        assert "closed" == p.state

    async def test_statement_timeout_counts(self, pg):
        """A server-side statement timeout (57014) is a counted failure."""
        p = make_policy("save", failure_threshold=1)
        conn = await asyncpg.connect(
            pg.dsn(), server_settings={"statement_timeout": "50"}
        )
        try:
            db = guard(conn, p)
            with pytest.raises(asyncpg.QueryCanceledError):
                await db.fetchval("SELECT pg_sleep(5)")
            assert "open" == p.state
            with pytest.raises(CircuitOpenError) as refused:
                await db.fetchval("SELECT 1")
        finally:
            await conn.close()
        assert "pg_query_timeout" == refused.value.last_cause

    async def test_policy_timeout_counts(self, pool):
        """A query beyond the policy's timeout is cut and counted."""
        p = make_policy("save", failure_threshold=1, timeout=0.1)
        db = guard(pool, p)
        with pytest.raises(TimeoutError):
            await db.fetchval("SELECT pg_sleep(5)")
        assert "open" == p.state

    async def test_other_attributes_are_the_targets(self, pool):
        """acquire() and friends are the wrapped object's own."""
        db = guard(pool, make_policy("save"))
        async with db.acquire() as conn:
            assert 1 == await guard(conn, db.policy).fetchval("SELECT 1")
        assert db.target is pool
        assert isinstance(db, Guarded)

    def test_default_policy_is_memory_save(self):
        """guard() uses the registry's memory_save policy by default."""
        assert "memory_save" == guard(object()).policy.name


class TestTransactions:
    """guard(conn) never retries a statement inside a transaction."""

    async def test_statement_timeout_surfaces_unretried(self, pg, events):
        """57014 inside a transaction: raised as is, counted once."""
        p = make_policy("save", failure_threshold=5, retry={"attempts": 3})
        conn = await asyncpg.connect(pg.dsn())
        try:
            db = guard(conn, p)

            async def slow_in_a_transaction() -> None:
                async with conn.transaction():
                    await conn.execute("SET LOCAL statement_timeout = 50")
                    await db.fetchval("SELECT pg_sleep(5)")

            with pytest.raises(asyncpg.QueryCanceledError):
                await slow_in_a_transaction()
            assert 1 == await db.fetchval("SELECT 1")
        finally:
            await conn.close()
        status = p.status()
        assert (1, 1) == (status["failures"], status["successes"])
        assert [] == named(events, "retry_scheduled")

    async def test_policy_timeout_surfaces_unretried(self, pg, events):
        """The policy's timeout inside a transaction: one attempt."""
        p = make_policy(
            "save", failure_threshold=5, timeout=0.2, retry={"attempts": 3}
        )
        conn = await asyncpg.connect(pg.dsn())
        try:
            db = guard(conn, p)
            with pytest.raises(TimeoutError):
                async with conn.transaction():
                    await db.fetchval("SELECT pg_sleep(5)")
        finally:
            conn.terminate()
        assert 1 == p.status()["failures"]
        assert [] == named(events, "retry_scheduled")

    async def test_unique_violation_surfaces_uncounted(self, pool, events):
        """A violation inside a transaction: raised once, not counted."""
        p = make_policy("save", failure_threshold=1, retry={"attempts": 3})
        await pool.execute("INSERT INTO memories VALUES (9, 'nine')")
        async with pool.acquire() as conn:
            db = guard(conn, p)

            async def two_inserts() -> None:
                async with conn.transaction():
                    await db.execute("INSERT INTO memories VALUES (10, 'a')")
                    await db.execute("INSERT INTO memories VALUES (9, 'b')")

            with pytest.raises(asyncpg.UniqueViolationError):
                await two_inserts()
        status = p.status()
        # The first insert and the ignored violation: two successes.
        assert ("closed", 2, 0, 2) == (
            p.state,
            status["calls"],
            status["failures"],
            status["successes"],
        )
        assert [] == named(events, "retry_scheduled")
        assert 1 == await pool.fetchval("SELECT count(*) FROM memories")

    async def test_lost_connection_inside_a_transaction(self, pg):
        """A backend killed mid-transaction: counted once, not retried."""
        p = make_policy("save", failure_threshold=5, retry={"attempts": 3})
        conn = await asyncpg.connect(pg.dsn())
        try:
            db = guard(conn, p)
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            transaction = conn.transaction()
            await transaction.start()
            await db.execute("INSERT INTO memories VALUES (11, 'a')")
            pg.psql(f"SELECT pg_terminate_backend({pid});")
            with pytest.raises(asyncpg.ConnectionDoesNotExistError):
                await db.execute("INSERT INTO memories VALUES (12, 'b')")
        finally:
            conn.terminate()
        status = p.status()
        assert (1, "connection_reset") == (
            status["failures"],
            status["last_cause"],
        )

    async def test_outside_a_transaction_statements_are_retried(self, pg):
        """Without a transaction the policy's retries still apply."""
        p = make_policy("save", failure_threshold=10, retry={"attempts": 2})
        conn = await asyncpg.connect(
            pg.dsn(), server_settings={"statement_timeout": "50"}
        )
        try:
            assert not conn.is_in_transaction()
            with pytest.raises(asyncpg.QueryCanceledError):
                await guard(conn, p).fetchval("SELECT pg_sleep(5)")
        finally:
            await conn.close()
        assert 2 == p.status()["failures"]


def sqlalchemy_url(pg: PgCluster) -> str:
    return pg.dsn().replace("postgresql://", "postgresql+asyncpg://", 1)


class TestSqlAlchemy:
    """SQLAlchemy 2 async over asyncpg, under a policy."""

    @pytest.fixture
    async def engine(self, pg: PgCluster) -> AsyncIterator[Any]:
        engine = create_async_engine(sqlalchemy_url(pg), poolclass=NullPool)
        async with engine.begin() as conn:
            await conn.execute(text("TRUNCATE memories"))
            await conn.execute(text("INSERT INTO memories VALUES (1, 'one')"))
        yield engine
        await engine.dispose()

    @pytest.mark.parametrize(
        ("sql", "params", "error"),
        [
            (
                "INSERT INTO memories VALUES (1, 'again')",
                {},
                sqlalchemy.exc.IntegrityError,
            ),
            ("SELEC 1", {}, sqlalchemy.exc.ProgrammingError),
            ("SELECT 1 / 0", {}, sqlalchemy.exc.DBAPIError),
            (
                "SELECT body FROM memories WHERE id = :id",
                {"id": "not a number"},
                sqlalchemy.exc.DBAPIError,
            ),
            (
                "SELECT body FROM memories WHERE id = 2",
                {},
                sqlalchemy.exc.NoResultFound,
            ),
            (
                "SELECT body FROM memories, generate_series(1, 2)",
                {},
                sqlalchemy.exc.MultipleResultsFound,
            ),
        ],
        ids=["unique", "syntax", "division", "bad-type", "no-row", "two-rows"],
    )
    async def test_query_faults_do_not_open(self, engine, sql, params, error):
        """The server answered: IntegrityError, ProgrammingError,
        DBAPIError, and scalar_one() on no row or two. Once, uncounted."""
        p = make_policy("save", failure_threshold=1, retry={"attempts": 3})
        calls = 0

        @p
        async def run() -> Any:
            nonlocal calls
            calls += 1
            async with engine.begin() as conn:
                return (await conn.execute(text(sql), params)).scalar_one()

        for _ in range(3):
            with pytest.raises(error):
                await run()
        status = p.status()
        assert (3, "closed", 0, 3) == (
            calls,
            p.state,
            status["failures"],
            status["successes"],
        )

    async def test_a_session_to_roll_back_is_neutral(self, engine):
        """After a failed flush, the session refuses every statement
        (PendingRollbackError) before sending it: not retried, neither
        a failure nor a success."""
        from sqlalchemy import Column, Integer, Text  # noqa: PLC0415
        from sqlalchemy.ext.asyncio import AsyncSession  # noqa: PLC0415
        from sqlalchemy.orm import DeclarativeBase  # noqa: PLC0415

        class Base(DeclarativeBase):
            pass

        class Memory(Base):
            __tablename__ = "memories"
            id = Column(Integer, primary_key=True)
            body = Column(Text)

        p = make_policy("save", failure_threshold=1, retry={"attempts": 3})
        calls = 0
        async with AsyncSession(engine) as session:
            session.add(Memory(id=1, body="again"))
            with pytest.raises(sqlalchemy.exc.IntegrityError):
                await session.flush()

            @p
            async def count() -> Any:
                nonlocal calls
                calls += 1
                return await session.scalar(
                    text("SELECT count(*) FROM memories")
                )

            with pytest.raises(sqlalchemy.exc.PendingRollbackError):
                await count()
        status = p.status()
        assert (1, "closed", 0, 0) == (
            calls,
            p.state,
            status["failures"],
            status["successes"],
        )

    def test_sync_engine_over_psycopg(self, pg):
        """Sync SQLAlchemy over psycopg 3: IntegrityError is not counted."""
        engine = create_engine(
            pg.dsn().replace("postgresql://", "postgresql+psycopg://", 1),
            poolclass=NullPool,
        )
        p = make_policy("save", failure_threshold=1, retry={"attempts": 3})

        @p
        def insert() -> None:
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO memories VALUES (1, 'x')"))

        try:
            with pytest.raises(sqlalchemy.exc.IntegrityError):
                insert()
        finally:
            engine.dispose()
        assert ("closed", 0, 1) == (
            p.state,
            p.status()["failures"],
            p.status()["successes"],
        )

    async def test_killed_server_opens(self, engine, pg):
        """The server killed: counted, the circuit opens, refusals follow."""
        p = make_policy("save", failure_threshold=2, retry={"attempts": 1})
        async with engine.connect() as conn:
            assert 1 == await p.acall(
                lambda: conn.scalar(text("SELECT count(*) FROM memories"))
            )
            pg.stop(mode="immediate")
            with pytest.raises(sqlalchemy.exc.DBAPIError):
                await p.acall(lambda: conn.execute(text("SELECT 1")))
            status = p.status()
            assert ("closed", 1, "connection_reset") == (
                p.state,
                status["failures"],
                status["last_cause"],
            )
        with pytest.raises(OSError):
            await p.acall(_fresh_query, engine)
        assert "open" == p.state
        with pytest.raises(CircuitOpenError) as refused:
            await p.acall(_fresh_query, engine)
        assert "pg_refused" == refused.value.last_cause

    async def test_unit_of_work_retries_on_a_new_connection(self, pg):
        """A pooled connection dies: the retry opens a new one (refused)."""
        engine = create_async_engine(sqlalchemy_url(pg))
        p = make_policy("save", failure_threshold=10, retry={"attempts": 3})

        @p
        async def count() -> Any:
            async with engine.begin() as conn:
                return await conn.scalar(text("SELECT count(*) FROM memories"))

        try:
            assert 1 == await count()  # the pool now holds a connection
            pg.stop(mode="immediate")
            with pytest.raises(ConnectionRefusedError):
                await count()
        finally:
            await engine.dispose()
        assert 3 == p.status()["failures"]

    async def test_killed_server_diagnosis(self, engine, pg):
        """diagnose() reaches the asyncpg error through .orig."""
        from sage_resilience import diagnose  # noqa: PLC0415

        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            pg.stop(mode="immediate")
            with pytest.raises(sqlalchemy.exc.DBAPIError) as info:
                await conn.execute(text("SELECT 1"))
        found = diagnose(info.value, policy=make_policy("save"))
        assert ("connection_reset", "08003") == (
            found.cause,
            found.details.get("sqlstate"),
        )


async def _fresh_query(engine: Any) -> Any:
    async with engine.connect() as conn:
        return await conn.scalar(text("SELECT 1"))


# Without asyncpg: tests/test_extras.py.

"""sqlite: the Python state machine in ``BEGIN IMMEDIATE`` transactions.

Processes of one host share the file; each polls ``PRAGMA data_version``
to see the others' changes.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

from sage_resilience._storage.backend import Backend
from sage_resilience._storage.machine import Outcome, View, _Row, _step

if TYPE_CHECKING:
    from sage_resilience._storage.shared import _Op

#: Seconds between ``PRAGMA data_version`` checks (sqlite): the bound on
#: how long another process's change takes to be seen.
SQLITE_POLL_INTERVAL: Final = 0.05
#: sqlite busy timeout: how long a transaction waits for another writer.
SQLITE_BUSY_TIMEOUT: Final = 2.0

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS breakers (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    counter INTEGER NOT NULL,
    successes INTEGER NOT NULL,
    opened_at INTEGER NOT NULL,
    probe_at INTEGER NOT NULL,
    forced INTEGER NOT NULL,
    version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS probes (
    name TEXT NOT NULL,
    token TEXT NOT NULL,
    expires INTEGER NOT NULL,
    PRIMARY KEY (name, token)
) WITHOUT ROWID;
"""

_COLUMNS: Final = (
    "state, counter, successes, opened_at, probe_at, forced, version"
)


class SqliteBackend(Backend):
    """sqlite in WAL mode: short transactions, ``data_version`` polling."""

    name = "sqlite"
    tell_siblings = True
    poll_interval = SQLITE_POLL_INTERVAL
    refresh_interval = None

    def __init__(self, path: str) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._data_version = -1
        super().__init__(path)

    def _connect(self) -> None:
        if self._db is not None:
            return
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        # Several processes opening a new file at once race for the switch
        # to WAL, which needs an exclusive lock and answers "database is
        # locked" at once instead of waiting: retry within the busy timeout.
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT
        while True:
            try:
                self._db = self._open()
            except sqlite3.OperationalError as exc:
                locked = "locked" in str(exc) or "busy" in str(exc)
                if not locked or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)
            else:
                return

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self._path, timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("COMMIT")
        except BaseException:
            db.close()
            raise
        return db

    def _disconnect(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def _forget_connection(self) -> None:
        self._db = None
        self._data_version = -1

    def _ping(self) -> None:
        assert self._db is not None
        self._db.execute("SELECT 1").fetchone()

    def _execute(self, ops: list[_Op]) -> list[Outcome]:
        self._connect()
        db = self._db
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            outcomes = [self._one(db, op) for op in ops]
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        return outcomes

    def _one(self, db: sqlite3.Connection, op: _Op) -> Outcome:
        name = op.storage.breaker_name
        found = db.execute(
            f"SELECT {_COLUMNS} FROM breakers WHERE name = ?",  # noqa: S608
            (name,),
        ).fetchone()
        leases = dict(
            db.execute(
                "SELECT token, expires FROM probes WHERE name = ?", (name,)
            ).fetchall()
        )
        row = _Row(View.parse(found) if found else None, leases, op.now)
        _step(row, op.kind, op.args)
        if row.dirty:
            db.execute(
                f"INSERT OR REPLACE INTO breakers (name, {_COLUMNS}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, *row.view().args()),
            )
        if row.leases_changed:
            db.execute("DELETE FROM probes WHERE name = ?", (name,))
            db.executemany(
                "INSERT INTO probes (name, token, expires) VALUES (?, ?, ?)",
                [(name, t, e) for t, e in row.leases.items()],
            )
        return Outcome(
            row.view(), bool(row.won), bool(row.granted), int(row.hint)
        )

    def _poll(self) -> list[tuple[str, View]]:
        self._connect()
        db = self._db
        assert db is not None
        (version,) = db.execute("PRAGMA data_version").fetchone()
        if version == self._data_version:
            return []
        self._data_version = version
        names = {s.breaker_name for s in self.storages()}
        news = []
        for name, *fields in db.execute(
            f"SELECT name, {_COLUMNS} FROM breakers"  # noqa: S608
        ):
            if name in names:
                news.append((name, View.parse(fields)))
        return news

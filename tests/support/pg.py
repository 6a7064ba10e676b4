"""Real PostgreSQL servers for tests, on 127.0.0.1 and a Unix socket.

Two ways to get one, both returning a :class:`PgCluster`:

- :func:`pgvector_cluster` -- pgserver's bundled PostgreSQL 16 with
  pgvector 0.6.2, listening on TCP ``127.0.0.1:<free port>``.
- :func:`plain_pg15_cluster` -- a cluster of the machine's Debian
  PostgreSQL 15 (``/usr/lib/postgresql/15/bin``), which has no pgvector:
  the "pgvector is not installed on the server" case.

Both are context managers that stop the server and delete its data::

    with pgvector_cluster() as pg:
        pg.create_role("alice", password="s3cret")
        conn = await asyncpg.connect(pg.dsn(user="alice", password="s3cret"))
        pg.stop()      # an outage: connections now get ConnectionRefused
        pg.start()     # back, on the same port

The superuser ``postgres`` is trusted (no password) over both TCP and the
socket; roles made with a password must use it over TCP (scram-sha-256).
Administration (:meth:`PgCluster.psql`) goes over the Unix socket, so it
works whatever ``pg_hba.conf`` says about TCP.

Tests that cannot get a server call ``tests.support.unavailable`` (skip
locally, fail in CI) through :func:`require_pgserver` and
:func:`require_pg15`.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from tests.support import unavailable
from tests.support.http_servers import LOOPBACK, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

__all__ = [
    "PG15_BIN",
    "PgCluster",
    "PgCommandError",
    "pgvector_cluster",
    "plain_pg15_cluster",
    "quote_ident",
    "quote_literal",
    "require_pg15",
    "require_pgserver",
]

#: The machine's own PostgreSQL 15 (Debian package, no pgvector).
PG15_BIN = Path("/usr/lib/postgresql/15/bin")

_SUPERUSER = "postgres"
_PGSERVER_USER = "pgserver"


class PgCommandError(RuntimeError):
    """A PostgreSQL command failed; the message has its output."""


def _run(
    command: list[str],
    *,
    what: str,
    stdin: str | None = None,
    log: Path | None = None,
) -> str:
    """Run *command*; on failure raise with its stderr (and server log)."""
    try:
        result = subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=90,
        )
    except subprocess.TimeoutExpired as exc:
        msg = f"{what} timed out: {' '.join(command)}"
        raise PgCommandError(msg) from exc
    if result.returncode != 0:
        tail = ""
        if log is not None and log.exists():
            with contextlib.suppress(OSError):
                tail = "\nserver log:\n" + "\n".join(
                    log.read_text(errors="replace").splitlines()[-15:]
                )
        msg = (
            f"{what} failed (exit {result.returncode}): "
            f"{result.stderr.strip() or result.stdout.strip()}{tail}"
        )
        raise PgCommandError(msg)
    return result.stdout


def quote_ident(name: str) -> str:
    """An SQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """An SQL string literal, quoted."""
    return "'" + value.replace("'", "''") + "'"


class PgCluster:
    """A running PostgreSQL server owned by a test.

    Args:
        pgdata: The data directory.
        bin_dir: Where its ``pg_ctl`` and ``psql`` live.
        port: The TCP port on 127.0.0.1 (also names the Unix socket).
        run_as: The system user that owns *pgdata* and runs the server
            (None: the current user).
        on_close: Called after the server stopped, to delete its data.

    Attributes:
        host: ``"127.0.0.1"``.
        port: The TCP port.
        pgdata: The data directory.
        socket_dir: The directory of the Unix socket.
    """

    host = LOOPBACK

    def __init__(
        self,
        *,
        pgdata: Path,
        bin_dir: Path,
        port: int,
        run_as: str | None,
        on_close: Any = None,
    ) -> None:
        self.pgdata = pgdata
        self.bin_dir = bin_dir
        self.port = port
        self.run_as = run_as
        self.socket_dir = pgdata
        self.log = pgdata / "server.log"
        self._on_close = on_close
        self._closed = False

    # -- addresses --------------------------------------------------------

    def dsn(
        self,
        *,
        user: str = _SUPERUSER,
        password: str | None = None,
        database: str = "postgres",
        host: str | None = None,
        port: int | None = None,
    ) -> str:
        """A ``postgresql://`` URL for TCP (IPv6 hosts are bracketed)."""
        host = host or self.host
        if ":" in host:
            host = f"[{host}]"
        auth = f"{user}:{password}" if password is not None else user
        return f"postgresql://{auth}@{host}:{port or self.port}/{database}"

    def connect_kwargs(
        self,
        *,
        user: str = _SUPERUSER,
        password: str | None = None,
        database: str = "postgres",
    ) -> dict[str, Any]:
        """Keyword arguments for ``asyncpg.connect`` over TCP."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": user,
            "database": database,
        }
        if password is not None:
            kwargs["password"] = password
        return kwargs

    # -- administration ---------------------------------------------------

    def _command(self, program: str, *args: str) -> list[str]:
        command = [str(self.bin_dir / program), *args]
        if self.run_as is not None and os.geteuid() == 0:
            return ["runuser", "-u", self.run_as, "--", *command]
        return command

    def psql(self, sql: str, *, database: str = "postgres") -> str:
        """Run SQL as the superuser over the Unix socket; return stdout.

        Statements run one by one (so ``CREATE DATABASE`` works), stopping
        at the first error (:class:`PgCommandError`).
        """
        return _run(
            [
                str(self.bin_dir / "psql"),
                "-X", "-q", "-A", "-t",
                "-v", "ON_ERROR_STOP=1",
                "-h", str(self.socket_dir),
                "-p", str(self.port),
                "-U", _SUPERUSER,
                "-d", database,
            ],
            what="psql",
            stdin=sql,
        )  # fmt: skip

    def reload(self) -> None:
        """Make the server re-read ``pg_hba.conf`` and settings."""
        self.psql("SELECT pg_reload_conf();")

    def require_password(self, role: str) -> None:
        """Make *role* log in over TCP with scram-sha-256 only."""
        hba = self.pgdata / "pg_hba.conf"
        lines = "".join(
            f"host all {quote_ident(role)} {net} scram-sha-256\n"
            for net in ("127.0.0.1/32", "::1/128")
        )
        hba.write_text(lines + hba.read_text())
        self.reload()

    def create_role(
        self,
        name: str,
        *,
        password: str | None = None,
        connection_limit: int | None = None,
        superuser: bool = False,
    ) -> None:
        """Create a login role (no privileges beyond PUBLIC's).

        With *password*, the role must use it over TCP. With
        *connection_limit*, opening one more connection than that fails
        with ``TooManyConnectionsError`` (SQLSTATE 53300).
        """
        sql = f"CREATE ROLE {quote_ident(name)} LOGIN"
        if superuser:
            sql += " SUPERUSER"
        if password is not None:
            sql += f" PASSWORD {quote_literal(password)}"
        if connection_limit is not None:
            sql += f" CONNECTION LIMIT {int(connection_limit)}"
        self.psql(sql + ";")
        if password is not None:
            self.require_password(name)

    def create_database(self, name: str, *, owner: str | None = None) -> None:
        """Create a database (without ``CREATE EXTENSION vector``)."""
        sql = f"CREATE DATABASE {quote_ident(name)}"
        if owner is not None:
            sql += f" OWNER {quote_ident(owner)}"
        self.psql(sql + ";")

    def revoke_connect(self, database: str) -> None:
        """Only the owner and superusers may connect to *database* now."""
        self.psql(
            f"REVOKE CONNECT ON DATABASE {quote_ident(database)} FROM PUBLIC;"
        )

    # -- lifecycle --------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the server process is up (``pg_ctl status``)."""
        result = subprocess.run(
            self._command("pg_ctl", "-D", str(self.pgdata), "status"),
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def start(self) -> None:
        """Start the server on 127.0.0.1:port and the Unix socket.

        Waits until it accepts connections.
        """
        options = f"-h {self.host} -p {self.port} -k {self.socket_dir}"
        _run(
            self._command(
                "pg_ctl", "-D", str(self.pgdata), "-w", "-t", "30",
                "-l", str(self.log), "-o", options, "start",
            ),
            what="pg_ctl start",
            log=self.log,
        )  # fmt: skip

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server; connections are cut.

        Args:
            mode: ``"fast"`` (disconnect clients, clean shutdown),
                ``"immediate"`` (like a crash) or ``"smart"``.
        """
        if not self.running:
            return
        _run(
            self._command(
                "pg_ctl", "-D", str(self.pgdata), "-w", "-t", "30",
                "-m", mode, "stop",
            ),
            what="pg_ctl stop",
            log=self.log,
        )  # fmt: skip

    def restart(self) -> None:
        """Stop then start again, on the same port."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and delete its data. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            with contextlib.suppress(PgCommandError, OSError):
                self.stop(mode="fast")
        finally:
            if self._on_close is not None:
                self._on_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _start_on_a_free_port(cluster: PgCluster, attempts: int = 3) -> None:
    """Start; if another process took the port meanwhile, pick another."""
    for attempt in range(attempts):
        try:
            cluster.start()
        except PgCommandError as exc:
            if attempt + 1 == attempts or "in use" not in str(exc):
                raise
            cluster.port = free_port()
        else:
            return


# -- pgserver (PostgreSQL 16 + pgvector) --------------------------------------


def require_pgserver() -> Any:
    """The pgserver module, or skip (locally) / fail (CI)."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset.
            warnings.simplefilter("ignore")
            import pgserver  # noqa: PLC0415
            import pgserver.utils  # noqa: PLC0415
    except ImportError:
        unavailable("pgserver", "pip install pgserver (extra 'demo')")
    return pgserver


@functools.cache
def _pgserver_install() -> tuple[Path, str | None]:
    """pgserver's bundled binaries, usable by the user that runs them.

    As root, PostgreSQL must run as another user: like
    ``pgserver.get_server`` we use the ``pgserver`` system user and make
    the install readable to it, with pgserver's own helpers.
    """
    pgserver = require_pgserver()
    bin_dir = Path(pgserver.__file__).parent / "pginstall" / "bin"
    if os.geteuid() != 0:
        return bin_dir, None
    from pgserver import utils  # noqa: PLC0415

    utils.ensure_user_exists(_PGSERVER_USER)
    utils.ensure_prefix_permissions(bin_dir)
    read = stat.S_IRGRP | stat.S_IROTH
    utils.ensure_folder_permissions(
        bin_dir, read | stat.S_IXGRP | stat.S_IXOTH
    )
    utils.ensure_folder_permissions(bin_dir.parent / "lib", read)
    return bin_dir, _PGSERVER_USER


_TEMPLATES: dict[tuple[Path, str | None], Path] = {}
_TEMPLATE_LOCK = threading.Lock()


def _template(bin_dir: Path, run_as: str | None) -> Path:
    """A freshly initdb'd data directory, made once per process.

    Each cluster starts from a copy (``cp -a`` keeps the owner), which is
    several times faster than running initdb again.
    """
    key = (bin_dir, run_as)
    with _TEMPLATE_LOCK:
        if key in _TEMPLATES:
            return _TEMPLATES[key]
        base = Path(tempfile.mkdtemp(prefix="sage-pgtemplate-"))
        atexit.register(shutil.rmtree, base, ignore_errors=True)
        base.chmod(0o755)
        pgdata = _private_dir(base / "data", run_as)
        command = [
            str(bin_dir / "initdb"), "-D", str(pgdata), "-U", _SUPERUSER,
            "--auth=trust", "--encoding=UTF8", "--no-sync",
            "--wal-segsize=1",  # 1 MB of WAL instead of 16: faster copies
        ]  # fmt: skip
        if run_as is not None:
            command = ["runuser", "-u", run_as, "--", *command]
        _run(command, what="initdb")
        _TEMPLATES[key] = pgdata
        return pgdata


def _private_dir(path: Path, run_as: str | None) -> Path:
    path.mkdir(mode=0o700)
    if run_as is not None:
        shutil.chown(path, run_as, run_as)
    return path


@contextlib.contextmanager
def _cluster(
    bin_dir: Path, run_as: str | None, base: Path
) -> Iterator[PgCluster]:
    pgdata = base / "pgdata"
    _run(
        ["cp", "-a", str(_template(bin_dir, run_as)), str(pgdata)],
        what="copying the template cluster",
    )
    cluster = PgCluster(
        pgdata=pgdata,
        bin_dir=bin_dir,
        port=free_port(),
        run_as=run_as,
        on_close=lambda: shutil.rmtree(base, ignore_errors=True),
    )
    try:
        _start_on_a_free_port(cluster)
        yield cluster
    finally:
        cluster.close()


def _base_dir(directory: Path | None, run_as: str | None) -> Path:
    """Where a cluster's data goes, reachable by the server's user."""
    if directory is not None and run_as is None:
        base = Path(directory).resolve() / "pg"
        base.mkdir()
        return base
    # As root the server runs as another user, who must be able to enter
    # the directory: pytest keeps its base temp directory private (0700,
    # and resets it when another session starts), so use the system's.
    base = Path(tempfile.mkdtemp(prefix="sage-pg-"))
    base.chmod(0o755)
    return base


@contextlib.contextmanager
def pgvector_cluster(directory: Path | None = None) -> Iterator[PgCluster]:
    """pgserver's PostgreSQL 16 with pgvector, on TCP 127.0.0.1.

    Uses pgserver's bundled build (with pgvector) but drives ``initdb`` and
    ``pg_ctl`` directly: ``pgserver.get_server`` listens on a Unix socket
    only and gives ``pg_ctl start`` 10 s, which a loaded machine exceeds.

    Args:
        directory: An existing directory for the data (``pg/pgdata``
            inside it); a new temporary one by default, and always when
            running as root (the server then runs as another user, who
            cannot enter pytest's private ``tmp_path``).

    Yields:
        The running cluster; stopped and deleted on exit.
    """
    bin_dir, run_as = _pgserver_install()
    with _cluster(bin_dir, run_as, _base_dir(directory, run_as)) as cluster:
        yield cluster


# -- the machine's PostgreSQL 15, without pgvector -------------------------


def require_pg15() -> Path:
    """The PostgreSQL 15 binaries, or skip (locally) / fail (CI)."""
    if not (PG15_BIN / "initdb").exists():
        unavailable(
            "PostgreSQL 15 binaries",
            f"apt-get install postgresql-15 (looked in {PG15_BIN})",
        )
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        unavailable("runuser", "needed to run PostgreSQL as 'postgres'")
    return PG15_BIN


@contextlib.contextmanager
def plain_pg15_cluster(directory: Path | None = None) -> Iterator[PgCluster]:
    """A fresh PostgreSQL 15 cluster without pgvector on 127.0.0.1.

    Made with the Debian binaries; when running as root the data belongs
    to the ``postgres`` system user and commands go through ``runuser``.

    Args:
        directory: As for :func:`pgvector_cluster`.

    Yields:
        The running cluster; stopped and deleted on exit.
    """
    bin_dir = require_pg15()
    run_as = "postgres" if os.geteuid() == 0 else None
    with _cluster(bin_dir, run_as, _base_dir(directory, run_as)) as cluster:
        yield cluster

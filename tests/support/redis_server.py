"""A real ``redis-server`` on 127.0.0.1 for tests and benchmarks.

One throwaway server per test module: a free loopback port, no
persistence (``--save ''``, ``--appendonly no``), a private working
directory. Besides start and stop it can fail the ways a real Redis
fails::

    with RedisServer() as server:
        server.url            # redis://127.0.0.1:PORT/0
        server.kill()         # SIGKILL: connections reset, data gone
        server.start()        # the same port again, empty
        server.pause()        # SIGSTOP: connects, never answers
        server.resume()       # SIGCONT
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["RedisServer", "free_port"]


def free_port() -> int:
    """A TCP port nothing listens on right now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A ``redis-server`` child process on a loopback port."""

    def __init__(self, binary: str | None = None) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            msg = "redis-server is not installed"
            raise FileNotFoundError(msg)
        self.binary = found
        self.port = free_port()
        self._dir = tempfile.mkdtemp(prefix="sage-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        """The server's process id (it must be running)."""
        assert self._process is not None
        return self._process.pid

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart, on the same port) and wait for PONG."""
        if self._process is not None and self._process.poll() is None:
            return
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self._process.poll() is not None:
                msg = f"redis-server exited with {self._process.returncode}"
                raise RuntimeError(msg)
            if time.monotonic() > deadline:
                self.stop()
                msg = f"redis-server did not answer on port {self.port}"
                raise TimeoutError(msg)
            time.sleep(0.02)

    def ping(self, timeout: float = 0.5) -> bool:
        """Whether the server answers ``PING`` now."""
        try:
            with socket.create_connection(
                ("127.0.0.1", self.port), timeout=timeout
            ) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, every connection dropped)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server (idempotent); resumes a paused one first."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

"""Real network stand-ins on 127.0.0.1 for tests and benchmarks.

Everything here is a real socket served from a daemon thread, so clients
(httpx, asyncpg, raw sockets) go through the kernel exactly as in
production. All servers are context managers; ``stop()`` is idempotent.

- :class:`StandInServer` -- a scriptable HTTP/1.1 server: per path, a
  sequence of :class:`Response` objects (status, headers, JSON or raw body,
  delay), the last one repeating; it counts hits and records requests. It
  can be stopped and started again on the same port (an outage), and can
  serve HTTPS with a self-signed certificate (``tls=True``)::

      with StandInServer() as server:
          server.script("/v1/models", [Response(503), Response(200, json={})])
          httpx.get(server.url + "/v1/models")   # 503
          httpx.get(server.url + "/v1/models")   # 200, and every later call
          assert server.hits["/v1/models"] == 2

- :class:`SilentServer` -- accepts TCP connections and never answers
  (a filtered port or a hung service: the client times out).
- :class:`ResettingServer` -- accepts, reads what the client sends, then
  resets the connection (``SO_LINGER`` 0): ``ConnectionResetError``.
- :func:`closed_port` -- a port nothing listens on: connection refused.
- :data:`UNRESOLVABLE_HOST` -- a name under ``.invalid`` (RFC 2606), which
  never resolves, without any DNS traffic leaving the machine.
- :func:`self_signed_certificate` -- a certificate and key for 127.0.0.1.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import http.server
import json as jsonlib
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from types import TracebackType

__all__ = [
    "LOOPBACK",
    "UNRESOLVABLE_HOST",
    "RecordedRequest",
    "ResettingServer",
    "Response",
    "SilentServer",
    "StandInServer",
    "closed_port",
    "free_port",
    "self_signed_certificate",
]

LOOPBACK = "127.0.0.1"

#: A host name that can never resolve (RFC 2606 reserves ``.invalid``).
UNRESOLVABLE_HOST = "sage-resilience-test.invalid"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago on *host*."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def closed_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on: connecting is refused at once."""
    return free_port(host)


# -- certificates -------------------------------------------------------------

_CERT_LOCK = threading.Lock()
_CERT_CACHE: dict[str, tuple[Path, Path]] = {}


def self_signed_certificate(
    directory: Path | None = None, *, common_name: str = LOOPBACK
) -> tuple[Path, Path]:
    """Create (once per process) a self-signed certificate and its key.

    The certificate is valid for ``127.0.0.1``, ``::1`` and ``localhost``;
    no client trusts it unless told to (``verify=cert_path``), which is what
    a TLS-failure test needs. Made with the ``openssl`` command line.

    Args:
        directory: Where to write ``cert.pem`` and ``key.pem``; a private
            temporary directory (reused for the whole process) by default.
        common_name: The certificate's subject CN.

    Returns:
        ``(cert_path, key_path)``.

    Raises:
        FileNotFoundError: ``openssl`` is not installed.
    """
    with _CERT_LOCK:
        if directory is None and common_name in _CERT_CACHE:
            return _CERT_CACHE[common_name]
        openssl = shutil.which("openssl")
        if openssl is None:
            msg = "the openssl program is needed to make a test certificate"
            raise FileNotFoundError(msg)
        where = directory
        if where is None:
            where = Path(tempfile.mkdtemp(prefix="sage-tls-"))
            atexit.register(shutil.rmtree, where, ignore_errors=True)
        cert, key = where / "cert.pem", where / "key.pem"
        subprocess.run(
            [
                openssl, "req", "-x509", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "2",
                "-keyout", str(key), "-out", str(cert),
                "-subj", f"/CN={common_name}",
                "-addext",
                "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        if directory is None:
            _CERT_CACHE[common_name] = (cert, key)
        return cert, key


# -- the scriptable HTTP server ---------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    """One scripted answer of :class:`StandInServer`.

    Attributes:
        status: The HTTP status code.
        json: A body to send as JSON (sets ``Content-Type``); wins over
            *body* when both are given.
        body: A raw body (``str`` is sent as UTF-8).
        headers: Extra response headers, e.g. ``{"Retry-After": "2"}``.
        delay: Seconds to wait before answering (a slow dependency). The
            wait ends early, without an answer, when the server stops.
        close: Close the connection after answering (no keep-alive).
        cut_after: Send only this many bytes of the body (announcing all
            of it in ``Content-Length``; with *chunks*, this many chunks
            and no final one), then close the connection: a response
            that breaks off mid-body.
        chunks: Send the body as these pieces, one ``chunk_delay`` apart,
            with ``Transfer-Encoding: chunked`` (a stream, such as
            server-sent events); *body* and *json* are then unused.
        chunk_delay: Seconds between two *chunks*.
    """

    status: int = 200
    json: Any = None
    body: bytes | str = b""
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    delay: float = 0.0
    close: bool = False
    cut_after: int | None = None
    chunks: Sequence[bytes] | None = None
    chunk_delay: float = 0.0

    def payload(self) -> tuple[bytes, str | None]:
        """The body bytes and the content type to announce (or None)."""
        if self.json is not None:
            return jsonlib.dumps(self.json).encode(), "application/json"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return self.body, None


@dataclasses.dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request :class:`StandInServer` received (for assertions)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


class _Script:
    """Responses of one path: consumed in order, the last one repeats."""

    def __init__(self, responses: Sequence[Response]) -> None:
        self._responses = list(responses)
        self._next = 0

    def take(self) -> Response:
        response = self._responses[min(self._next, len(self._responses) - 1)]
        self._next += 1
        return response


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    stand_in: StandInServer

    def finish_request(
        self, request: Any, client_address: Any
    ) -> None:  # runs in the connection's own thread
        context = self.stand_in.ssl_context
        if context is not None:
            try:
                request = context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                with contextlib.suppress(OSError):
                    request.close()
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that go away mid-answer are normal in these tests."""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Stay quiet: tests read hits and requests, not logs."""

    def setup(self) -> None:
        super().setup()
        self.server.stand_in._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.stand_in._track(self.connection, add=False)
        with contextlib.suppress(OSError):
            super().finish()

    def _serve(self) -> None:
        stand_in = self.server.stand_in
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        response = stand_in._record(
            RecordedRequest(
                method=self.command,
                path=path,
                query=query,
                headers=dict(self.headers.items()),
                body=body,
            )
        )
        if response.delay and stand_in._stopping.wait(response.delay):
            self.close_connection = True
            return
        payload, content_type = response.payload()
        self.send_response(response.status)
        headers = {k.lower(): v for k, v in response.headers.items()}
        if content_type and "content-type" not in headers:
            self.send_header("Content-Type", content_type)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.chunks is not None:
            self._send_chunks(response, stand_in)
            return
        self.send_header("Content-Length", str(len(payload)))
        if response.close or response.cut_after is not None:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command == "HEAD":
            return
        if response.cut_after is not None:
            self.wfile.write(payload[: response.cut_after])
            self.wfile.flush()
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(payload)

    def _send_chunks(
        self, response: Response, stand_in: StandInServer
    ) -> None:
        self.send_header("Transfer-Encoding", "chunked")
        if response.close or response.cut_after is not None:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        assert response.chunks is not None
        for index, chunk in enumerate(response.chunks):
            if index and stand_in._stopping.wait(response.chunk_delay):
                return
            if response.cut_after is not None and index >= response.cut_after:
                # Chunks cut off: no terminating chunk, connection closed.
                self.wfile.flush()
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve


class StandInServer:
    """A scriptable HTTP server on 127.0.0.1, in a daemon thread.

    Unscripted paths answer *default* (404 with an OpenAI-style error body
    unless told otherwise). ``stop()`` closes the listening socket and every
    open connection, so clients see a real outage; ``start()`` serves again
    on the same port.

    Args:
        port: The port; a free one by default.
        default: The answer for paths without a script.
        tls: Serve HTTPS with :func:`self_signed_certificate` (clients must
            pass ``verify=server.cert_path`` or fail verification).

    Attributes:
        url: ``http://127.0.0.1:PORT`` (``https://`` with *tls*), no slash.
        port: The TCP port.
        cert_path: The certificate file with *tls*, else None.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        default: Response | None = None,
        tls: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.default = default or Response(
            404,
            json={"error": {"message": "no such route", "type": "not_found"}},
        )
        self.cert_path: Path | None = None
        self.ssl_context: ssl.SSLContext | None = None
        if tls:
            cert, key = self_signed_certificate()
            self.cert_path = cert
            self.ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ssl_context.load_cert_chain(cert, key)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://{LOOPBACK}:{self.port}"
        self._lock = threading.Lock()
        self._scripts: dict[tuple[str | None, str], _Script] = {}
        self._hits: Counter[str] = Counter()
        self._requests: list[RecordedRequest] = []
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def client_ssl_context(self) -> ssl.SSLContext:
        """An SSL context that trusts this server (for ``verify=``)."""
        if self.cert_path is None:
            msg = "this server does not serve TLS (tls=False)"
            raise ValueError(msg)
        return ssl.create_default_context(cafile=str(self.cert_path))

    # -- scripting --------------------------------------------------------

    def script(
        self,
        path: str,
        responses: Response | Iterable[Response],
        *,
        method: str | None = None,
    ) -> None:
        """Answer requests to *path* with *responses*, in order.

        Each request takes the next response; the last one repeats for
        every later request. Scripting a path again starts over.

        Args:
            path: The path without the query string, e.g. ``"/v1/models"``.
            responses: One response or a sequence of them.
            method: Only for this method (``"POST"``...); any by default.
        """
        seq = [responses] if isinstance(responses, Response) else [*responses]
        if not seq:
            msg = "script() needs at least one response"
            raise ValueError(msg)
        with self._lock:
            self._scripts[method and method.upper(), path] = _Script(seq)

    def reset(self) -> None:
        """Forget scripts, hits and recorded requests."""
        with self._lock:
            self._scripts.clear()
            self._hits.clear()
            self._requests.clear()

    @property
    def hits(self) -> Counter[str]:
        """Requests received so far, per path (a snapshot)."""
        with self._lock:
            return Counter(self._hits)

    @property
    def total_hits(self) -> int:
        """Requests received so far, all paths together."""
        with self._lock:
            return self._hits.total()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    def _record(self, request: RecordedRequest) -> Response:
        with self._lock:
            self._hits[request.path] += 1
            self._requests.append(request)
            script = self._scripts.get(
                (request.method, request.path)
            ) or self._scripts.get((None, request.path))
            return script.take() if script else self.default

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # -- lifecycle --------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._httpd is not None

    def start(self) -> Self:
        """Listen and serve (again, on the same port after a stop)."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer((LOOPBACK, self.port), _Handler)
        httpd.stand_in = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"stand-in-http-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (an outage)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- raw TCP misbehaviour ---------------------------------------------------


class _TCPServer:
    """Accept connections in a daemon thread; subclasses decide what next."""

    def __init__(self, *, host: str = LOOPBACK) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self.host = host
        self.port = int(self._sock.getsockname()[1])
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def _on_accept(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._on_accept(conn)

    def start(self) -> Self:
        """Listen and start accepting."""
        if self._thread is None:
            self._sock.listen(64)
            self._thread = threading.Thread(
                target=self._loop, name=type(self).__name__, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket and every held connection."""
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        for conn in self._held:
            with contextlib.suppress(OSError):
                conn.close()
        self._held.clear()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class SilentServer(_TCPServer):
    """Accepts TCP connections and never sends a byte.

    Clients connect at once and then wait for an answer until their own
    timeout: a hung dependency, or (for a connect with a handshake, like
    PostgreSQL's) what a firewall that drops packets looks like.

    Attributes:
        host: The address it listens on.
        port: Its port.
        accepted: Connections accepted so far.
    """

    def _on_accept(self, conn: socket.socket) -> None:
        self._held.append(conn)


class ResettingServer(_TCPServer):
    """Accepts, reads the client's first bytes, then resets the connection.

    The close uses ``SO_LINGER`` with a zero timeout, so the kernel sends a
    TCP RST: the client sees ``ConnectionResetError`` (httpx: ``ReadError``
    or ``RemoteProtocolError``).

    Attributes:
        host: The address it listens on.
        port: Its port.
        accepted: Connections accepted so far.
    """

    def __init__(self, *, host: str = LOOPBACK, read_first: bool = True):
        super().__init__(host=host)
        self.read_first = read_first

    def _on_accept(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            if self.read_first:
                conn.settimeout(2.0)
                conn.recv(65536)
            conn.setsockopt(
                socket.SOL_SOCKET,
                socket.SO_LINGER,
                struct.pack("ii", 1, 0),
            )
        conn.close()

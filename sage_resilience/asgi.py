"""A dependency-free ASGI app: health, breaker status, metrics, controls.

Run it on its own (``uvicorn sage_resilience.asgi:app``) or mount it in a
FastAPI/Starlette application (``app.mount("/resilience", asgi.app)``).
Routes:

- ``GET /health``: :func:`sage_resilience.health`; HTTP 200 when ``ok`` or
  ``degraded``, 503 when ``down``.
- ``GET /breakers``: :func:`sage_resilience.breaker_status`.
- ``GET /breakers/{name}``: one status entry (404 for an unknown name).
- ``GET /metrics``: prometheus-client's own exposition of its default
  registry (``prometheus_client.make_asgi_app``): Prometheus text, or
  OpenMetrics when the ``Accept`` header asks for it, gzipped when
  ``Accept-Encoding`` allows. Needs the ``metrics`` extra (501 without
  it); with it, creating the app registers the sage_resilience collector
  and the attempt latency hook, so the latency histogram counts every
  attempt from then on, not only those after the first scrape.
- ``POST /breakers/{name}/open``, ``.../close``, ``.../reset``: operator
  controls; answer the breaker's new status entry.

The controls need ``Authorization: Bearer <token>`` matching the token
given to :func:`create_app` or env ``SAGE_RESILIENCE_ADMIN_TOKEN`` (read
at each request). Checked in this order: no token configured, 403;
missing or wrong token, 401; unknown breaker, 404 (so a caller without
the token cannot probe breaker names). Errors are JSON ``{"error": ...}``.

Status reads are in memory; the controls run in a worker thread, so the
event loop never waits on a state storage.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
from typing import TYPE_CHECKING, Any, Final

from sage_resilience import _registry
from sage_resilience._events import logger
from sage_resilience.status import breaker_status, health

if TYPE_CHECKING:
    from collections.abc import (
        Awaitable,
        Callable,
        Coroutine,
        MutableMapping,
    )

    from sage_resilience._policy import Policy

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]

__all__ = ["TOKEN_ENV", "ResilienceApp", "app", "create_app"]

#: The environment variable holding the admin token.
TOKEN_ENV: Final = "SAGE_RESILIENCE_ADMIN_TOKEN"  # noqa: S105 - a name

_ACTIONS: Final = ("open", "close", "reset")

_JSON: Final = b"application/json"


def _enable_metrics() -> None:
    """Register the collector and the latency hook, if installed.

    Done when the app is created rather than at the first scrape, so the
    latency histogram misses no attempt made before that scrape.
    """
    try:
        from sage_resilience.metrics import register_metrics  # noqa: PLC0415
    except ImportError:
        return
    register_metrics()


class ResilienceApp:
    """The ASGI 3 application built by :func:`create_app`.

    .. versionadded:: 0.1.0
    """

    def __init__(self, *, admin_token: str | None = None) -> None:
        self._admin_token = admin_token
        _enable_metrics()

    def admin_token(self) -> str | None:
        """The token in force: the argument, else the environment."""
        token = self._admin_token
        if token is None:
            token = os.environ.get(TOKEN_ENV)
        return token or None

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Serve one ASGI connection (``http`` or ``lifespan``)."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, send: Send) -> None:
        method: str = scope["method"]
        head = method == "HEAD"
        parts = _route_path(scope).split("/")[1:]
        if not _registry.configured():
            # Configuring reads a file: keep it off the event loop.
            await asyncio.to_thread(_registry.current_config)
        match parts:
            case ["health"]:
                allowed = "GET"
            case ["breakers"] | ["breakers", _] | ["metrics"]:
                allowed = "GET"
            case ["breakers", _, action] if action in _ACTIONS:
                allowed = "POST"
            case _:
                await _error(send, 404, "no such route", head=head)
                return
        if method != allowed and not (head and allowed == "GET"):
            await _error(
                send,
                405,
                f"method {method} not allowed; use {allowed}",
                headers=[(b"allow", allowed.encode())],
                head=head,
            )
            return
        if allowed == "POST":
            await self._control(scope, send, parts[1], parts[2])
        else:
            await _read(scope, send, parts, head=head)

    async def _control(
        self, scope: Scope, send: Send, name: str, action: str
    ) -> None:
        token = self.admin_token()
        client = _client(scope)
        if token is None:
            _refused(action, client, "disabled")
            await _error(
                send,
                403,
                f"operator controls are disabled: set {TOKEN_ENV}",
            )
            return
        if not _authorized(scope, token):
            _refused(action, client, "bad_token")
            await _error(
                send,
                401,
                "missing or wrong bearer token",
                headers=[(b"www-authenticate", b"Bearer")],
            )
            return
        found = _registry.policies().get(name)
        if found is None:
            await _error(send, 404, "no such breaker")
            return
        await asyncio.to_thread(_act, found, action)
        logger.info(
            "operator_action",
            breaker=name,
            action=action,
            source="http",
            client=client,
        )
        await _json(send, 200, found.status())


def create_app(*, admin_token: str | None = None) -> ResilienceApp:
    """Build the ASGI app.

    Args:
        admin_token: The bearer token the operator controls require; when
            None, env ``SAGE_RESILIENCE_ADMIN_TOKEN`` is read at each
            request. With neither, the controls answer 403.

    Returns:
        An ASGI 3 application.

    .. versionadded:: 0.1.0
    """
    return ResilienceApp(admin_token=admin_token)


#: The app with the token from env ``SAGE_RESILIENCE_ADMIN_TOKEN``.
app: ResilienceApp = create_app()


def _act(found: Policy, action: str) -> None:
    if action == "open":
        found.open()
    elif action == "close":
        found.close()
    else:
        found.reset()


def _route_path(scope: Scope) -> str:
    """The path below the mount point (Starlette keeps the full path)."""
    path: str = scope.get("path") or "/"
    root: str = scope.get("root_path") or ""
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


def _authorized(scope: Scope, token: str) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>``."""
    expected = token.encode()
    for key, value in scope.get("headers", ()):
        if key.lower() != b"authorization":
            continue
        scheme, _, given = bytes(value).strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(given.strip(), expected)
    return False


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    if not client:
        return None
    return f"{client[0]}:{client[1]}"


def _refused(action: str, client: str | None, reason: str) -> None:
    # The breaker name is left out: it is the caller's unverified input.
    logger.warning(
        "operator_action_refused",
        action=action,
        source="http",
        client=client,
        reason=reason,
    )


async def _read(
    scope: Scope, send: Send, parts: list[str], *, head: bool
) -> None:
    """Answer a GET (or HEAD) of a known route."""
    match parts:
        case ["health"]:
            report = health()
            code = 503 if report["status"] == "down" else 200
            await _json(send, code, report, head=head)
        case ["breakers"]:
            await _json(send, 200, breaker_status(), head=head)
        case ["breakers", name]:
            found = _registry.policies().get(name)
            if found is None:
                await _error(send, 404, "no such breaker", head=head)
            else:
                await _json(send, 200, found.status(), head=head)
        case _:
            await _metrics(scope, send, head=head)


async def _metrics(scope: Scope, send: Send, *, head: bool) -> None:
    try:
        from prometheus_client import REGISTRY, make_asgi_app  # noqa: PLC0415

        from sage_resilience.metrics import register_metrics  # noqa: PLC0415
    except ImportError:
        await _error(
            send,
            501,
            "metrics need prometheus-client: "
            "pip install 'sage-resilience[metrics]'",
            head=head,
        )
        return
    # Idempotent; leaves the latency hook as the application set it.
    register_metrics(REGISTRY, attempt_latency=False)
    # The default registry's process collector reads /proc: not on the
    # event loop.
    start, body = await asyncio.to_thread(
        _exposition, make_asgi_app(REGISTRY), scope
    )
    start["headers"] = [
        *((bytes(key).lower(), value) for key, value in start["headers"]),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"vary", b"Accept, Accept-Encoding"),
    ]
    await send(start)
    await send({"type": "http.response.body", "body": b"" if head else body})


def _exposition(
    exposition: Callable[[Scope, Receive, Send], Coroutine[Any, Any, None]],
    scope: Scope,
) -> tuple[Message, bytes]:
    """Run prometheus-client's ASGI app on this request, in this thread.

    It negotiates the format (``Accept``, the ``name[]`` query) and the
    compression (``Accept-Encoding``); its answer is sent from the
    server's event loop by the caller.
    """
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    # It iterates the headers: a scope may leave them out.
    request = {**scope, "headers": scope.get("headers") or []}
    asyncio.run(exposition(request, receive, send))
    start, body = sent
    return start, bytes(body["body"])


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _json(
    send: Send, status: int, payload: Any, *, head: bool = False
) -> None:
    body = json.dumps(payload, indent=2).encode() + b"\n"
    await _respond(send, status, body, _JSON, head=head)


async def _error(
    send: Send,
    status: int,
    message: str,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    head: bool = False,
) -> None:
    body = json.dumps({"error": message}).encode() + b"\n"
    await _respond(send, status, body, _JSON, headers=headers, head=head)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    head: bool = False,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *(headers or ()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body})

"""httpx integration: every request through a policy (extra ``http``).

:class:`ResilientTransport` wraps any httpx transport, sync or async, and
sends each request through a :class:`~sage_resilience.Policy`::

    client = httpx.AsyncClient(
        transport=ResilientTransport(policy("siliconflow_api"))
    )
    # or, with base_url, timeout and API key from the policy's settings:
    client = resilient_client("siliconflow_api")

What happens to a request:

* A response whose status is in the policy's ``failure_statuses`` (408,
  429 and 5xx by default) is a counted failure: its body is read and its
  connection released, and the request is retried (honouring a
  ``Retry-After``) as long as attempts are left and the circuit is closed.
  When retries run out, the **last failing response** is returned as httpx
  would return it (``raise_for_status()`` still works); it is never turned
  into an exception by this transport.
* Any other response (2xx, 3xx, 4xx such as 400/401/404) is returned at
  once: no retry, and it counts as a success for the breaker.
* An open circuit raises :class:`~sage_resilience.CircuitOpenError`
  without sending anything; so does a failure that opens the circuit while
  attempts are left (its ``__cause__`` is that failure).
* Transport errors (refused, reset, DNS, TLS, httpx timeouts) are counted
  and retried; once retries run out the last one is raised.
* An attempt that exceeds the policy's ``timeout`` (async only) raises
  :class:`PolicyTimeoutError`, both an ``httpx.TimeoutException`` and a
  ``TimeoutError``.
* Request bodies given as bytes, text, JSON or form data are replayed on
  each attempt. A streaming body (a generator, an async iterator, a file
  upload) can only be sent once: such a request gets **one attempt**, still
  through the breaker.

.. versionadded:: 0.1.0
"""

# ruff: noqa: A005 - the module name is public API (sage_resilience.http)
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Final, Self

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    msg = (
        "sage_resilience.http needs httpx, which is not installed: "
        "pip install 'sage-resilience[http]'"
    )
    raise ImportError(msg) from exc

from sage_resilience._classify import parse_retry_after
from sage_resilience._policy import Policy
from sage_resilience._registry import policy as _registered

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import TracebackType

__all__ = [
    "FailureStatusError",
    "PolicyTimeoutError",
    "ResilientTransport",
    "resilient_client",
    "resilient_sync_client",
]

#: Client keyword arguments that configure the default transport: httpx
#: ignores them when a transport is given, so they go to the inner one.
_TRANSPORT_KWARGS: Final = (
    "verify",
    "cert",
    "trust_env",
    "http1",
    "http2",
    "limits",
    "proxy",
)


class PolicyTimeoutError(httpx.TimeoutException, TimeoutError):
    """An attempt exceeded the policy's ``timeout``.

    Both an ``httpx.TimeoutException`` (so ``except httpx.HTTPError``
    handles it like any httpx timeout) and a ``TimeoutError`` (what the
    policy raises elsewhere). Its ``__cause__`` is the policy's own
    ``TimeoutError``.

    .. versionadded:: 0.1.0
    """


class FailureStatusError(httpx.HTTPStatusError):
    """A response whose status counts as a failure (``failure_statuses``).

    Raised inside an attempt so the breaker counts the answer and the
    retry honours its ``Retry-After``; the transport itself never lets it
    out: when retries run out it returns :attr:`response` instead. You see
    it as the ``__cause__`` of a :class:`~sage_resilience.CircuitOpenError`
    (the answer that opened the circuit) and in ``retry_scheduled``,
    ``retry_exhausted`` and ``last_failure``. Being an
    ``httpx.HTTPStatusError``, ``ignore_exceptions``/``record_exceptions``
    and :func:`~sage_resilience.diagnose` treat it as one.

    Attributes:
        response: The failing response, its body read into memory (its
            connection is already released).
        retry_after: Seconds the server asked to wait, or None.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self, request: httpx.Request, response: httpx.Response, raw: bytes
    ) -> None:
        # The URL without its query string: keys sometimes travel there.
        url = request.url.copy_with(query=None, fragment=None)
        kept = _buffered(request, response, raw)
        kept.read()
        super().__init__(
            f"{response.status_code} {response.reason_phrase} from "
            f"{request.method} {url}",
            request=request,
            response=kept,
        )
        self._raw = raw
        self._original = response
        self.retry_after = parse_retry_after(
            response.headers.get("retry-after")
        )

    def _unread(self) -> httpx.Response:
        """The response as a transport returns it: unread, for the client.

        A client reads and times a response itself; one read already would
        never get its ``elapsed`` set.
        """
        return _buffered(self.request, self._original, self._raw)


def _buffered(
    request: httpx.Request, response: httpx.Response, raw: bytes
) -> httpx.Response:
    """A fresh, unread response over *raw*, as a transport returns one.

    The client decodes it (content-encoding) and times it as usual; the
    original connection is already back in the pool.
    """
    extensions = {
        k: v for k, v in response.extensions.items() if k != "network_stream"
    }
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=httpx.ByteStream(raw),
        extensions=extensions,
        request=request,
    )


def _replayable(request: httpx.Request) -> bool:
    """Whether the body can be sent again (it is held in memory)."""
    return isinstance(request.stream, httpx.ByteStream)


def _resolve(policy: Policy | str) -> Policy:
    return policy if isinstance(policy, Policy) else _registered(policy)


async def _once_async(
    p: Policy, fn: Callable[..., Awaitable[httpx.Response]], *args: Any
) -> httpx.Response:
    """One attempt under *p*: breaker, timeout, bulkhead, no retry.

    For bodies that cannot be replayed. Uses the engine's single-attempt
    path; numbering it as the last attempt keeps the engine from turning
    a tripping failure into a refusal.
    """
    s = p._s  # the engine's single-attempt path
    return await p._attempt_async(s, fn, args, {}, s.attempts)


def _once_sync(
    p: Policy, fn: Callable[..., httpx.Response], *args: Any
) -> httpx.Response:
    """One sync attempt under *p* (see :func:`_once_async`)."""
    s = p._s  # the engine's single-attempt path
    return p._attempt_sync(s, fn, args, {}, s.attempts)


class ResilientTransport(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """An httpx transport that sends every request through a policy.

    One object serves both ``httpx.AsyncClient`` and ``httpx.Client``;
    mount one per dependency::

        httpx.AsyncClient(mounts={
            "https://api.example": ResilientTransport("siliconflow_api"),
            "https://embed.example": ResilientTransport("vectorizer"),
        })

    Args:
        policy: A :class:`~sage_resilience.Policy`, or the name of one in
            the registry (looked up on every request, so it follows
            :func:`~sage_resilience.configure`).
        transport: The transport that really sends (sync, async or both).
            By default an ``httpx.AsyncHTTPTransport`` and/or an
            ``httpx.HTTPTransport``, created on first use of each side.
        **transport_kwargs: Arguments for those default transports
            (``verify``, ``limits``, ``http2``...); not allowed with
            *transport*.

    Raises:
        TypeError: Both *transport* and *transport_kwargs* were given.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        policy: Policy | str,
        transport: httpx.AsyncBaseTransport
        | httpx.BaseTransport
        | None = None,
        **transport_kwargs: Any,
    ) -> None:
        if transport is not None and transport_kwargs:
            msg = (
                "give either an inner transport or arguments for the "
                f"default one, not both (got {sorted(transport_kwargs)})"
            )
            raise TypeError(msg)
        self._policy = policy
        self._transport_kwargs = transport_kwargs
        self._creating = threading.Lock()
        self._given = transport
        self._async: httpx.AsyncBaseTransport | None = (
            transport
            if isinstance(transport, httpx.AsyncBaseTransport)
            else None
        )
        self._sync: httpx.BaseTransport | None = (
            transport if isinstance(transport, httpx.BaseTransport) else None
        )

    @property
    def policy(self) -> Policy:
        """The policy requests go through (resolved now, if given by name)."""
        return _resolve(self._policy)

    def __repr__(self) -> str:
        policy = self._policy
        name = policy if isinstance(policy, str) else policy.name
        return f"<ResilientTransport policy={name!r}>"

    # -- inner transports ---------------------------------------------------

    def _async_inner(self) -> httpx.AsyncBaseTransport:
        if self._async is None:
            if self._given is not None:
                msg = (
                    f"{self._given!r} is a sync transport: use it with "
                    "httpx.Client, or give an async one"
                )
                raise TypeError(msg)
            self._async = httpx.AsyncHTTPTransport(**self._transport_kwargs)
        return self._async

    def _sync_inner(self) -> httpx.BaseTransport:
        if self._sync is None:
            if self._given is not None:
                msg = (
                    f"{self._given!r} is an async transport: use it with "
                    "httpx.AsyncClient, or give a sync one"
                )
                raise TypeError(msg)
            # Sync clients are shared between threads: create only one.
            with self._creating:
                if self._sync is None:
                    self._sync = httpx.HTTPTransport(**self._transport_kwargs)
        return self._sync

    # -- async --------------------------------------------------------------

    async def handle_async_request(
        self, request: httpx.Request
    ) -> httpx.Response:
        """Send *request* through the policy (see the module docstring).

        Raises:
            CircuitOpenError: The circuit refused the request.
            PolicyTimeoutError: An attempt exceeded the policy's timeout.
            httpx.HTTPError: The last transport error, retries exhausted.
        """
        p = self.policy
        inner = self._async_inner()
        try:
            if _replayable(request):
                return await p.acall(self._attempt_async, inner, request, p)
            return await _once_async(p, self._attempt_async, inner, request, p)
        except FailureStatusError as failed:
            return failed._unread()
        except httpx.TimeoutException:
            raise
        except TimeoutError as exc:
            limit = p.config.timeout
            within = f" of {limit:g}s" if limit is not None else ""
            raise PolicyTimeoutError(
                f"attempt exceeded the timeout{within} of policy {p.name!r}",
                request=request,
            ) from exc

    @staticmethod
    async def _attempt_async(
        inner: httpx.AsyncBaseTransport, request: httpx.Request, p: Policy
    ) -> httpx.Response:
        response = await inner.handle_async_request(request)
        if not p.config.is_failure_status(response.status_code):
            return response
        try:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        finally:
            await response.aclose()
        raise FailureStatusError(request, response, raw)

    async def aclose(self) -> None:
        """Close the inner async transport."""
        if self._async is not None:
            await self._async.aclose()

    async def __aenter__(self) -> Self:
        if self._async is not None:
            await self._async.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        if self._async is not None:
            await self._async.__aexit__(exc_type, exc_value, traceback)

    # -- sync ---------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send *request* through the policy, synchronously.

        The policy's ``timeout`` is not enforced here (a thread cannot be
        interrupted): give the client that timeout, as
        :func:`resilient_sync_client` does.

        Raises:
            CircuitOpenError: The circuit refused the request.
            httpx.HTTPError: The last transport error, retries exhausted.
        """
        p = self.policy
        inner = self._sync_inner()
        try:
            if _replayable(request):
                return p.call(self._attempt_sync, inner, request, p)
            return _once_sync(p, self._attempt_sync, inner, request, p)
        except FailureStatusError as failed:
            return failed._unread()

    @staticmethod
    def _attempt_sync(
        inner: httpx.BaseTransport, request: httpx.Request, p: Policy
    ) -> httpx.Response:
        response = inner.handle_request(request)
        if not p.config.is_failure_status(response.status_code):
            return response
        try:
            raw = b"".join(response.iter_raw())
        finally:
            response.close()
        raise FailureStatusError(request, response, raw)

    def close(self) -> None:
        """Close the inner sync transport."""
        if self._sync is not None:
            self._sync.close()

    def __enter__(self) -> Self:
        if self._sync is not None:
            self._sync.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        if self._sync is not None:
            self._sync.__exit__(exc_type, exc_value, traceback)


# -- clients --------------------------------------------------------------


def _client_kwargs(
    p: Policy,
    base_url: str | httpx.URL | None,
    client_kwargs: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split into (client kwargs, inner transport kwargs) with defaults."""
    settings = p.config.settings
    transport_kwargs: dict[str, Any] = {
        key: client_kwargs.pop(key)
        for key in _TRANSPORT_KWARGS
        if key in client_kwargs
    }
    if base_url is None:
        base_url = settings.get("base_url")
    if base_url is not None:
        client_kwargs["base_url"] = base_url
    if "timeout" not in client_kwargs and p.config.timeout is not None:
        client_kwargs["timeout"] = p.config.timeout
    key_env = settings.get("api_key_env")
    key = os.environ.get(str(key_env)) if key_env else None
    if key:
        headers = httpx.Headers(client_kwargs.get("headers"))
        if "authorization" not in headers:
            headers["Authorization"] = f"Bearer {key}"
        client_kwargs["headers"] = headers
    return client_kwargs, transport_kwargs


def _check_inner(
    inner: httpx.AsyncBaseTransport | httpx.BaseTransport | None,
    transport_kwargs: dict[str, Any],
) -> None:
    if inner is not None and transport_kwargs:
        msg = (
            f"{sorted(transport_kwargs)} configure httpx's default "
            "transport; set them on the transport you passed instead"
        )
        raise TypeError(msg)


def resilient_client(
    policy: Policy | str,
    *,
    base_url: str | httpx.URL | None = None,
    **client_kwargs: Any,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose requests all go through *policy*.

    Defaults come from the policy: ``base_url`` from ``settings.base_url``,
    the client timeout from ``timeout`` (httpx's own default when the
    policy has none), and an ``Authorization: Bearer`` header from the
    environment variable named by ``settings.api_key_env``, when that
    variable is set (an explicit ``Authorization`` header wins).

    Args:
        policy: A policy, or the name of one in the registry.
        base_url: Overrides ``settings.base_url``.
        **client_kwargs: Passed to ``httpx.AsyncClient``; ``verify``,
            ``cert``, ``trust_env``, ``http1``, ``http2``, ``limits`` and
            ``proxy`` configure the inner transport, ``transport`` replaces
            it (then those are refused).

    Returns:
        The client (close it, or use it in ``async with``).

    Raises:
        UnknownPolicyError: No policy has that name.
        TypeError: ``transport`` together with transport arguments.

    .. versionadded:: 0.1.0
    """
    p = _resolve(policy)
    inner = client_kwargs.pop("transport", None)
    kwargs, transport_kwargs = _client_kwargs(p, base_url, client_kwargs)
    _check_inner(inner, transport_kwargs)
    if inner is None:
        # Built now, as httpx builds its own (an SSL context is slow to
        # make): not on the event loop at the first request.
        inner = httpx.AsyncHTTPTransport(**transport_kwargs)
    return httpx.AsyncClient(transport=ResilientTransport(p, inner), **kwargs)


def resilient_sync_client(
    policy: Policy | str,
    *,
    base_url: str | httpx.URL | None = None,
    **client_kwargs: Any,
) -> httpx.Client:
    """An ``httpx.Client`` whose requests all go through *policy*.

    The sync twin of :func:`resilient_client`, with the same defaults. The
    client timeout is what bounds each attempt here.

    Args:
        policy: A policy, or the name of one in the registry.
        base_url: Overrides ``settings.base_url``.
        **client_kwargs: Passed to ``httpx.Client`` (see
            :func:`resilient_client`).

    Returns:
        The client (close it, or use it in ``with``).

    Raises:
        UnknownPolicyError: No policy has that name.
        TypeError: ``transport`` together with transport arguments.

    .. versionadded:: 0.1.0
    """
    p = _resolve(policy)
    inner = client_kwargs.pop("transport", None)
    kwargs, transport_kwargs = _client_kwargs(p, base_url, client_kwargs)
    _check_inner(inner, transport_kwargs)
    if inner is None:
        inner = httpx.HTTPTransport(**transport_kwargs)
    return httpx.Client(transport=ResilientTransport(p, inner), **kwargs)

"""httpx and httpx2 integration: every request through a policy.

Extras ``http`` (httpx) and ``httpx2`` (httpx2, httpx's maintained
successor with the same API; the OpenAI SDK 3.x is built on it).
:class:`ResilientTransport` is a transport for the clients of either
library, sync or async, and sends each request through a
:class:`~sage_resilience.Policy`::

    client = httpx2.AsyncClient(
        transport=ResilientTransport(policy("siliconflow_api"))
    )
    # or, with base_url, timeout and API key from the policy's settings:
    client = resilient_client("siliconflow_api", library="httpx2")

What happens to a request:

* A response whose status is in the policy's ``failure_statuses`` (408,
  429 and 5xx by default) is a counted failure: its body is read and its
  connection released, and the request is retried (honouring a
  ``Retry-After``) as long as attempts are left and the circuit is closed.
  When retries run out, the **last failing response** is returned as the
  library would return it (``raise_for_status()`` still works); it is
  never turned into an exception by this transport.
* Any other response (2xx, 3xx, 4xx such as 400/401/404) is returned at
  once, never retried. Its verdict comes when its body has been read: a
  success, or a counted failure when the body breaks off (a connection
  cut mid-stream, a read timeout), which is raised to the reader as the
  library raises it.
* An open circuit raises :class:`~sage_resilience.CircuitOpenError`
  without sending anything; so does a failure that opens the circuit while
  attempts are left (its ``__cause__`` is that failure).
* Transport errors (refused, reset, DNS, TLS, timeouts) are counted and
  retried; once retries run out the last one is raised.
* An attempt that exceeds the policy's ``timeout`` (async only) raises
  :class:`PolicyTimeoutError`, both the library's ``TimeoutException``
  and a ``TimeoutError``.
* Request bodies given as bytes, text, JSON or form data are replayed on
  each attempt. A streaming body (a generator, an async iterator, a file
  upload) can only be sent once: such a request gets **one attempt**, still
  through the breaker.

.. versionadded:: 0.1.0
.. versionchanged:: 0.2.0
   httpx2 clients; a body that breaks off is a counted failure.
"""

# ruff: noqa: A005 - the module name is public API (sage_resilience.http)
from __future__ import annotations

import contextlib
import functools
import importlib
import os
import threading
from typing import TYPE_CHECKING, Any, Final, Literal, Self, overload

from sage_resilience._classify import parse_retry_after
from sage_resilience._policy import Policy
from sage_resilience._registry import policy as _registered

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from types import ModuleType, TracebackType

    import httpx
    import httpx2

    from sage_resilience._policy import PendingVerdict

__all__ = [
    "LIBRARIES",
    "FailureStatusError",
    "PolicyTimeoutError",
    "ResilientTransport",
    "resilient_client",
    "resilient_sync_client",
]

#: The HTTP libraries this module serves, in order of preference when the
#: caller does not choose (httpx first: what extra ``http`` installs).
LIBRARIES: Final = ("httpx", "httpx2")

#: Extra that installs each library.
_EXTRA: Final = {"httpx": "http", "httpx2": "httpx2"}

_MODULES: dict[str, ModuleType] = {}
for _name in LIBRARIES:
    with contextlib.suppress(ImportError):
        _MODULES[_name] = importlib.import_module(_name)
if not _MODULES:  # pragma: no cover - exercised in a subprocess
    msg = (
        "sage_resilience.http needs httpx or httpx2, neither is installed: "
        "pip install 'sage-resilience[http]' (httpx) or "
        "'sage-resilience[httpx2]'"
    )
    raise ImportError(msg)

#: Client keyword arguments that configure the default transport: the
#: libraries ignore them when a transport is given, so they go inside.
_TRANSPORT_KWARGS: Final = (
    "verify",
    "cert",
    "trust_env",
    "http1",
    "http2",
    "limits",
    "proxy",
)


class FailureStatusError(Exception):
    """A response whose status counts as a failure (``failure_statuses``).

    Raised inside an attempt so the breaker counts the answer and the
    retry honours its ``Retry-After``; the transport itself never lets it
    out: when retries run out it returns the response instead (as
    :meth:`unread_response` gives it). You see it as the ``__cause__`` of
    a :class:`~sage_resilience.CircuitOpenError` (the answer that opened
    the circuit) and in ``retry_scheduled``, ``retry_exhausted`` and
    ``last_failure``.

    Each instance is also the ``HTTPStatusError`` of the library the
    request came from (``httpx.HTTPStatusError`` or
    ``httpx2.HTTPStatusError``), so ``ignore_exceptions`` /
    ``record_exceptions`` and :func:`~sage_resilience.diagnose` treat it as
    one. Built as ``FailureStatusError(request, response, raw_body)``.

    Attributes:
        request: The request.
        response: The failing response, its body read into memory (its
            connection is already released).
        retry_after: Seconds the server asked to wait, or None.

    .. versionadded:: 0.1.0
    """

    request: Any
    response: Any

    def __new__(cls, request: Any, response: Any, raw: bytes) -> Self:
        """An instance of the subclass for the request's library."""
        kind: Any = cls
        if cls is FailureStatusError:
            kind = _library_of(request).failure_error
        made: Self = super().__new__(kind, request, response, raw)
        return made

    def __init__(self, request: Any, response: Any, raw: bytes) -> None:
        lib = _library_of(request)
        # The URL without its query string: keys sometimes travel there.
        url = request.url.copy_with(query=None, fragment=None)
        kept = _buffered(lib, request, response, raw)
        kept.read()
        # The library's HTTPStatusError.__init__ comes next in the MRO.
        super().__init__(  # type: ignore[call-arg]
            f"{response.status_code} {response.reason_phrase} from "
            f"{request.method} {url}",
            request=request,
            response=kept,
        )
        self._raw = raw
        self._original = response
        self.retry_after: float | None = parse_retry_after(
            response.headers.get("retry-after")
        )

    def unread_response(self) -> Any:
        """The failing response as a transport returns it: unread.

        What :class:`ResilientTransport` hands its client once retries ran
        out: a fresh response over the same raw body, for the client to
        decode and time as usual (:attr:`response`, read already, would
        never get its ``elapsed`` set).

        .. versionadded:: 0.2.0
        """
        lib = _library_of(self.request)
        return _buffered(lib, self.request, self._original, self._raw)


class PolicyTimeoutError(TimeoutError):
    """An attempt exceeded the policy's ``timeout``.

    A ``TimeoutError`` (what the policy raises elsewhere), and each
    instance is also the ``TimeoutException`` of the library the request
    came from (so ``except httpx.HTTPError`` / ``except httpx2.HTTPError``
    handles it like any timeout). Its ``__cause__`` is the policy's own
    ``TimeoutError``.

    .. versionadded:: 0.1.0
    """

    request: Any


class _Library:
    """One HTTP library, with our errors and streams in its class tree."""

    def __init__(self, module: ModuleType) -> None:
        self.name: str = module.__name__
        self.module = module
        specialise = functools.partial(_specialise, module=self.name)
        self.failure_error: type[FailureStatusError] = specialise(
            FailureStatusError, module.HTTPStatusError
        )
        # The library's exception first: its __init__ takes request=.
        self.timeout_error: Any = type(
            "PolicyTimeoutError",
            (module.TimeoutException, PolicyTimeoutError),
            {"__module__": __name__, "__qualname__": "PolicyTimeoutError"},
        )
        self.async_stream = specialise(_WatchedAsync, module.AsyncByteStream)
        self.sync_stream = specialise(_WatchedSync, module.SyncByteStream)

    def __repr__(self) -> str:
        return f"<library {self.name}>"


def _specialise(ours: type, theirs: type, *, module: str) -> Any:
    """*ours* made a subclass of the library class *theirs* too."""
    return type(
        ours.__name__,
        (ours, theirs),
        {
            "__module__": __name__,
            "__qualname__": ours.__qualname__,
            "__doc__": f"{ours.__doc__ or ''}\n\n(For {module}.)",
        },
    )


class _WatchedAsync:
    """A response body whose end gives its attempt's verdict (async)."""

    def __init__(self, stream: Any, verdict: PendingVerdict) -> None:
        self._stream = stream
        self._verdict = verdict

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except GeneratorExit:
            raise  # the reader stopped early: aclose() gives the verdict
        except BaseException as exc:
            self._verdict.failure(exc)
            raise
        self._verdict.success()

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            # Closed before the end (or after it): the dependency answered.
            self._verdict.success()


class _WatchedSync:
    """A response body whose end gives its attempt's verdict (sync)."""

    def __init__(self, stream: Any, verdict: PendingVerdict) -> None:
        self._stream = stream
        self._verdict = verdict

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._stream
        except GeneratorExit:
            raise
        except BaseException as exc:
            self._verdict.failure(exc)
            raise
        self._verdict.success()

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._verdict.success()


_LIBS: Final = {name: _Library(module) for name, module in _MODULES.items()}
_BY_REQUEST: Final = {lib.module.Request: lib for lib in _LIBS.values()}


def _library_of(request: Any) -> _Library:
    """The library whose client sent *request*."""
    lib = _BY_REQUEST.get(type(request))
    if lib is not None:
        return lib
    for lib in _LIBS.values():
        if isinstance(request, lib.module.Request):
            return lib
    msg = (
        f"{type(request).__module__}.{type(request).__qualname__} is not a "
        f"request of {' or '.join(_LIBS)}"
    )
    raise TypeError(msg)


def _choose(library: str | None) -> _Library:
    """The library the caller asked for, or the preferred installed one."""
    if library is None:
        return next(iter(_LIBS.values()))
    if library not in _EXTRA:
        msg = f"library must be one of {list(LIBRARIES)}, not {library!r}"
        raise ValueError(msg)
    lib = _LIBS.get(library)
    if lib is None:
        msg = (
            f"{library} is not installed: pip install "
            f"'sage-resilience[{_EXTRA[library]}]'"
        )
        raise ImportError(msg)
    return lib


def _buffered(lib: _Library, request: Any, response: Any, raw: bytes) -> Any:
    """A fresh, unread response over *raw*, as a transport returns one.

    The client decodes it (content-encoding) and times it as usual; the
    original connection is already back in the pool.
    """
    extensions = {
        k: v for k, v in response.extensions.items() if k != "network_stream"
    }
    return lib.module.Response(
        response.status_code,
        headers=response.headers,
        stream=lib.module.ByteStream(raw),
        extensions=extensions,
        request=request,
    )


def _replayable(lib: _Library, request: Any) -> bool:
    """Whether the body can be sent again (it is held in memory)."""
    return isinstance(request.stream, lib.module.ByteStream)


def _watch(
    lib: _Library, response: Any, verdict: PendingVerdict, *, sync: bool
) -> Any:
    """Hand *response* out; its verdict comes when its body is done."""
    if isinstance(response.stream, lib.module.ByteStream):
        verdict.success()  # the body is in memory already
        return response
    kind = lib.sync_stream if sync else lib.async_stream
    response.stream = kind(response.stream, verdict)
    return response


def _resolve(policy: Policy | str) -> Policy:
    return policy if isinstance(policy, Policy) else _registered(policy)


if TYPE_CHECKING:
    # For type checkers: a transport of both libraries, sync and async.
    class _TransportBases(
        httpx.AsyncBaseTransport,
        httpx.BaseTransport,
        httpx2.AsyncBaseTransport,
        httpx2.BaseTransport,
    ):
        async def handle_async_request(self, request: Any) -> Any: ...
        def handle_request(self, request: Any) -> Any: ...

else:
    _TransportBases = type(
        "_TransportBases",
        tuple(
            base
            for lib in _LIBS.values()
            for base in (
                lib.module.AsyncBaseTransport,
                lib.module.BaseTransport,
            )
        ),
        {"__slots__": ()},
    )


class ResilientTransport(_TransportBases):
    """A transport that sends every request through a policy.

    One object serves the sync and async clients of httpx and httpx2
    alike; each request goes to an inner transport of its own client's
    library. Mount one per dependency::

        httpx2.AsyncClient(mounts={
            "https://api.example": ResilientTransport("siliconflow_api"),
            "https://embed.example": ResilientTransport("vectorizer"),
        })

    Args:
        policy: A :class:`~sage_resilience.Policy`, or the name of one in
            the registry (looked up on every request, so it follows
            :func:`~sage_resilience.configure`).
        transport: The transport that really sends (sync, async or both;
            of the library of the clients it serves). By default the
            library's ``AsyncHTTPTransport`` and/or ``HTTPTransport``,
            created on first use of each library and side.
        **transport_kwargs: Arguments for those default transports
            (``verify``, ``limits``, ``http2``...); not allowed with
            *transport*.

    Raises:
        TypeError: Both *transport* and *transport_kwargs* were given; or,
            at a request, *transport* is not of that client's library or
            side.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0
       Serves httpx2 clients too.
    """

    def __init__(
        self,
        policy: Policy | str,
        transport: Any = None,
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
        # Default inner transports, per library name.
        self._async: dict[str, Any] = {}
        self._sync: dict[str, Any] = {}

    @property
    def policy(self) -> Policy:
        """The policy requests go through (resolved now, if given by name)."""
        return _resolve(self._policy)

    def __repr__(self) -> str:
        policy = self._policy
        name = policy if isinstance(policy, str) else policy.name
        return f"<ResilientTransport policy={name!r}>"

    # -- inner transports ---------------------------------------------------

    def _check_given(self, lib: _Library, *, sync: bool) -> Any:
        given = self._given
        mine = (
            lib.module.BaseTransport if sync else lib.module.AsyncBaseTransport
        )
        if isinstance(given, mine):
            return given
        other = (
            lib.module.AsyncBaseTransport if sync else lib.module.BaseTransport
        )
        if isinstance(given, other):
            side, client = (
                ("an async", "AsyncClient") if sync else ("a sync", "Client")
            )
            msg = (
                f"{given!r} is {side} transport: use it with "
                f"{lib.name}.{client}, or give one of the other side"
            )
        else:
            msg = (
                f"{given!r} is not a {lib.name} transport, and a "
                f"{lib.name} client sent this request: give a "
                f"{lib.name} transport (or none, for {lib.name}'s default)"
            )
        raise TypeError(msg)

    def _async_inner(self, lib: _Library) -> Any:
        if self._given is not None:
            return self._check_given(lib, sync=False)
        inner = self._async.get(lib.name)
        if inner is None:
            with self._creating:
                inner = self._async.get(lib.name)
                if inner is None:
                    inner = lib.module.AsyncHTTPTransport(
                        **self._transport_kwargs
                    )
                    self._async[lib.name] = inner
        return inner

    def _sync_inner(self, lib: _Library) -> Any:
        if self._given is not None:
            return self._check_given(lib, sync=True)
        inner = self._sync.get(lib.name)
        if inner is None:
            # Sync clients are shared between threads: create only one.
            with self._creating:
                inner = self._sync.get(lib.name)
                if inner is None:
                    inner = lib.module.HTTPTransport(**self._transport_kwargs)
                    self._sync[lib.name] = inner
        return inner

    def _inner_async(self) -> list[Any]:
        """The async inner transports to close or enter."""
        given = self._given
        found = list(self._async.values())
        if given is not None and hasattr(given, "handle_async_request"):
            found.append(given)
        return found

    def _inner_sync(self) -> list[Any]:
        given = self._given
        found = list(self._sync.values())
        if given is not None and hasattr(given, "handle_request"):
            found.append(given)
        return found

    # -- async --------------------------------------------------------------

    async def handle_async_request(self, request: Any) -> Any:
        """Send *request* through the policy (see the module docstring).

        Raises:
            CircuitOpenError: The circuit refused the request.
            PolicyTimeoutError: An attempt exceeded the policy's timeout.
            httpx.HTTPError: The last transport error, retries exhausted
                (``httpx2.HTTPError`` for an httpx2 client).
        """
        lib = _library_of(request)
        p = self.policy
        inner = self._async_inner(lib)
        attempt = functools.partial(self._attempt_async, inner, request, p)
        try:
            response, verdict = await p.acall_deferred(
                attempt, retry=_replayable(lib, request)
            )
        except FailureStatusError as failed:
            return failed.unread_response()
        except PolicyTimeoutError:
            raise
        except TimeoutError as exc:
            limit = p.config.timeout
            within = f" of {limit:g}s" if limit is not None else ""
            raise lib.timeout_error(
                f"attempt exceeded the timeout{within} of policy {p.name!r}",
                request=request,
            ) from exc
        return _watch(lib, response, verdict, sync=False)

    @staticmethod
    async def _attempt_async(inner: Any, request: Any, p: Policy) -> Any:
        response = await inner.handle_async_request(request)
        if not p.config.is_failure_status(response.status_code):
            return response
        try:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        finally:
            await response.aclose()
        raise FailureStatusError(request, response, raw)

    async def aclose(self) -> None:
        """Close the inner async transports."""
        for inner in self._inner_async():
            await inner.aclose()

    async def __aenter__(self) -> Self:
        for inner in self._inner_async():
            await inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        for inner in self._inner_async():
            await inner.__aexit__(exc_type, exc_value, traceback)

    # -- sync ---------------------------------------------------------------

    def handle_request(self, request: Any) -> Any:
        """Send *request* through the policy, synchronously.

        The policy's ``timeout`` is not enforced here (a thread cannot be
        interrupted): give the client that timeout, as
        :func:`resilient_sync_client` does.

        Raises:
            CircuitOpenError: The circuit refused the request.
            httpx.HTTPError: The last transport error, retries exhausted
                (``httpx2.HTTPError`` for an httpx2 client).
        """
        lib = _library_of(request)
        p = self.policy
        inner = self._sync_inner(lib)
        attempt = functools.partial(self._attempt_sync, inner, request, p)
        try:
            response, verdict = p.call_deferred(
                attempt, retry=_replayable(lib, request)
            )
        except FailureStatusError as failed:
            return failed.unread_response()
        return _watch(lib, response, verdict, sync=True)

    @staticmethod
    def _attempt_sync(inner: Any, request: Any, p: Policy) -> Any:
        response = inner.handle_request(request)
        if not p.config.is_failure_status(response.status_code):
            return response
        try:
            raw = b"".join(response.iter_raw())
        finally:
            response.close()
        raise FailureStatusError(request, response, raw)

    def close(self) -> None:
        """Close the inner sync transports."""
        for inner in self._inner_sync():
            inner.close()

    def __enter__(self) -> Self:
        for inner in self._inner_sync():
            inner.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        for inner in self._inner_sync():
            inner.__exit__(exc_type, exc_value, traceback)


# -- clients --------------------------------------------------------------


def _client_kwargs(
    lib: _Library,
    p: Policy,
    base_url: Any,
    client_kwargs: dict[str, Any],
    *,
    bearer: bool = True,
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
    key = os.environ.get(str(key_env)) if key_env and bearer else None
    if key:
        headers = lib.module.Headers(client_kwargs.get("headers"))
        if "authorization" not in headers:
            headers["Authorization"] = f"Bearer {key}"
        client_kwargs["headers"] = headers
    return client_kwargs, transport_kwargs


def _build(
    p: Policy,
    lib: _Library,
    base_url: Any,
    client_kwargs: dict[str, Any],
    *,
    sync: bool,
    bearer: bool = True,
) -> Any:
    """A client of *lib* whose requests all go through *p*."""
    inner = client_kwargs.pop("transport", None)
    kwargs, transport_kwargs = _client_kwargs(
        lib, p, base_url, client_kwargs, bearer=bearer
    )
    if inner is not None and transport_kwargs:
        msg = (
            f"{sorted(transport_kwargs)} configure {lib.name}'s default "
            "transport; set them on the transport you passed instead"
        )
        raise TypeError(msg)
    module = lib.module
    if inner is None:
        # Built now, as the client builds its own (an SSL context is slow
        # to make): not on the event loop at the first request.
        kind = module.HTTPTransport if sync else module.AsyncHTTPTransport
        inner = kind(**transport_kwargs)
    client = module.Client if sync else module.AsyncClient
    return client(transport=ResilientTransport(p, inner), **kwargs)


@overload
def resilient_client(
    policy: Policy | str,
    *,
    base_url: str | httpx.URL | httpx2.URL | None = None,
    library: Literal["httpx2"],
    **client_kwargs: Any,
) -> httpx2.AsyncClient: ...


@overload
def resilient_client(
    policy: Policy | str,
    *,
    base_url: str | httpx.URL | httpx2.URL | None = None,
    library: Literal["httpx"] | None = None,
    **client_kwargs: Any,
) -> httpx.AsyncClient: ...


def resilient_client(
    policy: Policy | str,
    *,
    base_url: str | httpx.URL | httpx2.URL | None = None,
    library: Literal["httpx", "httpx2"] | None = None,
    **client_kwargs: Any,
) -> httpx.AsyncClient | httpx2.AsyncClient:
    """An ``AsyncClient`` whose requests all go through *policy*.

    Defaults come from the policy: ``base_url`` from ``settings.base_url``,
    the client timeout from ``timeout`` (the library's own default when the
    policy has none), and an ``Authorization: Bearer`` header from the
    environment variable named by ``settings.api_key_env``, when that
    variable is set (an explicit ``Authorization`` header wins).

    Args:
        policy: A policy, or the name of one in the registry.
        base_url: Overrides ``settings.base_url``.
        library: ``"httpx"`` or ``"httpx2"``: whose ``AsyncClient`` to
            build. By default httpx when it is installed, else httpx2.
        **client_kwargs: Passed to the ``AsyncClient``; ``verify``,
            ``cert``, ``trust_env``, ``http1``, ``http2``, ``limits`` and
            ``proxy`` configure the inner transport, ``transport`` replaces
            it (then those are refused).

    Returns:
        The client (close it, or use it in ``async with``).

    Raises:
        UnknownPolicyError: No policy has that name.
        ImportError: The library asked for is not installed.
        ValueError: *library* names no supported library.
        TypeError: ``transport`` together with transport arguments.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0
       *library*.
    """
    lib = _choose(library)
    client: httpx.AsyncClient | httpx2.AsyncClient = _build(
        _resolve(policy), lib, base_url, client_kwargs, sync=False
    )
    return client


@overload
def resilient_sync_client(
    policy: Policy | str,
    *,
    base_url: str | httpx.URL | httpx2.URL | None = None,
    library: Literal["httpx2"],
    **client_kwargs: Any,
) -> httpx2.Client: ...


@overload
def resilient_sync_client(
    policy: Policy | str,
    *,
    base_url: str | httpx.URL | httpx2.URL | None = None,
    library: Literal["httpx"] | None = None,
    **client_kwargs: Any,
) -> httpx.Client: ...


def resilient_sync_client(
    policy: Policy | str,
    *,
    base_url: str | httpx.URL | httpx2.URL | None = None,
    library: Literal["httpx", "httpx2"] | None = None,
    **client_kwargs: Any,
) -> httpx.Client | httpx2.Client:
    """A ``Client`` whose requests all go through *policy*.

    The sync twin of :func:`resilient_client`, with the same defaults. The
    client timeout is what bounds each attempt here.

    Args:
        policy: A policy, or the name of one in the registry.
        base_url: Overrides ``settings.base_url``.
        library: ``"httpx"`` or ``"httpx2"`` (see
            :func:`resilient_client`).
        **client_kwargs: Passed to the ``Client`` (see
            :func:`resilient_client`).

    Returns:
        The client (close it, or use it in ``with``).

    Raises:
        UnknownPolicyError: No policy has that name.
        ImportError: The library asked for is not installed.
        ValueError: *library* names no supported library.
        TypeError: ``transport`` together with transport arguments.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0
       *library*.
    """
    lib = _choose(library)
    client: httpx.Client | httpx2.Client = _build(
        _resolve(policy), lib, base_url, client_kwargs, sync=True
    )
    return client

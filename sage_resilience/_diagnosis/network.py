"""DNS, TCP and TLS: what the socket layer says, whatever the client.

A refused connection is a builtin ``ConnectionRefusedError`` (or, when
asyncio tried several addresses, one ``OSError`` whose message lists them
all); a failed name lookup a ``socket.gaierror``; a bad certificate an
``ssl.SSLError``. ``ssl`` and ``socket`` are only looked at when the
application already imported them.
"""

from __future__ import annotations

import errno
import re
import sys
from typing import TYPE_CHECKING, Any, Final

from sage_resilience._diagnosis.reading import (
    error_text,
    message,
    one_line,
    where,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "UNREACHABLE_ERRNOS",
    "describe_network",
    "is_refused",
    "is_reset",
    "refused_addresses",
    "socket_cause",
]

#: errno values of a host that cannot be reached (timed out, no route).
UNREACHABLE_ERRNOS: Final = frozenset(
    {errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH}
)

_ADDRESS = re.compile(r"\('([0-9A-Fa-f:.]+|[\w.-]+)', (\d+)")
_REFUSED_TEXT = re.compile(
    r"\[Errno (?:111|61|10061)\]|Connect call failed|connection refused",
    re.IGNORECASE,
)


def is_refused(exc: OSError) -> bool:
    """Whether *exc* says nothing listens at the address."""
    if isinstance(exc, ConnectionRefusedError):
        return True
    if exc.errno == errno.ECONNREFUSED:
        return True
    # asyncio joins several failed addresses into one OSError(errno None).
    return exc.errno is None and bool(_REFUSED_TEXT.search(message(exc)))


def is_reset(exc: OSError) -> bool:
    """Whether the peer closed or reset the connection."""
    return isinstance(
        exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)
    )


def refused_addresses(
    chain: Sequence[BaseException],
) -> list[tuple[str, int]]:
    """Every ``(host, port)`` a refusal in *chain* names, in order."""
    found: list[tuple[str, int]] = []
    for exc in chain:
        if isinstance(exc, OSError) and is_refused(exc):
            for host, port in _ADDRESS.findall(message(exc)):
                if (host, int(port)) not in found:
                    found.append((host, int(port)))
    return found


def socket_cause(exc: BaseException) -> str | None:
    """``tls_failure`` or ``dns_failure`` for the ssl/socket errors."""
    ssl = sys.modules.get("ssl")
    if ssl is not None and isinstance(exc, ssl.SSLError):
        return "tls_failure"
    socket = sys.modules.get("socket")
    if socket is not None and isinstance(exc, socket.gaierror):
        return "dns_failure"
    return None


def describe_network(
    code: str,
    exc: BaseException,
    chain: Sequence[BaseException],
    details: dict[str, Any],
    target: str,
) -> str:
    """The explanation of a socket-level failure of a request.

    *details* (host, port of the request) may gain the refused addresses.
    """
    host = details.get("host", "the host")
    if code == "dns_failure":
        return f"The host name {host} does not resolve ({one_line(str(exc))})."
    if code == "tls_failure":
        return f"The TLS connection to {host} failed: {one_line(str(exc))}."
    if code == "connection_refused":
        addresses = refused_addresses(chain)
        if addresses:
            details["host"], details["port"] = addresses[0]
            details["refused"] = [f"{h}:{p}" for h, p in addresses]
        return f"{target} was refused: nothing listens on {where(details)}."
    if code == "connection_reset":
        return (
            f"The connection to {host} was closed or reset by the peer "
            f"before an answer ({error_text(exc)})."
        )
    return error_text(exc)

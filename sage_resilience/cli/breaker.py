"""``sage-resilience breaker open|close|reset NAME``: act on a breaker.

On a running app (``--url``, with the admin token) or on the breaker
built from the configuration, which only makes sense with a shared
storage (sqlite, redis). Exit codes: 0 done, 1 a refusal or invalid input
(unknown breaker, HTTP 401/403/404, unreachable app, invalid
configuration, ``memory`` storage), 2 usage.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

from sage_resilience._redact import redact
from sage_resilience._terminal import printable
from sage_resilience.cli._options import add_format, one_line_errors
from sage_resilience.cli._source import (
    TOKEN_ENV,
    CommandError,
    add_source,
    answer_error,
    base_url,
    configure_from,
    fail,
    probe_storage,
    request,
    storage_location,
)

if TYPE_CHECKING:
    import argparse

__all__ = ["ACTIONS", "add_breaker_arguments", "breaker_command"]

#: What ``sage-resilience breaker`` can do to a circuit.
ACTIONS: Final = ("open", "close", "reset")


def add_breaker_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``breaker`` arguments to *parser* (the CLI's subparser).

    ``breaker open|close|reset NAME [--config PATH | --url URL] [--token
    TOKEN] [--format {text,json}]`` (``--json``: ``--format json``). A
    bad value makes *parser* exit 2 with one line.

    .. versionadded:: 0.1.0
    """
    one_line_errors(parser)
    parser.add_argument(
        "action",
        choices=ACTIONS,
        help="open: force open until closed by hand; close: close it; "
        "reset: close it and clear its counters",
    )
    parser.add_argument("name", metavar="NAME", help="the breaker (policy)")
    add_source(parser)
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        help=f"with --url: the admin token (default: env {TOKEN_ENV})",
    )
    add_format(parser, "the breaker's new status entry on stdout")


def breaker_command(args: argparse.Namespace) -> int:
    """Run ``sage-resilience breaker open|close|reset NAME``.

    With ``--url``, asks the running app (the token comes from ``--token``
    or env ``SAGE_RESILIENCE_ADMIN_TOKEN``); otherwise acts on the breaker
    built from the configuration, which only makes sense with a shared
    storage (sqlite, redis).

    Returns:
        0 when done; 1 for an unknown breaker, a refused request (HTTP
        401/403/404), an unreachable app, an invalid configuration, a
        ``memory`` storage or a shared storage that does not answer (the
        change would stay in this process); 2 for a malformed ``--url``.

    .. versionadded:: 0.1.0
    """
    try:
        if args.url is not None:
            token = args.token or os.environ.get(TOKEN_ENV) or None
            entry = _remote_action(
                args.url, args.action, args.name, token, args.timeout
            )
        else:
            entry = _local_action(args)
    except CommandError as exc:
        return fail("breaker", exc)
    if args.format == "json":
        print(json.dumps(entry, indent=2))
    else:
        forced = " (forced)" if entry.get("forced") else ""
        name = entry.get("name", args.name)
        print(printable(f"{name}: {entry.get('state')}{forced}"))
    return 0


def _local_action(args: argparse.Namespace) -> dict[str, Any]:
    from sage_resilience._registry import policies  # noqa: PLC0415

    storage = configure_from(args)
    backend = storage.backend
    found = policies().get(args.name)
    if found is None:
        known = ", ".join(sorted(policies())) or "none"
        raise CommandError(f"unknown breaker {args.name!r} (known: {known})")
    if backend == "memory":
        raise CommandError(
            "the configuration's storage is 'memory': this process's "
            "breakers are its own, so acting on them changes nothing "
            "elsewhere; use --url with a running app, or a shared storage "
            "(sqlite, redis)"
        )
    problem = probe_storage(storage, args.timeout)
    if problem is not None:
        raise CommandError(
            f"storage {storage_location(storage)} is unreachable "
            f"({problem}): the change would stay in this process; nothing "
            "was done"
        )
    getattr(found, args.action)()
    status: dict[str, Any] = dict(found.status())
    return status


def _remote_action(
    url: str, action: str, name: str, token: str | None, timeout: float
) -> dict[str, Any]:
    base = base_url(url)
    quoted = urllib.parse.quote(name, safe="")
    target = f"{base}/breakers/{quoted}/{action}"
    if token is not None and _plain_http_to_remote(base):
        print(
            "sage-resilience breaker: warning: sending the admin token "
            "over plain http to a non-local host",
            file=sys.stderr,
        )
    code, body = request("POST", target, token=token, timeout=timeout)
    if code != 200:
        failure = answer_error(target, code, body)
        if code == 403:
            failure = CommandError(
                f"{failure}; the app has no admin token configured"
            )
        elif code == 401 and token is None:
            failure = CommandError(
                f"{failure}; pass --token or set {TOKEN_ENV}"
            )
        raise failure
    if not isinstance(body, dict):
        raise CommandError(f"{redact(target)} did not answer a JSON object")
    return body


def _plain_http_to_remote(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True

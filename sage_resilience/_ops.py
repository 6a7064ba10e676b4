"""``sage-resilience status`` and ``sage-resilience breaker``.

Both work on one of two sources:

- ``--url URL``: a running :mod:`sage_resilience.asgi` app (``GET
  {URL}/breakers``; ``POST {URL}/breakers/{name}/{action}`` with the admin
  token as a bearer token);
- ``--config PATH`` (or the default configuration): the registry built in
  this process, whose state comes from the configured storage. With the
  ``memory`` storage that state is this process's own, so ``breaker``
  refuses to act on it.

Exit codes: 0 ok, 1 a finding or invalid input (unknown breaker, HTTP
401/403/404, unreachable app, invalid configuration), 2 usage. JSON goes
to stdout alone, diagnostics to stderr.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any, Final, TextIO

from sage_resilience._redact import redact

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping

__all__ = [
    "ACTIONS",
    "add_breaker_arguments",
    "add_status_arguments",
    "breaker_command",
    "format_status_table",
    "status_command",
]

#: What ``sage-resilience breaker`` can do to a circuit.
ACTIONS: Final = ("open", "close", "reset")

_TOKEN_ENV: Final = "SAGE_RESILIENCE_ADMIN_TOKEN"  # noqa: S105 - a name

_COLOURS: Final = {"closed": "32", "half-open": "33", "open": "31"}


class _CommandError(Exception):
    """A problem to report on stderr with an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# -- arguments ------------------------------------------------------------


def _add_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--config",
        metavar="PATH",
        help="build the breakers from this configuration and read the "
        "state of its storage (default: env SAGE_RESILIENCE_CONFIG, else "
        "the shipped one)",
    )
    source.add_argument(
        "--url",
        metavar="URL",
        help="base URL of a running sage_resilience.asgi app, e.g. "
        "http://127.0.0.1:8000/resilience",
    )
    parser.add_argument(
        "--platform",
        metavar="P",
        help="with --config: apply this platform's overrides",
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=5.0,
        help="with --url: time allowed to the request (default 5)",
    )


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``status`` options to *parser* (the CLI's subparser).

    ``status [--config PATH | --url URL] [--platform P] [--json]``.

    .. versionadded:: 0.1.0
    """
    _add_source(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the status entries as one JSON object on stdout",
    )


def add_breaker_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``breaker`` arguments to *parser* (the CLI's subparser).

    ``breaker open|close|reset NAME [--config PATH | --url URL] [--token
    TOKEN] [--json]``.

    .. versionadded:: 0.1.0
    """
    parser.add_argument(
        "action",
        choices=ACTIONS,
        help="open: force open until closed by hand; close: close it; "
        "reset: close it and clear its counters",
    )
    parser.add_argument("name", metavar="NAME", help="the breaker (policy)")
    _add_source(parser)
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        help=f"with --url: the admin token (default: env {_TOKEN_ENV})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the breaker's new status entry as JSON on stdout",
    )


# -- commands -------------------------------------------------------------


def status_command(args: argparse.Namespace) -> int:
    """Run ``sage-resilience status``; return the exit code.

    Prints a table (colours only on a terminal, unless ``NO_COLOR`` is
    set) or, with ``--json``, the object ``breaker_status()`` returns.

    Returns:
        0 when the status was printed (whatever the states), 1 when the
        configuration is invalid or the app cannot be read, 2 for a
        malformed ``--url``.

    .. versionadded:: 0.1.0
    """
    try:
        if args.url is not None:
            status = _fetch_status(args.url, args.timeout)
        else:
            from sage_resilience.status import breaker_status  # noqa: PLC0415

            _configure(args)
            status = breaker_status()
    except _CommandError as exc:
        return _fail("status", exc)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(format_status_table(status, colour=_colour_wanted(sys.stdout)))
    return 0


def breaker_command(args: argparse.Namespace) -> int:
    """Run ``sage-resilience breaker open|close|reset NAME``.

    With ``--url``, asks the running app (the token comes from ``--token``
    or env ``SAGE_RESILIENCE_ADMIN_TOKEN``); otherwise acts on the breaker
    built from the configuration, which only makes sense with a shared
    storage (sqlite, redis).

    Returns:
        0 when done; 1 for an unknown breaker, a refused request (HTTP
        401/403/404), an unreachable app, an invalid configuration or a
        ``memory`` storage; 2 for a malformed ``--url``.

    .. versionadded:: 0.1.0
    """
    try:
        if args.url is not None:
            token = args.token or os.environ.get(_TOKEN_ENV) or None
            entry = _remote_action(
                args.url, args.action, args.name, token, args.timeout
            )
        else:
            entry = _local_action(args)
    except _CommandError as exc:
        return _fail("breaker", exc)
    if args.json:
        print(json.dumps(entry, indent=2))
    else:
        forced = " (forced)" if entry.get("forced") else ""
        print(f"{entry.get('name', args.name)}: {entry.get('state')}{forced}")
    return 0


# -- local ----------------------------------------------------------------


def _configure(args: argparse.Namespace) -> str:
    """Build the registry from ``--config``; return the storage backend."""
    from sage_resilience._registry import configure  # noqa: PLC0415
    from sage_resilience.exceptions import ConfigError  # noqa: PLC0415

    try:
        config = configure(args.config, platform=args.platform)
    except ConfigError as exc:
        raise _CommandError(str(exc)) from exc
    except NotImplementedError as exc:
        raise _CommandError(str(exc)) from exc
    backend: str = config.storage.backend
    return backend


def _local_action(args: argparse.Namespace) -> dict[str, Any]:
    from sage_resilience._registry import policies  # noqa: PLC0415

    backend = _configure(args)
    found = policies().get(args.name)
    if found is None:
        known = ", ".join(sorted(policies())) or "none"
        raise _CommandError(f"unknown breaker {args.name!r} (known: {known})")
    if backend == "memory":
        raise _CommandError(
            "the configuration's storage is 'memory': this process's "
            "breakers are its own, so acting on them changes nothing "
            "elsewhere; use --url with a running app, or a shared storage "
            "(sqlite, redis)"
        )
    getattr(found, args.action)()
    status: dict[str, Any] = found.status()
    return status


# -- remote ---------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow redirects: they could carry the token elsewhere."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def _base(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise _CommandError(
            f"--url must be an http(s) URL, got {redact(url)!r}", code=2
        )
    return url.rstrip("/")


def _request(
    method: str,
    url: str,
    *,
    token: str | None = None,
    timeout: float,
) -> tuple[int, Any]:
    """Send one request; return the status and the decoded JSON body."""
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(  # noqa: S310 - scheme checked in _base
        url, method=method, headers=headers
    )
    try:
        with _opener.open(request, timeout=timeout) as response:
            code, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        code, raw = exc.code, exc.read()
        exc.close()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _CommandError(
            f"cannot reach {redact(url)}: {redact(str(reason))}"
        ) from exc
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return code, body


def _answer_error(url: str, code: int, body: Any) -> _CommandError:
    message = body.get("error") if isinstance(body, dict) else None
    return _CommandError(
        f"{redact(url)} answered HTTP {code}"
        + (f": {redact(str(message))}" if message else "")
    )


def _fetch_status(url: str, timeout: float) -> dict[str, Any]:
    target = f"{_base(url)}/breakers"
    code, body = _request("GET", target, timeout=timeout)
    if code != 200:
        raise _answer_error(target, code, body)
    if not isinstance(body, dict):
        raise _CommandError(f"{redact(target)} did not answer a JSON object")
    return body


def _remote_action(
    url: str, action: str, name: str, token: str | None, timeout: float
) -> dict[str, Any]:
    base = _base(url)
    quoted = urllib.parse.quote(name, safe="")
    target = f"{base}/breakers/{quoted}/{action}"
    if token is not None and _plain_http_to_remote(base):
        print(
            "sage-resilience breaker: warning: sending the admin token "
            "over plain http to a non-local host",
            file=sys.stderr,
        )
    code, body = _request("POST", target, token=token, timeout=timeout)
    if code != 200:
        failure = _answer_error(target, code, body)
        if code == 403:
            failure = _CommandError(
                f"{failure}; the app has no admin token configured"
            )
        elif code == 401 and token is None:
            failure = _CommandError(
                f"{failure}; pass --token or set {_TOKEN_ENV}"
            )
        raise failure
    if not isinstance(body, dict):
        raise _CommandError(f"{redact(target)} did not answer a JSON object")
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


# -- output ---------------------------------------------------------------


def _fail(command: str, failure: _CommandError) -> int:
    print(f"sage-resilience {command}: {failure}", file=sys.stderr)
    return failure.code


def _colour_wanted(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _cell(entry: Mapping[str, Any], key: str) -> str:
    value = entry.get(key)
    return "-" if value is None else str(value)


def format_status_table(
    status: Mapping[str, Mapping[str, Any]], *, colour: bool = False
) -> str:
    """A plain, aligned text table of status entries.

    Args:
        status: What :func:`sage_resilience.breaker_status` returns.
        colour: Colour the state with ANSI codes (for a terminal).

    Returns:
        The table, one line per breaker under a header, no final newline.

    .. versionadded:: 0.1.0
    """
    header = (
        "BREAKER",
        "STATE",
        "FAILURES",
        "CALLS",
        "OK",
        "FAILED",
        "REJECTED",
        "RETRIES",
        "RETRY IN",
        "STORAGE",
        "LAST FAILURE",
    )
    rows: list[tuple[str, ...]] = []
    states: list[str] = []
    for name, entry in status.items():
        state = str(entry.get("state", "?"))
        states.append(state)
        shown = f"{state} (forced)" if entry.get("forced") else state
        retry_after = entry.get("retry_after") or 0
        last = entry.get("last_failure")
        failures = (
            f"{_cell(entry, 'failure_count')}/"
            f"{_cell(entry, 'failure_threshold')}"
        )
        rows.append(
            (
                str(entry.get("name", name)),
                shown,
                failures,
                _cell(entry, "calls"),
                _cell(entry, "successes"),
                _cell(entry, "failures"),
                _cell(entry, "rejections"),
                _cell(entry, "retries"),
                f"{float(retry_after):.1f}s" if retry_after else "-",
                _cell(entry, "storage"),
                "-" if last is None else _shorten(redact(str(last)), 60),
            )
        )
    if not rows:
        return "no breakers configured"
    widths = [
        max(len(row[i]) for row in (header, *rows)) for i in range(len(header))
    ]
    lines = [_line(header, widths)]
    for row, state in zip(rows, states, strict=True):
        line = _line(row, widths)
        if colour and state in _COLOURS:
            # Colour the padded state cell only, so columns stay aligned.
            start = widths[0] + 2
            end = start + widths[1]
            line = (
                f"{line[:start]}\x1b[{_COLOURS[state]}m{line[start:end]}"
                f"\x1b[0m{line[end:]}"
            )
        lines.append(line)
    return "\n".join(lines)


def _line(cells: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(
        cell.ljust(width) for cell, width in zip(cells, widths, strict=True)
    ).rstrip()


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""Where ``status`` and ``breaker`` find the breakers.

Either of two sources:

- ``--url URL``: a running :mod:`sage_resilience.asgi` app (``GET
  {URL}/breakers``; ``POST {URL}/breakers/{name}/{action}`` with the admin
  token as a bearer token);
- ``--config PATH`` (or the default configuration): the registry built in
  this process, whose state comes from the configured storage. With the
  ``memory`` storage that state is this process's own, so ``breaker``
  refuses to act on it and ``status`` says so (exit 1); a shared storage
  is checked first (:func:`probe_storage`), since the library falls back
  on local state, all closed, when its store does not answer.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import sys
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sage_resilience._redact import redact
from sage_resilience._terminal import printable
from sage_resilience.cli._options import (
    add_config,
    add_platform,
    add_timeout,
    add_url,
)

if TYPE_CHECKING:
    import argparse

    from sage_resilience._config import StorageConfig

__all__ = [
    "TOKEN_ENV",
    "CommandError",
    "add_source",
    "answer_error",
    "base_url",
    "configure_from",
    "fail",
    "fetch_status",
    "probe_storage",
    "request",
    "storage_location",
]

#: Where ``breaker --url`` reads the admin token without ``--token``.
TOKEN_ENV: Final = "SAGE_RESILIENCE_ADMIN_TOKEN"  # noqa: S105 - a name


class CommandError(Exception):
    """A problem to report on stderr with an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def fail(command: str, failure: CommandError) -> int:
    """Report *failure* in one line on stderr; return its exit code."""
    print(printable(f"sage-resilience {command}: {failure}"), file=sys.stderr)
    return failure.code


def add_source(parser: argparse.ArgumentParser) -> None:
    """``[--config PATH | --url URL] [--platform P] [--timeout SECONDS]``."""
    source = parser.add_mutually_exclusive_group()
    add_config(
        source,
        "build the breakers from this configuration and read the state of "
        "its storage (default: env SAGE_RESILIENCE_CONFIG, else the "
        "shipped one)",
    )
    add_url(
        source,
        "base URL of a running sage_resilience.asgi app, e.g. "
        "http://127.0.0.1:8000/resilience",
    )
    add_platform(parser, "with --config: apply this platform's overrides")
    add_timeout(
        parser,
        "time allowed to the request (--url), or to reaching a shared storage",
    )


# -- local ----------------------------------------------------------------


def configure_from(args: argparse.Namespace) -> StorageConfig:
    """Build the registry from ``--config``; return its storage settings."""
    from sage_resilience._registry import configure  # noqa: PLC0415
    from sage_resilience.exceptions import ConfigError  # noqa: PLC0415

    try:
        config = configure(args.config, platform=args.platform)
    except ConfigError as exc:
        raise CommandError(str(exc)) from exc
    except NotImplementedError as exc:
        raise CommandError(str(exc)) from exc
    storage: StorageConfig = config.storage
    return storage


def storage_location(storage: StorageConfig) -> str:
    """Where *storage* keeps the state, as shown (secrets redacted)."""
    if storage.backend == "redis":
        return redact(str(storage.url))
    if storage.backend == "sqlite":
        return f"sqlite:{storage.path}"
    return storage.backend


def probe_storage(storage: StorageConfig, timeout: float) -> str | None:
    """Ask a shared storage for an answer; None when it gave one.

    Returns:
        The error (one line, secrets redacted) when the store cannot be
        reached or read within *timeout*; None when it answered, and for
        the ``memory`` storage, which has nothing to reach.
    """
    try:
        if storage.backend == "redis":
            _ping_redis(str(storage.url), timeout)
        elif storage.backend == "sqlite":
            _read_sqlite(str(storage.path), timeout)
    except Exception as exc:  # any failure is the finding
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        return redact(text)
    return None


def _ping_redis(url: str, timeout: float) -> None:
    import redis  # noqa: PLC0415 - the redis extra, needed for redis only

    client = redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        client.ping()
    finally:
        client.close()


def _read_sqlite(path: str, timeout: float) -> None:
    uri = Path(path).resolve().as_uri() + "?mode=rw"
    db = sqlite3.connect(uri, uri=True, timeout=timeout)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    finally:
        db.close()


# -- remote ---------------------------------------------------------------


@functools.cache
def _opener() -> Any:
    """An opener that never follows redirects (the token could go along).

    urllib.request is imported only by a command that asks an app.
    """
    import urllib.request  # noqa: PLC0415

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
            return None

    return urllib.request.build_opener(_NoRedirect)


def base_url(url: str) -> str:
    """*url* without its trailing slash, once checked to be http(s).

    argparse checks ``--url`` already; this holds for a namespace built
    some other way.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        parts = urllib.parse.SplitResult("", "", "", "", "")
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise CommandError(
            f"--url must be an http(s) URL, got {redact(url)!r}", code=2
        )
    return url.rstrip("/")


def request(
    method: str,
    url: str,
    *,
    token: str | None = None,
    timeout: float,
) -> tuple[int, Any]:
    """Send one request; return the status and the decoded JSON body."""
    import http.client  # noqa: PLC0415 - on a request only (start-up time)
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    outgoing = urllib.request.Request(  # noqa: S310 - scheme checked
        url, method=method, headers=headers
    )
    try:
        with _opener().open(outgoing, timeout=timeout) as response:
            code, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        code, raw = exc.code, exc.read()
        exc.close()
    except (
        urllib.error.URLError,
        OSError,
        ValueError,
        http.client.HTTPException,
    ) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandError(
            f"cannot reach {redact(url)}: {redact(str(reason))}"
        ) from exc
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return code, body


def answer_error(url: str, code: int, body: Any) -> CommandError:
    """The error for an answer other than 200, with the app's message."""
    message = body.get("error") if isinstance(body, dict) else None
    return CommandError(
        f"{redact(url)} answered HTTP {code}"
        + (f": {redact(str(message))}" if message else "")
    )


def fetch_status(url: str, timeout: float) -> dict[str, Any]:
    """``GET {url}/breakers``: the app's status entries."""
    target = f"{base_url(url)}/breakers"
    code, body = request("GET", target, timeout=timeout)
    if code != 200:
        raise answer_error(target, code, body)
    if not isinstance(body, dict):
        raise CommandError(f"{redact(target)} did not answer a JSON object")
    return body

"""Reading one exception safely, and writing the sentences about it.

Everything the other diagnosis modules read off an exception goes through
here, bounded: ``cause_of`` runs on every counted failure, so a 10 MB
message or a traceback grown by a thousand raises must cost no more than a
short one, and a broken ``__str__`` must not break the failure path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sage_resilience._redact import MAX_TEXT, redact

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from types import TracebackType

__all__ = [
    "attr",
    "clause",
    "error_text",
    "frames",
    "message",
    "module_of",
    "one_line",
    "where",
]

#: Frames of one traceback read at most: an exception object raised again
#: and again (a cached error) grows its traceback with every raise, and
#: every counted failure reads it.
_MAX_FRAMES = 256


def module_of(exc: BaseException) -> str:
    """The module that defines *exc*'s class (``""`` when unknown)."""
    return type(exc).__module__ or ""


def frames(tb: TracebackType | None) -> Iterator[tuple[str, str]]:
    """``(module, function)`` of each frame of *tb*, at most 256."""
    for _ in range(_MAX_FRAMES):
        if tb is None:
            return
        code = tb.tb_frame.f_code
        yield str(tb.tb_frame.f_globals.get("__name__", "")), code.co_name
        tb = tb.tb_next


def message(exc: BaseException) -> str:
    """The start of *exc*'s message: what diagnosis reads is bounded.

    ``cause_of`` runs on every counted failure; a 10 MB message must cost
    no more than a short one.
    """
    try:
        return str(exc)[:MAX_TEXT]
    except Exception:  # a broken __str__: diagnose without the text
        return ""


def one_line(text: str, limit: int = 300) -> str:
    """*text* on one line, whitespace collapsed, at most *limit* chars."""
    text = " ".join(text[: 4 * limit + 64].split())
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


def clause(text: str) -> str:
    """Text to embed in a sentence: no trailing period of its own."""
    return text.rstrip().rstrip(".")


def error_text(exc: BaseException) -> str:
    """``"Type: first line of the message"``, redacted."""
    text = one_line(message(exc).strip().split("\n", 1)[0])
    name = type(exc).__name__
    return redact(f"{name}: {text}" if text else name)


def attr(obj: object, name: str) -> Any:
    """``getattr(obj, name, None)`` that survives raising properties."""
    try:
        return getattr(obj, name, None)
    except Exception:  # httpx raises when the request was never set
        return None


def where(details: Mapping[str, Any]) -> str:
    """``host:port`` (``[v6]:port``) from *details*, or ``the server``."""
    host = details.get("host")
    port = details.get("port")
    if host is None:
        return "the server"
    host_text = f"[{host}]" if ":" in str(host) else str(host)
    return f"{host_text}:{port}" if port is not None else host_text

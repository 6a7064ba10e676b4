"""Keep secrets out of events, status entries and error messages.

Everything the library shows a person (exception text in ``last_failure``,
settings in status, diagnosis explanations) goes through :func:`redact` or
:func:`redact_mapping` first.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["REDACTED", "is_secret_key", "redact", "redact_mapping"]

REDACTED = "***"

_SECRET_KEY = re.compile(
    r"pass(word|wd)?|secret|token|api[_-]?key|apikey|auth|credential|"
    r"private[_-]?key|dsn",
    re.IGNORECASE,
)

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host -> scheme://user:***@host
    (
        re.compile(r"(?P<pre>[a-zA-Z][\w+.-]*://[^\s:/@]*:)[^\s@/]*(?=@)"),
        rf"\g<pre>{REDACTED}",
    ),
    # Authorization: Bearer xxx / Basic xxx
    (
        re.compile(r"(?i)\b(?P<pre>bearer|basic)\s+[A-Za-z0-9._~+/=-]+"),
        rf"\g<pre> {REDACTED}",
    ),
    # password=..., api_key: ..., "token": "..." in DSNs, query strings,
    # headers and reprs of mappings
    (
        re.compile(
            r"(?i)(?P<pre>[\"']?\b(?:password|passwd|pwd|secret|token|"
            r"api[_-]?key|apikey|access[_-]?key|x-api-key)[\"']?\s*[=:]\s*"
            r"[\"']?)[^\s\"'&,;}]+"
        ),
        rf"\g<pre>{REDACTED}",
    ),
    # well-known key formats: sk-..., OpenAI/SiliconFlow style keys
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), REDACTED),
)


def is_secret_key(key: str) -> bool:
    """Whether a mapping key names something secret (password, token...)."""
    return _SECRET_KEY.search(key) is not None


def redact(text: str) -> str:
    """Return *text* with passwords, tokens and API keys replaced by ***."""
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def redact_mapping(mapping: dict[str, Any]) -> dict[str, Any]:
    """Copy *mapping*, hiding secret-looking keys and secrets in values."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if is_secret_key(str(key)) and value is not None:
            out[key] = REDACTED
        elif isinstance(value, dict):
            out[key] = redact_mapping(value)
        elif isinstance(value, str):
            out[key] = redact(value)
        else:
            out[key] = value
    return out

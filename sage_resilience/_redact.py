"""Keep secrets out of events, status entries and error messages.

Everything the library shows a person (exception text in ``last_failure``,
settings in status, diagnosis explanations) goes through :func:`redact` or
:func:`redact_mapping` first.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

__all__ = ["REDACTED", "is_secret_key", "redact", "redact_mapping"]

REDACTED = "***"

#: Redaction works on at most this many characters of one text: whatever
#: the input, the work per message is bounded (the rest is cut, not shown).
MAX_TEXT = 8192

#: Key parts that name a secret (keys are split on ``_ - . space``).
_SECRET_PARTS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pass",
        "secret",
        "token",
        "apikey",
        "credential",
        "credentials",
        "dsn",
        "auth",
        "authorization",
        "signature",
        "sig",
        "cookie",
    }
)
#: Adjacent key parts that name a secret together (``api_key``).
_SECRET_PAIRS = frozenset(
    {("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key")}
)
_KEY_PARTS = re.compile(r"[_\-.\s]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

# Every pattern is linear: bounded repeats where a match could restart at
# each position of a long run, no nested quantifiers.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host -> scheme://user:***@host; the password
    # may hold "/" or "@" (the last "@" of the token ends it).
    (
        re.compile(
            r"(?P<pre>(?<![\w+.-])[a-zA-Z][\w+.-]{0,31}://[^\s:/@]{0,256}:)"
            r"\S{1,256}@(?=[^\s@]*(?:\s|$))"
        ),
        rf"\g<pre>{REDACTED}@",
    ),
    # scheme://token@host (a token as userinfo, no colon)
    (
        re.compile(
            r"(?P<pre>(?<![\w+.-])[a-zA-Z][\w+.-]{0,31}://)"
            r"(?=[^\s:/@]{16,256}@)[^\s:/@]{16,256}@"
        ),
        rf"\g<pre>{REDACTED}@",
    ),
    # Authorization: Bearer xxx / Basic xxx / Token xxx
    (
        re.compile(
            r"(?i)(?<![A-Za-z0-9])(?P<pre>bearer|basic|token)\s+"
            r"[A-Za-z0-9._~+/=-]{8,}"
        ),
        rf"\g<pre> {REDACTED}",
    ),
    # password=..., DB_PASSWORD: ..., "client_secret": "..." in DSNs,
    # headers and reprs of mappings (a name ending in _env is a variable
    # name, not a secret: "password_env=" does not match)
    (
        re.compile(
            r"(?i)(?P<pre>(?<![A-Za-z0-9])[\"']?(?:password|passwd|pwd|"
            r"secret|token|api[_-]?key|apikey|access[_-]?key|x-api-key|"
            r"client[_-]?secret|access[_-]?token|refresh[_-]?token|"
            r"private[_-]?key)[\"']?[ \t]{0,8}[=:][ \t]{0,8}[\"']?)"
            r"[^\s\"'&,;}]+"
        ),
        rf"\g<pre>{REDACTED}",
    ),
    # query parameters: ?key=..., &sig=..., X-Amz-Signature=...
    (
        re.compile(
            r"(?i)(?P<pre>[?&;](?:key|sig|signature|x-amz-signature|"
            r"x-amz-credential|x-amz-security-token|token|access_token|"
            r"api_key|apikey|code)=)[^&\s#\"']+"
        ),
        rf"\g<pre>{REDACTED}",
    ),
    # well-known key formats: OpenAI/SiliconFlow sk-..., GitHub, AWS, JWT
    (re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{8,}"), REDACTED),
    (re.compile(r"(?<![A-Za-z0-9])gh[pousr]_[A-Za-z0-9]{20,}"), REDACTED),
    (re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}"), REDACTED),
    (
        re.compile(
            r"(?<![A-Za-z0-9])eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"
            r"\.[A-Za-z0-9_-]*"
        ),
        REDACTED,
    ),
)


def is_secret_key(key: str) -> bool:
    """Whether a mapping key names something secret (password, token...).

    ``author``, ``oauth_scope`` are not; ``password_env`` (the *name* of
    a variable holding one) is not either.
    """
    parts = [
        part for part in _KEY_PARTS.split(_CAMEL.sub("_", key).lower()) if part
    ]
    if not parts or parts[-1] == "env":
        return False
    if any(part in _SECRET_PARTS for part in parts):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(parts))


def redact(text: str) -> str:
    """Return *text* with passwords, tokens and API keys replaced by ***.

    Texts longer than ``MAX_TEXT`` characters are cut first, so the work
    is bounded whatever the input.
    """
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + "..."
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, dict):
        return redact_mapping(value)
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v) for v in value)
    return value


def redact_mapping(mapping: dict[str, Any]) -> dict[str, Any]:
    """Copy *mapping*, hiding secret-looking keys and secrets in values.

    Lists and nested mappings are walked too.
    """
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if is_secret_key(str(key)) and value is not None:
            out[key] = REDACTED
        else:
            out[key] = _redact_value(value)
    return out

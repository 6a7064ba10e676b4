"""Keep secrets out of events, status entries and error messages.

Everything the library shows a person (exception text in ``last_failure``,
settings in status, diagnosis explanations, configuration errors) goes
through :func:`redact` or :func:`redact_mapping` first.

The work per text is bounded whatever the input: a text is cut to
``MAX_TEXT`` characters *before* it is searched, and every pattern is
linear (no nested quantifiers; a pattern that starts with a repeated class
may only start where a run of that class starts, and its repeats are
possessive, so no position is scanned more than a few times).

What is hidden:

* the password of a URL's userinfo, even when it holds ``/`` or ``@``
  (``postgresql://sage:p@ss/word@db/sage``), and a token given as the
  whole userinfo (``https://ghp_...@github.com``);
* secret query and fragment parameters (``?key=``, ``&sig=``,
  ``X-Amz-Signature=``, ``#access_token=``), names URL-decoded;
* the value after a secret-looking name in ``name=value``, ``name: value``
  and quoted forms (``DB_PASSWORD=``, ``"client_secret": "..."``,
  ``aws_secret_access_key =``, ``X-Api-Key:``, ``Authorization: Token``);
* credentials after an HTTP auth scheme (``Bearer``, ``Basic``, ``Token``);
* well-known credential formats wherever they appear: JWTs, AWS access
  key ids, GitHub, GitLab, Slack, Stripe, Hugging Face, Google and
  OpenAI-style (``sk-...``) keys, PEM private keys;
* any *known* secret value the caller passes (the key a request carried,
  see :func:`secrets_of`), however the provider echoed it.

Names are judged by their words (``DB_PASSWORD``, ``clientSecret``,
``x-api-key``): ``author`` and ``oauth_scope`` are not secrets, nor are
names of where a secret is kept (``password_env``, ``api_key_env``,
``password_file``).
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "MAX_TEXT",
    "REDACTED",
    "is_secret_key",
    "redact",
    "redact_mapping",
    "secrets_of",
]

REDACTED: Final = "***"

#: Redaction reads at most this many characters of one text (plus the end
#: of the word the cut falls in); the rest is cut, not shown.
MAX_TEXT: Final = 8192
#: How far past the cut the last word is followed to its end.
_MARGIN: Final = 512
#: Mappings nested deeper than this are hidden whole.
_MAX_DEPTH: Final = 32
#: A known secret shorter than this is not searched for (it would match
#: ordinary words).
_MIN_KNOWN: Final = 4
#: A known secret is recognised from its first this many characters on,
#: even when the rest was cut.
_PROBE: Final = 8

# --------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------

#: Words that make a name secret wherever they stand in it.
_SECRET_WORDS: Final = frozenset(
    {
        "apikey",
        "auth",
        "authorization",
        "cookie",
        "credential",
        "credentials",
        "dsn",
        "pass",
        "passphrase",
        "passwd",
        "password",
        "passwords",
        "pwd",
        "secret",
        "secrets",
        "sig",
        "signature",
        "token",
    }
)
#: A word ending like this is secret too (``dbpassword``, ``accesstoken``).
_SECRET_ENDINGS: Final = (
    "accesskey",
    "apikey",
    "passphrase",
    "passwd",
    "password",
    "privatekey",
    "secret",
    "secretkey",
    "token",
)
#: ``key`` is secret after one of these (``api_key``, ``AccountKey``), not
#: alone or after others (``primary_key``, ``cache_key``).
_KEY_QUALIFIERS: Final = frozenset(
    {
        "access",
        "account",
        "api",
        "app",
        "client",
        "consumer",
        "encryption",
        "license",
        "master",
        "private",
        "secret",
        "service",
        "session",
        "shared",
        "signing",
        "subscription",
    }
)
#: A name ending in one of these words is *about* a secret, not one: where
#: it is kept (``password_env``, ``password_file``), how it is used
#: (``token_type``, ``auth_method``), or how big it is.
_ABOUT_WORDS: Final = frozenset(
    {
        "count",
        "enabled",
        "endpoint",
        "env",
        "expires",
        "expiry",
        "field",
        "file",
        "header",
        "kind",
        "length",
        "limit",
        "method",
        "mode",
        "name",
        "path",
        "prefix",
        "provider",
        "required",
        "scheme",
        "scope",
        "size",
        "timeout",
        "ttl",
        "type",
        "uri",
        "url",
        "var",
        "variable",
    }
)
#: Query parameters that hold secrets although the name alone would not
#: say so anywhere else (``?key=`` of Google APIs, ``?code=`` of OAuth).
_SECRET_PARAMS: Final = frozenset({"code", "key", "sig", "sv_sig"})

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORDS = re.compile(r"[a-z0-9]+")


def _words(name: str) -> list[str]:
    return _WORDS.findall(_CAMEL.sub("_", name).lower())


@functools.lru_cache(maxsize=1024)
def is_secret_key(key: str) -> bool:
    """Whether a name (mapping key, parameter, header) names a secret.

    ``DB_PASSWORD``, ``clientSecret``, ``x-api-key``, ``AccountKey`` are;
    ``author``, ``oauth_scope``, ``max_tokens``, ``primary_key`` are not,
    nor is a name *about* a secret: ``password_env``, ``api_key_env``
    (the names of variables holding one), ``password_file``,
    ``token_type``.
    """
    words = _words(key)
    if not words or (len(words) > 1 and words[-1] in _ABOUT_WORDS):
        return False
    for index, word in enumerate(words):
        if word in _SECRET_WORDS or word.endswith(_SECRET_ENDINGS):
            return True
        if word == "key" and index and words[index - 1] in _KEY_QUALIFIERS:
            return True
    return False


def _is_secret_param(name: str) -> bool:
    name = urllib.parse.unquote_plus(name)
    return name.lower() in _SECRET_PARAMS or is_secret_key(name)


# --------------------------------------------------------------------------
# Patterns (each linear, see the module docstring)
# --------------------------------------------------------------------------

#: ``scheme://``; the scheme starts where a run of scheme characters does.
_URL = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*+://")
#: The rest of a URL: up to white space, a quote or an angle bracket.
_URL_REST = re.compile(r"[^\s\"'<>`]*+")
#: Schemes whose userinfo without a colon is a token, never a user name.
_TOKEN_USERINFO_SCHEMES: Final = frozenset(
    {"http", "https", "ws", "wss", "git+https", "git+http"}
)

#: A query or fragment parameter: ``?name=value``, ``&name=value``...
_PARAM = re.compile(
    r"[?&;#](?P<name>[^\s\"'<>&;#=?]{1,128}+)=(?P<value>[^\s\"'<>&;#]*+)"
)

#: ``name=value``, ``name: value``, ``"name": ...``; the name starts where
#: a run of name characters does.
_PAIR = re.compile(r"(?<![\w.-])(?P<name>[\w.-]++)[\"']?[ \t]*+[=:][ \t]*+")
#: The value after a pair's separator: quoted (to the closing quote or the
#: end of the line), or bare (to white space or punctuation).
_VALUE = re.compile(
    r"\"(?P<dq>[^\"\r\n]*+)\"?"
    r"|'(?P<sq>[^'\r\n]*+)'?"
    r"|(?P<bare>[^\s\"'&,;)\]}>]++)"
)
#: The word before a bare ``key`` (``API key: ...``).
_WORD_BEFORE = re.compile(r"([A-Za-z]{1,16})[ \t_-]\Z")

#: HTTP auth schemes followed by their credential.
_SCHEMES: Final = frozenset({"bearer", "basic", "token", "negotiate"})
_AUTH = re.compile(
    r"(?i)(?<![\w-])(?P<scheme>bearer|basic|token|negotiate)[ \t]++"
    r"(?P<cred>[A-Za-z0-9._~+/=-]++)"
)

#: Credential formats recognised on sight.
_CREDENTIAL = re.compile(
    r"(?<![A-Za-z0-9_-])(?:"
    r"sk-[A-Za-z0-9_-]{8,}+"  # OpenAI-style: sk-..., sk-proj-..., sk-ant-...
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{8,}+"  # Stripe
    r"|gh[pousr]_[A-Za-z0-9]{20,}+"  # GitHub
    r"|github_pat_[A-Za-z0-9_]{20,}+"
    r"|glpat-[A-Za-z0-9_-]{20,}+"  # GitLab
    r"|xox[abposr]-[A-Za-z0-9-]{10,}+"  # Slack
    r"|hf_[A-Za-z0-9]{30,}+"  # Hugging Face
    r"|AIza[A-Za-z0-9_-]{30,}+"  # Google API keys
    r"|(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA)"
    r"[A-Z0-9]{16}(?![A-Za-z0-9])"  # AWS access key ids
    r"|eyJ[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]*+"  # JWT
    r")"
    r"|-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----"
)
_PEM_END = "-----END"

_SPACE = re.compile(r"\s")


def _looks_like_token(text: str) -> bool:
    """Long, and mixes letters and digits: a token, not a user name."""
    return (
        len(text) >= 16
        and any(c.isdigit() for c in text)
        and any(c.isalpha() for c in text)
    )


def _credential_like(text: str) -> bool:
    """Whether the word after ``Basic`` or ``Token`` is a credential."""
    if len(text) >= 6 and any(c.isdigit() for c in text):
        return True
    return len(text) >= 8 and (
        (text.lower() != text and text.upper() != text)
        or any(c in "+/=_~.-" for c in text)
    )


# --------------------------------------------------------------------------
# Finding what to hide: each scanner appends (start, end) spans
# --------------------------------------------------------------------------

_Spans = list[tuple[int, int]]


def _scan_urls(text: str, spans: _Spans) -> None:  # noqa: C901 - a hand-written linear URL scanner
    # urllib.parse.urlsplit() ends the userinfo at the first "/" and the
    # password at the first "@", so a password holding either leaks; the
    # authority is found by hand here instead.
    # URLs nested in one another (a://a://...) share the end of the word
    # and its "@" positions, found once per word: linear time.
    end = first_at = last_at = -1
    for match in _URL.finditer(text):
        scheme = match.group()[:-3].lower()
        start = match.end()
        if start > end:
            rest = _URL_REST.match(text, start)
            end = start if rest is None else rest.end()
            last_at = text.rfind("@", start, end)
            first_at = -1
        if last_at < start or len(scheme) > 32:
            continue
        if first_at < start:
            first_at = text.find("@", start, end)
        head = first_at  # a user name holds none of ":/?#"
        for stop in "/?#":
            found = text.find(stop, start, head)
            if found >= 0:
                head = found
        colon = text.find(":", start, head)
        if colon >= 0:
            # user:password@host; the password runs to the last "@"
            if last_at > colon + 1:
                spans.append((colon + 1, last_at))
            if _looks_like_token(text[start:colon]):
                spans.append((start, colon))
        elif head == first_at > start and (
            scheme in _TOKEN_USERINFO_SCHEMES
            or _looks_like_token(text[start:first_at])
        ):
            spans.append((start, first_at))  # token@host


def _scan_params(text: str, spans: _Spans) -> None:
    for match in _PARAM.finditer(text):
        if match.group("value") and _is_secret_param(match.group("name")):
            spans.append(match.span("value"))


def _pair_is_secret(text: str, match: re.Match[str]) -> bool:
    name = match.group("name").strip(".-")
    if is_secret_key(name):
        return True
    if name.lower() != "key":
        return False
    # "API key: ...", "secret key = ...": the qualifier is the word before
    start = match.start()
    before = _WORD_BEFORE.search(text, max(0, start - 17), start)
    return before is not None and before.group(1).lower() in _KEY_QUALIFIERS


def _scan_pairs(text: str, spans: _Spans) -> None:
    hidden = 0  # pairs inside a value already hidden are skipped, so each
    # character is read by one value match at most (linear time)
    for match in _PAIR.finditer(text):
        if match.start() < hidden or not _pair_is_secret(text, match):
            continue
        value = _VALUE.match(text, match.end())
        if value is None:
            continue
        group = value.lastgroup or "bare"
        start, end = value.span(group)
        if start == end:
            continue
        # "Authorization: Token abc", "auth='Basic abc'": keep the scheme
        stop = len(text) if group == "bare" else end
        scheme = _AUTH.match(text, start, stop)
        if scheme is not None:
            start, end = scheme.span("cred")
        spans.append((start, end))
        hidden = end


def _scan_auth(text: str, spans: _Spans) -> None:
    for match in _AUTH.finditer(text):
        cred = match.group("cred")
        if match.group("scheme").lower() == "bearer" or _credential_like(cred):
            spans.append(match.span("cred"))


def _scan_credentials(text: str, spans: _Spans) -> None:
    hidden = 0
    for match in _CREDENTIAL.finditer(text):
        start, end = match.span()
        if start < hidden:
            continue  # inside a private key already hidden
        if match.group().startswith("-----BEGIN"):
            close = text.find(_PEM_END, end)
            end = hidden = len(text) if close < 0 else close
        spans.append((start, end))


def _scan_known(text: str, known: Sequence[str], spans: _Spans) -> None:
    # A secret may be echoed cut short ("sk-abcd1234..."): from its first
    # _PROBE characters on, as much of it as the text repeats is hidden.
    for secret in known:
        probe = secret[:_PROBE]
        at = text.find(probe)
        while at >= 0:
            end = at + len(probe)
            limit = min(len(text), at + len(secret))
            while end < limit and text[end] == secret[end - at]:
                end += 1
            spans.append((at, end))
            at = text.find(probe, end)


def _known(values: Iterable[str]) -> list[str]:
    # Longest first, so a secret containing another is hidden whole.
    unique = {v for v in values if isinstance(v, str) and len(v) >= _MIN_KNOWN}
    return sorted(unique, key=len, reverse=True)


def _apply(text: str, spans: _Spans) -> str:
    if not spans:
        return text
    spans.sort()
    out: list[str] = []
    pos = 0
    for start, end in spans:
        if end <= pos:
            continue  # inside a span already hidden
        if start >= pos:
            out.append(text[pos:start])
            out.append(REDACTED)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _cut(text: str, limit: int, spans: _Spans) -> tuple[str, bool]:
    """*text* cut for redaction; whether it was cut.

    The word the cut falls in is followed to its end (at most ``_MARGIN``
    characters further), so a credential is seen whole. A word longer than
    that which could hold one (``:``, ``@``, ``=``) is hidden whole.
    """
    if len(text) <= limit:
        return text, False
    window = text[: limit + _MARGIN]
    if len(window) == len(text):
        return window, True  # the last word is whole already
    space = _SPACE.search(window, limit)
    if space is not None:
        return window[: space.start()], True
    start = max(window.rfind(c, 0, limit) for c in " \t\r\n\f\v") + 1
    if any(c in window[start:] for c in ":@="):
        spans.append((start, len(window)))
    return window, True


def redact(
    text: str, *, limit: int = MAX_TEXT, known: Iterable[str] = ()
) -> str:
    """Return *text* with passwords, tokens and API keys replaced by ***.

    Args:
        text: Any text (an exception message, a URL, a DSN...).
        limit: Characters kept; a longer text is cut *before* it is
            searched, so the work is bounded whatever the input, and
            ``...`` marks the cut.
        known: Secret values to hide wherever they appear (a request's own
            API key, which a provider may echo in any form).

    Returns:
        The redacted text.
    """
    spans: _Spans = []
    work, was_cut = _cut(text, limit, spans)
    _scan_urls(work, spans)
    _scan_params(work, spans)
    _scan_pairs(work, spans)
    _scan_auth(work, spans)
    _scan_credentials(work, spans)
    secrets = _known(known)
    if secrets:
        _scan_known(work, secrets, spans)
    out = _apply(work, spans)
    return out[:limit] + "..." if was_cut else out


def _redact_value(value: Any, known: Sequence[str], depth: int) -> Any:
    if isinstance(value, str):
        return redact(value, known=known)
    if isinstance(value, dict | list | tuple) and depth >= _MAX_DEPTH:
        return REDACTED
    if isinstance(value, dict):
        return _redact_dict(value, known, depth + 1)
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v, known, depth + 1) for v in value)
    return value


def _redact_dict(
    mapping: dict[Any, Any], known: Sequence[str], depth: int
) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key, value in mapping.items():
        if value is not None and is_secret_key(str(key)):
            out[key] = REDACTED
        else:
            out[key] = _redact_value(value, known, depth)
    return out


def redact_mapping(
    mapping: dict[str, Any], *, known: Iterable[str] = ()
) -> dict[str, Any]:
    """Copy *mapping*, hiding secret-looking keys and secrets in values.

    Nested mappings, lists and tuples are walked too; below
    ``_MAX_DEPTH`` levels a value is hidden whole.
    """
    return _redact_dict(mapping, _known(known), 0)


# --------------------------------------------------------------------------
# Secrets a failure carries
# --------------------------------------------------------------------------

#: Request headers whose values are credentials.
_SECRET_HEADERS: Final = (
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
)
_CHAIN_DEPTH: Final = 8


def _header_values(request: Any) -> list[str]:
    headers = getattr(request, "headers", None)
    get = getattr(headers, "get", None)
    if get is None:
        return []
    found: list[str] = []
    for name in _SECRET_HEADERS:
        value = get(name) or get(name.title())
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if not isinstance(value, str):
            continue
        found.append(value)
        scheme, _, credential = value.partition(" ")
        if credential and scheme.lower() in _SCHEMES:
            found.append(credential.strip())
    return found


def secrets_of(exc: BaseException) -> tuple[str, ...]:
    """The credentials a failed request carried, to hide if echoed back.

    A provider answering 401 may quote the key it was given in a form no
    pattern recognises; the request (``exc.request``, or
    ``exc.response.request``, of httpx, httpx2, requests and the OpenAI
    SDK) says what it was. The cause chain is searched too. Never raises.
    """
    found: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    for _ in range(_CHAIN_DEPTH):
        if current is None or id(current) in seen:
            break
        seen.add(id(current))
        for attr in ("request", "response"):
            try:
                target = getattr(current, attr, None)
                if attr == "response":
                    target = getattr(target, "request", None)
                found.extend(_header_values(target))
            except Exception:  # noqa: S112 - best effort, never raise
                continue
        current = current.__cause__ or current.__context__
    return tuple(found)

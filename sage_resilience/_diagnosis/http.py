"""HTTP clients: statuses, transport errors and the provider's message.

httpx and httpx2 (the same classes) are classified by type, but only when
the application already imported them; any other client (openai,
requests, aiohttp) through the attributes its errors carry: a status, a
``request`` or ``request_info``, a ``response``.
"""

from __future__ import annotations

import json
import re
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sage_resilience._classify import http_status, parse_retry_after
from sage_resilience._diagnosis.network import describe_network
from sage_resilience._diagnosis.reading import (
    attr,
    clause,
    message,
    one_line,
)
from sage_resilience._redact import REDACTED, is_secret_key, redact

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "describe_http",
    "httpx_base_of",
    "httpx_cause",
    "httpx_library",
    "safe_url",
    "status_cause",
]

_DNS_TEXT = re.compile(
    r"Name or service not known|nodename nor servname|"
    r"getaddrinfo failed|Temporary failure in name"
)


def httpx_library(module: str) -> Any:
    """The httpx or httpx2 module (same classes) that *module* is from."""
    root = module.partition(".")[0]
    if root in {"httpx", "httpx2"}:
        return sys.modules.get(root)
    return None


def httpx_base_of(exc: BaseException) -> Any:
    """The imported httpx or httpx2 whose ``HTTPError`` *exc* subclasses.

    A subclass defined elsewhere (the package's own transport errors).
    """
    for name in ("httpx", "httpx2"):
        library = sys.modules.get(name)
        if library is not None and isinstance(exc, library.HTTPError):
            return library
    return None


def status_cause(status: int) -> str:  # noqa: PLR0911 - one return per status class
    """The cause code of an HTTP status."""
    if status in {401, 403}:
        return "http_unauthorized"
    if status == 404:
        return "http_not_found"
    if status == 429:
        return "http_rate_limited"
    if status == 408:
        return "http_timeout"
    if status >= 500:
        return "http_server_error"
    if status >= 400:
        return "http_bad_request"
    return "unknown"


def httpx_cause(exc: BaseException, httpx: Any) -> tuple[str, bool] | None:  # noqa: PLR0911 - one return per httpx error
    """Classify an httpx error; the bool says whether it is conclusive."""
    if isinstance(exc, httpx.HTTPStatusError):
        return status_cause(exc.response.status_code), True
    if isinstance(exc, httpx.TimeoutException):
        return "http_timeout", True
    if isinstance(exc, httpx.ConnectError):
        # httpx says ConnectError for DNS and TLS alike: the chain below
        # has the conclusive socket or ssl error, when there is one.
        text = message(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text:
            return "tls_failure", False
        if _DNS_TEXT.search(text):
            return "dns_failure", False
        return "connection_refused", False
    if isinstance(
        exc,
        (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError),
    ):
        return "connection_reset", False
    return None


def safe_url(url: str) -> str:
    """*url* without its password, and with secret query values hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = (
            f"{user}:{REDACTED}@{hostport}"
            if ":" in userinfo
            else (f"{user}@{hostport}")
        )
    query = parts.query
    if query:
        pairs = [
            (
                k,
                REDACTED
                if is_secret_key(k) or k.lower() in {"key", "sig"}
                else v,
            )
            for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        query = urlencode(pairs, safe="*")
    return redact(
        urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    )


def _provider_message(response: Any) -> tuple[str | None, dict[str, Any]]:  # noqa: C901 - the shapes providers give their errors
    """The API's own error message from a response body, and its codes."""
    try:
        content: bytes = response.content
    except Exception:  # a streamed response that was never read
        return None, {}
    if not content:
        return None, {}
    try:
        data = json.loads(content)
    except ValueError:
        text = content.decode("utf-8", errors="replace")
        return (one_line(text, 300) or None), {}
    extra: dict[str, Any] = {}
    found: Any = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):  # OpenAI style
            found = error.get("message")
            for key in ("type", "code", "param"):
                if error.get(key) is not None:
                    extra[f"provider_{key}"] = error[key]
        elif isinstance(error, str):
            found = error
        if found is None:  # SiliconFlow style {"code":..,"message":..}
            found = data.get("message") or data.get("detail")
            if data.get("code") is not None:
                extra["provider_code"] = data["code"]
    if found is None:
        found = data
    if not isinstance(found, str):
        found = json.dumps(found, ensure_ascii=False)
    return one_line(found, 300) or None, extra


def _http_params(exc: BaseException) -> dict[str, Any]:
    """Method, URL, host and port of the request an error is about.

    ``request`` (httpx, httpx2, openai, requests) or ``request_info``
    (aiohttp); the URL may be an object (httpx, yarl) or a string.
    """
    details: dict[str, Any] = {}
    request = attr(exc, "request")
    if request is None:
        request = attr(exc, "request_info")
    url = attr(request, "url")
    if url is None:
        return details
    text = str(url)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return details
    method = attr(request, "method")
    if isinstance(method, str):
        details["method"] = method
    details["url"] = safe_url(text)
    details["host"] = parts.hostname
    details["port"] = (
        port if port is not None else 443 if parts.scheme == "https" else 80
    )
    return details


def _response_facts(
    exc: BaseException,
) -> tuple[str, str | None, dict[str, Any], Any]:
    """Reason phrase, provider message (and codes), headers of an answer.

    From the response an error holds (httpx, httpx2, openai, requests), or
    from the error itself (aiohttp keeps ``message`` and ``headers``).
    """
    response = attr(exc, "response")
    reason = attr(response, "reason_phrase") or attr(response, "reason")
    if response is None:
        reason = attr(exc, "message")
    headers = attr(response, "headers")
    if headers is None:
        headers = attr(exc, "headers")
    said, extra = (
        _provider_message(response) if response is not None else (None, {})
    )
    return str(reason or ""), said, extra, headers


def _request_details(
    chain: Sequence[BaseException], settings: Mapping[str, Any]
) -> dict[str, Any]:
    """The request of the first error in *chain* that names one.

    Else the policy's ``base_url``, so the explanation still names a host.
    """
    details: dict[str, Any] = {}
    for member in chain:
        details = _http_params(member)
        if details:
            return details
    if settings.get("base_url"):
        base = str(settings["base_url"])
        details["url"] = safe_url(base)
        details["host"] = urlsplit(base).hostname
    return details


def _describe_status(
    code: str,
    exc: BaseException,
    status: int,
    details: dict[str, Any],
    target: str,
) -> str:
    """The explanation of an answer with an error status."""
    reason, said, extra, headers = _response_facts(exc)
    details["status"] = status
    details.update(extra)
    if said:
        details["provider_message"] = said
    says = f", the provider says: {clause(said)}" if said else ""
    host = details.get("host", "the API host")
    answered = f"{host} answered {status} {reason}".rstrip()
    if code == "http_rate_limited":
        value = attr(headers, "get")
        retry_after = parse_retry_after(
            value("Retry-After") if callable(value) else None
        )
        details["retry_after"] = retry_after
        wait = (
            f"Retry-After asks to wait {retry_after:g}s"
            if retry_after is not None
            else "no Retry-After given"
        )
        return f"{answered} to {target}{says}; {wait}."
    if code == "http_unauthorized":
        return (
            f"{answered} to {target}, the API key is missing, wrong or "
            f"not allowed{says}."
        )
    if code == "http_not_found":
        return f"{answered} to {target}, no such path (check base_url){says}."
    if code == "http_bad_request":
        return (
            f"{answered} to {target}, the provider says: "
            f"{clause(said or 'no message')}."
        )
    return f"{answered} to {target}{says}."


def describe_http(
    code: str,
    exc: BaseException,
    chain: Sequence[BaseException],
    settings: Mapping[str, Any],
) -> tuple[str, dict[str, Any]]:
    """The explanation of an HTTP failure, and the details found.

    Args:
        code: The cause code (``http_*``, or a network one).
        exc: The exception that told the code.
        chain: The whole chain, for the request and refused addresses.
        settings: The policy's settings (``base_url``).
    """
    details = _request_details(chain, settings)
    target = (
        f"{details['method']} {details['url']}"
        if "method" in details
        else details.get("url", "the API")
    )
    status = http_status(exc)
    if code.startswith("http_") and status is not None:
        return _describe_status(code, exc, status, details, target), details
    if code == "http_timeout":
        host = details.get("host", "the API host")
        return (
            f"{target} got no answer in time from {host} "
            f"({type(exc).__name__})."
        ), details
    return describe_network(code, exc, chain, details, target), details

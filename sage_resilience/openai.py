"""OpenAI SDK integration: clients wired to a policy (extra ``openai``).

::

    from sage_resilience.openai import openai_client

    client = openai_client("siliconflow_api")
    reply = await client.chat.completions.create(model=..., messages=...)

:func:`openai_client` and :func:`sync_openai_client` return the SDK's own
``AsyncOpenAI`` / ``OpenAI``, configured from the policy:

* ``base_url`` from ``settings.base_url``;
* the API key from the environment variable named by
  ``settings.api_key_env`` (never from the YAML);
* the policy's ``timeout`` as the SDK's timeout;
* an HTTP client of the library that SDK version is built on (httpx2 for
  openai 3.x, httpx for 2.x) whose transport is a
  :class:`~sage_resilience.http.ResilientTransport`: every request goes
  through the breaker, and the policy retries, honouring ``Retry-After``;
* ``max_retries=0``: the SDK does not retry on top of the policy (its
  default of 2 would multiply every attempt by 3).

The SDK keeps its own errors: a 400 is ``openai.BadRequestError`` with the
provider's message (not counted: the caller's fault), a 429 that stays
after the policy's retries is ``openai.RateLimitError``. An open circuit
raises :class:`~sage_resilience.CircuitOpenError` at once (openai 3.x), or
an ``openai.APIConnectionError`` raised from it (openai 2.x, which wraps
what its transport raises); :func:`~sage_resilience.diagnose` says
``circuit_open`` for both.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Final

from sage_resilience._extras import needs_extra

with needs_extra("sage_resilience.openai", "openai", "openai"):
    import openai

from sage_resilience._policy import Policy
from sage_resilience._registry import policy as _registered
from sage_resilience.http import LIBRARIES, ResilientTransport

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["http_library", "openai_client", "sync_openai_client"]

#: Keyword arguments this module sets on the SDK constructor.
_OURS: Final = ("http_client",)


def http_library() -> str:
    """The HTTP library the installed openai SDK is built on.

    Returns:
        ``"httpx2"`` (openai 3.x) or ``"httpx"`` (openai 2.x).

    .. versionadded:: 0.2.0
    """
    for cls in openai.DefaultAsyncHttpxClient.__mro__:
        root = cls.__module__.partition(".")[0]
        if root in LIBRARIES:
            return root
    msg = (  # pragma: no cover - an SDK on neither library
        f"openai {openai.__version__} is built on neither httpx nor httpx2"
    )
    raise ImportError(msg)


def _policy_of(policy: Policy | str) -> Policy:
    return policy if isinstance(policy, Policy) else _registered(policy)


def _module() -> ModuleType:
    import importlib  # noqa: PLC0415 - the SDK imported it already

    return importlib.import_module(http_library())


def _sdk_kwargs(p: Policy, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The SDK constructor's arguments: the policy's, then the caller's."""
    for key in _OURS:
        if key in kwargs:
            msg = (
                f"{key}= is built from policy {p.name!r} (its transport "
                "sends every request through the policy); to use a client "
                "of your own, give it a sage_resilience.http."
                "ResilientTransport and build the SDK client yourself"
            )
            raise TypeError(msg)
    settings = p.config.settings
    out = dict(kwargs)
    if "api_key" not in out and settings.get("api_key_env"):
        variable = str(settings["api_key_env"])
        value = os.environ.get(variable)
        if not value:
            msg = (
                f"policy {p.name!r}: the environment variable {variable} "
                "(settings.api_key_env) is not set; set it to the API key, "
                "or pass api_key="
            )
            raise openai.OpenAIError(msg)
        out["api_key"] = value
    if "base_url" not in out and settings.get("base_url"):
        out["base_url"] = str(settings["base_url"])
    if "timeout" not in out and p.config.timeout is not None:
        out["timeout"] = p.config.timeout
    out.setdefault("max_retries", 0)
    return out


def _http_client(p: Policy, *, sync: bool, timeout: Any) -> Any:
    """A client of the SDK's HTTP library, with the policy's transport.

    Configured as the SDK configures its default one (connection limits,
    redirects followed), the SDK's timeout as the client's.
    """
    module = _module()
    limits = openai.DEFAULT_CONNECTION_LIMITS
    if sync:
        inner: Any = module.HTTPTransport(limits=limits)
        client_class: Any = module.Client
    else:
        inner = module.AsyncHTTPTransport(limits=limits)
        client_class = module.AsyncClient
    return client_class(
        transport=ResilientTransport(p, inner),
        timeout=openai.DEFAULT_TIMEOUT if timeout is None else timeout,
        follow_redirects=True,
    )


def openai_client(policy: Policy | str, **kwargs: Any) -> openai.AsyncOpenAI:
    """An ``openai.AsyncOpenAI`` whose requests all go through *policy*.

    Args:
        policy: A :class:`~sage_resilience.Policy`, or the name of one in
            the registry (resolved now).
        **kwargs: Passed to ``openai.AsyncOpenAI``; they win over the
            policy's ``base_url``, key, ``timeout`` and ``max_retries=0``.
            ``http_client`` is refused: this function builds it.

    Returns:
        The SDK client (close it, or use it in ``async with``).

    Raises:
        UnknownPolicyError: No policy has that name.
        openai.OpenAIError: ``settings.api_key_env`` names a variable that
            is not set (and no ``api_key`` was given).
        TypeError: ``http_client`` was given.

    .. versionadded:: 0.2.0
    """
    p = _policy_of(policy)
    sdk = _sdk_kwargs(p, kwargs)
    http = _http_client(p, sync=False, timeout=sdk.get("timeout"))
    return openai.AsyncOpenAI(http_client=http, **sdk)


def sync_openai_client(policy: Policy | str, **kwargs: Any) -> openai.OpenAI:
    """An ``openai.OpenAI`` whose requests all go through *policy*.

    The sync twin of :func:`openai_client`. The policy's ``timeout`` is
    the SDK's timeout here too, the bound of each attempt (the policy
    cannot interrupt a thread).

    Args:
        policy: A policy, or the name of one in the registry.
        **kwargs: Passed to ``openai.OpenAI`` (see :func:`openai_client`).

    Returns:
        The SDK client (close it, or use it in ``with``).

    Raises:
        UnknownPolicyError: No policy has that name.
        openai.OpenAIError: ``settings.api_key_env`` names a variable that
            is not set (and no ``api_key`` was given).
        TypeError: ``http_client`` was given.

    .. versionadded:: 0.2.0
    """
    p = _policy_of(policy)
    sdk = _sdk_kwargs(p, kwargs)
    http = _http_client(p, sync=True, timeout=sdk.get("timeout"))
    return openai.OpenAI(http_client=http, **sdk)

"""OpenAI SDK clients wired to a policy (extra ``openai``).

::

    from sage_resilience.openai import openai_client

    client = openai_client("siliconflow_api")
    reply = await client.chat.completions.create(model=..., messages=...)

The client is the SDK's own ``AsyncOpenAI`` (``OpenAI`` for
:func:`sync_openai_client`) with ``base_url`` from the policy's
``settings.base_url``, the API key from the environment variable named by
``settings.api_key_env``, the policy's ``timeout``, ``max_retries=0`` (the
policy retries, honouring ``Retry-After``; the SDK's own 2 retries would
multiply every attempt by 3), and an HTTP client whose transport sends
every request through the policy (:mod:`sage_resilience.http`).

So: a 429/5xx/timeout is a counted failure, retried by the policy; a 400
or 401 comes back as the SDK's ``BadRequestError`` / ``AuthenticationError``
with the provider's message, uncounted and not retried; an open circuit
raises :class:`~sage_resilience.CircuitOpenError` at once (openai 2.x wraps
it in ``APIConnectionError``, whose ``__cause__`` holds it, so
``diagnose()`` says ``circuit_open``).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

try:
    import openai as _sdk
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    msg = (
        "sage_resilience.openai needs the openai package, which is not "
        "installed: pip install 'sage-resilience[openai]'"
    )
    raise ImportError(msg) from exc

from sage_resilience._registry import resolve
from sage_resilience.http import resilient_client, resilient_sync_client

if TYPE_CHECKING:
    from sage_resilience._policy import Policy

__all__ = ["openai_client", "sync_openai_client"]


def _sdk_kwargs(p: Policy, kwargs: dict[str, Any]) -> dict[str, Any]:
    settings = p.config.settings
    base_url = settings.get("base_url")
    if base_url is not None:
        kwargs.setdefault("base_url", str(base_url))
    if "api_key" not in kwargs:
        key_env = settings.get("api_key_env")
        key = os.environ.get(str(key_env)) if key_env else None
        if key is None:
            # The SDK refuses a missing key; say where it was looked for.
            where = (
                f"the environment variable {key_env}"
                if key_env
                else f"policies.{p.name}.settings.api_key_env"
            )
            msg = (
                f"policy {p.name!r}: no API key: set {where}, or pass api_key="
            )
            raise ValueError(msg)
        kwargs["api_key"] = key
    if "timeout" not in kwargs and p.config.timeout is not None:
        kwargs["timeout"] = p.config.timeout
    kwargs.setdefault("max_retries", 0)
    return kwargs


def openai_client(policy: Policy | str, **kwargs: Any) -> _sdk.AsyncOpenAI:
    """The SDK's ``AsyncOpenAI``, every request through *policy*.

    Args:
        policy: A policy, or the name of one in the registry.
        **kwargs: Passed to ``openai.AsyncOpenAI`` (they win over the
            policy's ``base_url``, key, ``timeout`` and ``max_retries=0``);
            ``http_client`` replaces the policy's client.

    Raises:
        UnknownPolicyError: No policy has that name.
        ValueError: No API key: neither ``api_key=`` nor the variable named
            by ``settings.api_key_env``.

    .. versionadded:: 0.1.0
    """
    p = resolve(policy) if isinstance(policy, str) else policy
    kwargs = _sdk_kwargs(p, kwargs)
    if "http_client" not in kwargs:
        # No Authorization header of its own: the SDK sets the key.
        kwargs["http_client"] = resilient_client(p, base_url=None)
    return _sdk.AsyncOpenAI(**kwargs)


def sync_openai_client(policy: Policy | str, **kwargs: Any) -> _sdk.OpenAI:
    """The SDK's ``OpenAI``, every request through *policy*.

    The sync twin of :func:`openai_client`, with the same defaults.

    .. versionadded:: 0.1.0
    """
    p = resolve(policy) if isinstance(policy, str) else policy
    kwargs = _sdk_kwargs(p, kwargs)
    if "http_client" not in kwargs:
        kwargs["http_client"] = resilient_sync_client(p, base_url=None)
    return _sdk.OpenAI(**kwargs)

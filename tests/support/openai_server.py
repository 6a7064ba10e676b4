"""Answers of an OpenAI-compatible API, for :class:`StandInServer`.

The stand-in server plays the provider (SiliconFlow, OpenAI...) on
127.0.0.1: script ``/v1/chat/completions`` with these responses and point
the real ``openai`` SDK at ``server.url + "/v1"``::

    server.script(CHAT, [provider_error(503, "busy"), completion("hi")])

Bodies follow the provider's shapes: a chat completion, server-sent
events for ``stream=True``, and SiliconFlow's error body
(``{"code": ..., "message": ..., "data": null}``).
"""

from __future__ import annotations

import json
from typing import Any

from tests.support.http_servers import Response

__all__ = [
    "CHAT",
    "MODEL",
    "completion",
    "provider_error",
    "stream",
]

#: The path the SDK posts chat completions to (base_url ``.../v1``).
CHAT = "/v1/chat/completions"

MODEL = "Qwen/Qwen2.5-7B-Instruct"


def completion(text: str, **response: Any) -> Response:
    """A 200 with one chat completion saying *text*."""
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_800_000_000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": 1,
            "total_tokens": 4,
        },
    }
    return Response(200, json=body, **response)


def _event(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    return f"data: {text}\n\n".encode()


def stream(pieces: list[str], *, cut_after: int | None = None) -> Response:
    """A 200 streaming *pieces* as server-sent events, then ``[DONE]``.

    With *cut_after*, only that many events are sent before the
    connection is closed (no ``[DONE]``): a stream that breaks off.
    """
    events = [
        _event(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "created": 1_800_000_000,
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": piece},
                        "finish_reason": None,
                    }
                ],
            }
        )
        for piece in pieces
    ]
    events.append(_event("[DONE]"))
    return Response(
        200,
        chunks=events,
        headers={"Content-Type": "text/event-stream"},
        cut_after=cut_after,
    )


def provider_error(
    status: int,
    message: str,
    *,
    code: int = 20012,
    headers: dict[str, str] | None = None,
) -> Response:
    """An error answer with SiliconFlow's JSON body."""
    return Response(
        status,
        json={"code": code, "message": message, "data": None},
        headers=headers or {},
    )

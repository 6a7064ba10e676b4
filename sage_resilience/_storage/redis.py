"""Redis: the Lua twin of the state machine, pub/sub news, a refresh."""

from __future__ import annotations

import contextlib
import json
import threading
from typing import TYPE_CHECKING, Any, Final

from sage_resilience._storage.backend import _REFRESH, RETRY_INTERVAL, Backend
from sage_resilience._storage.machine import _LUA, Outcome, View
from sage_resilience._threads import start_daemon

if TYPE_CHECKING:
    from sage_resilience._storage.shared import _Op

#: Default socket timeouts for Redis (a URL query may override them).
REDIS_TIMEOUT: Final = 0.5


class RedisBackend(Backend):
    """Redis: Lua scripts, pub/sub news, a refresh every second."""

    name = "redis"

    def __init__(self, url: str, namespace: str) -> None:
        import redis  # noqa: PLC0415

        self._redis = redis
        self._url = url
        self._namespace = namespace
        self.channel = f"{namespace}:events"
        self._client: Any = None
        self._sha: str | None = None
        self._stopping = threading.Event()
        self._pubsub: Any = None
        super().__init__(url)
        self._start_listener()

    def _start_listener(self) -> None:
        self._listener = start_daemon(self._listen, "redis-pubsub")

    def _new_client(self) -> Any:
        from redis.backoff import NoBackoff  # noqa: PLC0415
        from redis.retry import Retry  # noqa: PLC0415

        kwargs: dict[str, Any] = {"retry": Retry(NoBackoff(), 0)}
        if "socket_timeout" not in self._url:
            kwargs["socket_timeout"] = REDIS_TIMEOUT
        if "socket_connect_timeout" not in self._url:
            kwargs["socket_connect_timeout"] = REDIS_TIMEOUT
        return self._redis.Redis.from_url(self._url, **kwargs)

    def keys(self, name: str) -> list[str]:
        """The circuit's hash and its probe leases."""
        base = f"{self._namespace}:breaker:{name}"
        return [base, f"{base}:probes"]

    def _connect(self) -> None:
        if self._client is None:
            self._client = self._new_client()

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _ping(self) -> None:
        self._client.ping()

    def _execute(self, ops: list[_Op]) -> list[Outcome]:
        self._connect()
        client = self._client
        if self._sha is None:
            self._sha = client.script_load(_LUA)
        try:
            replies = self._pipeline(client, ops)
        except self._redis.exceptions.NoScriptError:
            replies = [self._redis.exceptions.NoScriptError()]
        if any(_noscript(r) for r in replies):
            # The server lost its script cache (a restart): load it again.
            # No operation ran: a missing script fails before any write.
            self._sha = client.script_load(_LUA)
            replies = self._pipeline(client, ops)
        outcomes = []
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
            outcomes.append(
                Outcome(
                    View.parse(reply[3:]),
                    bool(reply[0]),
                    bool(reply[1]),
                    int(reply[2]),
                )
            )
        return outcomes

    def _pipeline(self, client: Any, ops: list[_Op]) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for op in ops:
            name = op.storage.breaker_name
            pipe.evalsha(
                self._sha,
                2,
                *self.keys(name),
                op.kind,
                op.now,
                self.channel,
                name,
                *op.args,
            )
        replies: list[Any] = pipe.execute(raise_on_error=False)
        return replies

    def _listen(self) -> None:
        """Pub/sub: turn other processes' transitions into news."""
        while not self._stopping.is_set():
            client = None
            try:
                client = self._new_client()
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                self._pubsub = pubsub
                pubsub.subscribe(self.channel)
                # Whatever was published while unsubscribed: re-read.
                self.submit(_REFRESH)
                while not self._stopping.is_set():
                    # Short waits so that close() is prompt; idle cost is
                    # a few wake-ups a second.
                    message = pubsub.get_message(timeout=0.25)
                    if message is None:
                        continue
                    with contextlib.suppress(ValueError, TypeError):
                        fields = json.loads(message["data"])
                        self.submit((str(fields[0]), View.parse(fields[1:])))
            except Exception:
                self._stopping.wait(RETRY_INTERVAL)
            finally:
                with contextlib.suppress(Exception):
                    if self._pubsub is not None:
                        self._pubsub.close()
                    if client is not None:
                        client.close()
                self._pubsub = None

    def _stop_extra(self) -> None:
        self._stopping.set()
        self._listener.join(timeout=3)

    def _forget_connection(self) -> None:
        self._client = None
        self._pubsub = None
        self._stopping = threading.Event()
        if not self.closed:
            self._start_listener()


def _noscript(reply: Any) -> bool:
    return isinstance(reply, Exception) and (
        type(reply).__name__ == "NoScriptError" or "NOSCRIPT" in str(reply)
    )

"""The ASGI app, driven through a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from sage_resilience import (
    CircuitOpenError,
    breaker_status,
    configure,
    policy,
)
from sage_resilience.asgi import app as env_app
from sage_resilience.asgi import create_app
from tests.support import need_binary
from tests.support.asgi_server import serving as serve_with_uvicorn

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

TOKEN = "t0ken-for-tests"

CONFIG = """\
version: 1
policies:
  db: {critical: true, failure_threshold: 2, recovery_timeout: 60}
  api: {failure_threshold: 2, recovery_timeout: 60}
"""


def serving(app: Any) -> contextlib.AbstractContextManager[str]:
    """Serve *app* (lifespan on) with uvicorn; yields its base URL."""
    return serve_with_uvicorn(app, lifespan="on")


@pytest.fixture(scope="module")
def token_url() -> Iterator[str]:
    """An app whose admin token is given to create_app()."""
    with serving(create_app(admin_token=TOKEN)) as url:
        yield url


@pytest.fixture(scope="module")
def env_url() -> Iterator[str]:
    """The module-level app (token from the environment)."""
    with serving(env_app) as url:
        yield url


@pytest.fixture
def client(token_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=token_url, trust_env=False) as c:
        yield c


@pytest.fixture
def env_client(env_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=env_url, trust_env=False) as c:
        yield c


@pytest.fixture
def configured(tmp_path: Path) -> Path:
    path = tmp_path / "resilience.yaml"
    path.write_text(CONFIG)
    configure(path)
    return path


def boom() -> None:
    raise ZeroDivisionError("boom")


def trip(name: str) -> None:
    """Open *name*'s circuit with real counted failures."""
    for _ in range(2):
        with pytest.raises(ZeroDivisionError):
            policy(name).call(boom)
    assert "open" == policy(name).state


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.usefixtures("configured")
class TestHealth:
    def test_ok(self, client: httpx.Client) -> None:
        """All closed: 200 and the health() document."""
        response = client.get("/health")
        assert 200 == response.status_code
        assert "application/json" == response.headers["content-type"]
        body = response.json()
        assert "ok" == body["status"]
        assert "linux" == body["platform"]
        assert ["api", "db"] == sorted(body["breakers"])

    def test_degraded_is_still_200(self, client: httpx.Client) -> None:
        """A non-critical open circuit: degraded, HTTP 200."""
        trip("api")
        response = client.get("/health")
        assert 200 == response.status_code
        assert "degraded" == response.json()["status"]

    def test_down_is_503(self, client: httpx.Client) -> None:
        """A critical open circuit: down, HTTP 503."""
        trip("db")
        response = client.get("/health")
        assert 503 == response.status_code
        body = response.json()
        assert "down" == body["status"]
        assert "open" == body["breakers"]["db"]["state"]

    def test_head(self, client: httpx.Client) -> None:
        """HEAD answers like GET without a body."""
        response = client.head("/health")
        assert 200 == response.status_code
        assert b"" == response.content


@pytest.mark.usefixtures("configured")
class TestBreakers:
    def test_all(self, client: httpx.Client) -> None:
        """GET /breakers is breaker_status()."""
        policy("api").call(lambda: None)
        response = client.get("/breakers")
        assert 200 == response.status_code
        body = response.json()
        assert ["api", "db"] == list(body)
        assert 1 == body["api"]["successes"]
        assert breaker_status()["api"]["calls"] == body["api"]["calls"]

    def test_one(self, client: httpx.Client) -> None:
        """GET /breakers/{name} is that policy's status entry."""
        trip("api")
        response = client.get("/breakers/api")
        assert 200 == response.status_code
        body = response.json()
        assert "api" == body["name"]
        assert "open" == body["state"]
        assert 2 == body["failures"]
        assert "ZeroDivisionError: boom" == body["last_failure"]

    def test_unknown(self, client: httpx.Client) -> None:
        """An unknown name is a 404 with a JSON error."""
        response = client.get("/breakers/nope")
        assert 404 == response.status_code
        assert {"error": "no such breaker"} == response.json()

    def test_follows_reload(
        self, client: httpx.Client, tmp_path: Path
    ) -> None:
        """A reloaded configuration is served at once."""
        path = tmp_path / "other.yaml"
        path.write_text("version: 1\npolicies:\n  cache: {}\n")
        configure(path)
        assert ["cache"] == list(client.get("/breakers").json())


@pytest.mark.usefixtures("configured")
class TestRouting:
    @pytest.mark.parametrize(
        "path", ["/", "/nope", "/health/", "/breakers/api/open/now"]
    )
    def test_unknown_route(self, client: httpx.Client, path: str) -> None:
        """Unknown routes answer 404 with a JSON error."""
        response = client.get(path)
        assert 404 == response.status_code
        assert {"error": "no such route"} == response.json()

    def test_unknown_action(self, client: httpx.Client) -> None:
        """Only open, close and reset are actions."""
        response = client.post("/breakers/api/explode", headers=bearer())
        assert 404 == response.status_code

    @pytest.mark.parametrize(
        ("method", "path", "allow"),
        [
            ("POST", "/health", "GET"),
            ("DELETE", "/breakers", "GET"),
            ("PUT", "/breakers/api", "GET"),
            ("POST", "/metrics", "GET"),
            ("GET", "/breakers/api/open", "POST"),
            ("GET", "/breakers/api/reset", "POST"),
        ],
    )
    def test_wrong_method(
        self, client: httpx.Client, method: str, path: str, allow: str
    ) -> None:
        """A known route with the wrong method: 405 with Allow."""
        response = client.request(method, path)
        assert 405 == response.status_code
        assert allow == response.headers["allow"]
        assert "error" in response.json()

    def test_wrong_method_changes_nothing(self, client: httpx.Client) -> None:
        """GET on a control route does not act."""
        client.get("/breakers/api/open", headers=bearer())
        assert "closed" == policy("api").state


@pytest.mark.usefixtures("configured")
class TestControlTokens:
    def test_disabled_without_token(
        self, env_client: httpx.Client, events: list[Any]
    ) -> None:
        """No token configured: every control answers 403."""
        for path in ("/breakers/api/open", "/breakers/nope/open"):
            response = env_client.post(path, headers=bearer())
            assert 403 == response.status_code
            assert "SAGE_RESILIENCE_ADMIN_TOKEN" in response.json()["error"]
        assert "closed" == policy("api").state

    def test_empty_env_token_is_no_token(
        self, env_client: httpx.Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An empty SAGE_RESILIENCE_ADMIN_TOKEN does not enable controls."""
        monkeypatch.setenv("SAGE_RESILIENCE_ADMIN_TOKEN", "")
        response = env_client.post(
            "/breakers/api/open", headers=bearer("anything")
        )
        assert 403 == response.status_code

    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Bearer {TOKEN}x"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": TOKEN},
            {"Authorization": "Bearer"},
        ],
    )
    @pytest.mark.parametrize("name", ["api", "nope"])
    def test_missing_or_wrong_token(
        self, client: httpx.Client, headers: dict[str, str], name: str
    ) -> None:
        """401 for a known or unknown breaker alike: names do not leak."""
        response = client.post(f"/breakers/{name}/open", headers=headers)
        assert 401 == response.status_code
        assert "Bearer" == response.headers["www-authenticate"]
        assert {"error": "missing or wrong bearer token"} == response.json()
        assert "closed" == policy("api").state

    def test_unknown_breaker_with_token(self, client: httpx.Client) -> None:
        """Right token, unknown breaker: 404."""
        response = client.post("/breakers/nope/open", headers=bearer())
        assert 404 == response.status_code
        assert {"error": "no such breaker"} == response.json()

    def test_env_token_read_per_request(
        self, env_client: httpx.Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The module-level app reads the env token at each request."""
        monkeypatch.setenv("SAGE_RESILIENCE_ADMIN_TOKEN", "from-env")
        response = env_client.post(
            "/breakers/api/open", headers=bearer("from-env")
        )
        assert 200 == response.status_code
        assert "open" == policy("api").state
        monkeypatch.setenv("SAGE_RESILIENCE_ADMIN_TOKEN", "rotated")
        response = env_client.post(
            "/breakers/api/close", headers=bearer("from-env")
        )
        assert 401 == response.status_code

    def test_argument_wins_over_env(
        self, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """create_app(admin_token=...) ignores the environment."""
        monkeypatch.setenv("SAGE_RESILIENCE_ADMIN_TOKEN", "from-env")
        response = client.post(
            "/breakers/api/open", headers=bearer("from-env")
        )
        assert 401 == response.status_code

    def test_token_never_logged(
        self, client: httpx.Client, events: list[Any]
    ) -> None:
        """Refused and accepted requests log no token."""
        client.post("/breakers/api/open", headers=bearer("wrong-guess"))
        client.post("/breakers/api/open", headers=bearer())
        assert ["operator_action_refused", "operator_action"] == [
            e["event"] for e in events if e["event"].startswith("operator")
        ]
        text = json.dumps(events, default=str)
        assert TOKEN not in text
        assert "wrong-guess" not in text


@pytest.mark.usefixtures("configured")
class TestControls:
    def test_open(self, client: httpx.Client, events: list[Any]) -> None:
        """open forces the circuit: the next call is refused, forced."""
        called = []
        response = client.post("/breakers/api/open", headers=bearer())
        assert 200 == response.status_code
        body = response.json()
        assert "open" == body["state"]
        assert body["forced"] is True
        with pytest.raises(CircuitOpenError):
            policy("api").call(called.append, 1)
        assert [] == called
        assert client.get("/breakers/api").json()["forced"] is True
        action = next(e for e in events if e["event"] == "operator_action")
        assert ("api", "open", "http") == (
            action["breaker"],
            action["action"],
            action["source"],
        )

    def test_forced_open_has_no_half_open(self, client: httpx.Client) -> None:
        """A forced circuit stays open past its recovery timeout."""
        client.post("/breakers/api/open", headers=bearer())
        gate = policy("api")._gate
        gate._clock = lambda: time.time() + 3600
        with pytest.raises(CircuitOpenError):
            policy("api").call(lambda: None)
        assert "open" == client.get("/breakers/api").json()["state"]

    def test_close(self, client: httpx.Client) -> None:
        """close ends a forced open; calls pass again."""
        client.post("/breakers/api/open", headers=bearer())
        response = client.post("/breakers/api/close", headers=bearer())
        assert 200 == response.status_code
        body = response.json()
        assert ("closed", False) == (body["state"], body["forced"])
        assert 7 == policy("api").call(lambda: 7)

    def test_reset(self, client: httpx.Client) -> None:
        """reset closes a tripped circuit and clears its counters."""
        trip("api")
        response = client.post("/breakers/api/reset", headers=bearer())
        assert 200 == response.status_code
        body = response.json()
        assert "closed" == body["state"]
        assert (0, 0, 0, None) == (
            body["failures"],
            body["failure_count"],
            body["calls"],
            body["last_failure"],
        )

    def test_health_follows_controls(self, client: httpx.Client) -> None:
        """Forcing a critical breaker open takes health down; close heals."""
        client.post("/breakers/db/open", headers=bearer())
        assert 503 == client.get("/health").status_code
        client.post("/breakers/db/close", headers=bearer())
        assert 200 == client.get("/health").status_code


@pytest.mark.usefixtures("configured")
class TestMetricsRoute:
    def test_exposition(self, client: httpx.Client) -> None:
        """GET /metrics is Prometheus text with every breaker."""
        trip("api")
        response = client.get("/metrics")
        assert 200 == response.status_code
        assert response.headers["content-type"].startswith("text/plain")
        families = {
            f.name: f for f in text_string_to_metric_families(response.text)
        }
        states = {
            (s.labels["breaker"], s.labels["state"]): s.value
            for s in families["sage_resilience_circuit_state"].samples
        }
        assert 1.0 == states["api", "open"]
        assert 0.0 == states["api", "closed"]
        assert 1.0 == states["db", "closed"]
        failures = {
            s.labels["breaker"]: s.value
            for s in families["sage_resilience_calls"].samples
            if s.labels["outcome"] == "failure"
        }
        assert {"api": 2.0, "db": 0.0} == failures

    def test_head(self, client: httpx.Client) -> None:
        """HEAD /metrics: the GET's status and headers, no body."""
        response = client.head("/metrics")
        assert 200 == response.status_code
        assert response.headers["content-type"].startswith("text/plain")
        assert b"" == response.content
        assert "no-store" == response.headers["cache-control"]

    def test_gzip(self, token_url: str) -> None:
        """Accept-Encoding: gzip gets a gzipped body; identity gets text."""
        with httpx.Client(base_url=token_url, trust_env=False) as raw:
            with raw.stream(
                "GET", "/metrics", headers={"Accept-Encoding": "gzip"}
            ) as response:
                body = b"".join(response.iter_raw())
            assert "gzip" == response.headers["content-encoding"]
            assert str(len(body)) == response.headers["content-length"]
            text = gzip.decompress(body).decode()
            assert "# TYPE sage_resilience_circuit_state gauge" in text
            plain = raw.get(
                "/metrics", headers={"Accept-Encoding": "identity"}
            )
        assert "content-encoding" not in plain.headers
        assert "sage_resilience_circuit_state" in plain.text
        assert "Accept, Accept-Encoding" == plain.headers["vary"]

    @pytest.mark.parametrize(
        "accept",
        [
            "application/openmetrics-text; version=1.0.0",
            # What a Prometheus 2.x server sends when it scrapes.
            (
                "application/openmetrics-text;version=1.0.0,"
                "application/openmetrics-text;version=0.0.1;q=0.75,"
                "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            ),
        ],
        ids=["openmetrics", "prometheus-server"],
    )
    def test_openmetrics(self, client: httpx.Client, accept: str) -> None:
        """Accept: application/openmetrics-text gets OpenMetrics."""
        trip("api")
        response = client.get("/metrics", headers={"Accept": accept})
        assert 200 == response.status_code
        kind = response.headers["content-type"]
        assert kind.startswith("application/openmetrics-text; version=1.0.0")
        assert response.text.endswith("# EOF\n")
        families = {
            f.name: f
            for f in openmetrics_families(response.text)
            if f.name.startswith("sage_resilience_")
        }
        assert "counter" == families["sage_resilience_calls"].type
        assert "histogram" == (
            families["sage_resilience_attempt_duration_seconds"].type
        )
        failures = {
            s.labels["breaker"]: s.value
            for s in families["sage_resilience_calls"].samples
            if s.name == "sage_resilience_calls_total"
            and s.labels["outcome"] == "failure"
        }
        assert {"api": 2.0, "db": 0.0} == failures

    def test_name_filter(self, client: httpx.Client) -> None:
        """?name[]=... restricts the exposition, as prometheus-client does."""
        response = client.get(
            "/metrics", params={"name[]": "sage_resilience_circuit_forced"}
        )
        names = {f.name for f in text_string_to_metric_families(response.text)}
        assert {"sage_resilience_circuit_forced"} == names

    def test_passes_promtool(self, client: httpx.Client) -> None:
        """promtool check metrics finds nothing to say about the scrape."""
        promtool = need_binary("promtool", "apt-get install prometheus")
        trip("db")
        policy("api").call(lambda: None)
        body = client.get("/metrics").content
        assert b"sage_resilience_consecutive_failures" in body
        checked = subprocess.run(
            [promtool, "check", "metrics"],
            input=body,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert (0, b"", b"") == (
            checked.returncode,
            checked.stdout,
            checked.stderr,
        )

    def test_latency_counted_before_the_first_scrape(
        self, tmp_path: Path
    ) -> None:
        """The app counts attempts from its creation, not its first scrape."""
        # The histogram is process-wide: a name no other test used.
        name = f"latency-{uuid.uuid4().hex[:12]}"
        path = tmp_path / "latency.yaml"
        path.write_text(f"version: 1\npolicies:\n  {name}: {{}}\n")
        configure(path)
        fresh = create_app()
        for _ in range(3):
            policy(name).call(lambda: None)
        with serving(fresh) as url, httpx.Client(trust_env=False) as c:
            text = c.get(f"{url}/metrics").text
        family = "sage_resilience_attempt_duration_seconds"
        counts = {
            s.labels["breaker"]: s.value
            for f in text_string_to_metric_families(text)
            if f.name == family
            for s in f.samples
            if s.name == f"{family}_count"
        }
        assert 3.0 == counts[name]

    def test_501_without_prometheus_client(
        self, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without prometheus-client, /metrics says how to get it."""
        monkeypatch.setitem(sys.modules, "prometheus_client", None)
        monkeypatch.delitem(sys.modules, "sage_resilience.metrics")
        response = client.get("/metrics")
        assert 501 == response.status_code
        assert "sage-resilience[metrics]" in response.json()["error"]


class TestProtocol:
    """The ASGI protocol itself, driven by hand (no server involved)."""

    async def drive(
        self, scope: dict[str, Any], *messages: dict[str, Any]
    ) -> list[dict[str, Any]]:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for message in messages:
            inbox.put_nowait(message)
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await asyncio.wait_for(
            create_app(admin_token=TOKEN)(scope, inbox.get, send), 5
        )
        return sent

    async def test_lifespan(self) -> None:
        """Startup and shutdown are acknowledged, then the app returns."""
        sent = await self.drive(
            {"type": "lifespan", "asgi": {"version": "3.0"}},
            {"type": "lifespan.startup"},
            {"type": "lifespan.shutdown"},
        )
        assert [
            {"type": "lifespan.startup.complete"},
            {"type": "lifespan.shutdown.complete"},
        ] == sent

    async def test_mounted_under_root_path(self, configured: Path) -> None:
        """Mounted at /resilience (Starlette keeps the full path)."""
        sent = await self.drive(
            {
                "type": "http",
                "method": "GET",
                "path": "/resilience/breakers/api",
                "root_path": "/resilience",
                "headers": [],
            },
            {"type": "http.request", "body": b""},
        )
        assert 200 == sent[0]["status"]
        assert "api" == json.loads(sent[1]["body"])["name"]

    async def test_metrics_without_headers(self, configured: Path) -> None:
        """A scope without headers gets the plain-text exposition."""
        sent = await self.drive(
            {"type": "http", "method": "GET", "path": "/metrics"},
            {"type": "http.request", "body": b""},
        )
        assert 200 == sent[0]["status"]
        headers = dict(sent[0]["headers"])
        assert headers[b"content-type"].startswith(b"text/plain")
        assert b"content-encoding" not in headers
        assert b"sage_resilience_circuit_state{" in sent[1]["body"]

    async def test_websocket_refused(self) -> None:
        """A websocket connection is closed, not accepted."""
        sent = await self.drive(
            {"type": "websocket", "path": "/health", "headers": []},
            {"type": "websocket.connect"},
        )
        assert "websocket.close" == sent[0]["type"]

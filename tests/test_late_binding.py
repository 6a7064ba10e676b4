"""Decorating before configuring: names resolve at the first call."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from sage_resilience import (
    CircuitOpenError,
    UnknownPolicyError,
    configure,
    policy,
)
from sage_resilience.asgi import create_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

CONFIG = """\
version: 1
policies:
  my_llm:
    failure_threshold: 2
    retry: {attempts: 1}
"""


def write(tmp_path: Path) -> Path:
    path = tmp_path / "app.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


class TestLateBinding:
    async def test_decorated_before_configure(self, tmp_path):
        """A name unknown at decoration is found once configured."""

        @policy("my_llm")
        async def complete() -> str:
            return "hi"

        configure(write(tmp_path))
        assert "hi" == await complete()
        assert 2 == policy("my_llm").config.failure_threshold

    def test_strict_once_configured(self, tmp_path):
        """After configure(), an unknown name raises at once."""
        configure(write(tmp_path))
        with pytest.raises(UnknownPolicyError):
            policy("not_there")

    async def test_unknown_at_first_call(self, tmp_path, monkeypatch):
        """A handle whose name never appears raises at its first call."""
        monkeypatch.setenv("SAGE_RESILIENCE_CONFIG", str(write(tmp_path)))

        @policy("never_configured")
        async def call() -> None:
            return None

        with pytest.raises(UnknownPolicyError) as info:
            await call()
        assert "known policies: my_llm" in str(info.value)

    async def test_handle_follows_the_registered_policy(self, tmp_path):
        """State read through an early handle is the policy's own."""
        handle = policy("my_llm")
        configure(write(tmp_path))

        async def fail() -> None:
            raise ConnectionError("down")

        for _ in range(2):
            with pytest.raises(ConnectionError):
                await handle.acall(fail)
        assert "open" == handle.state
        assert "open" == policy("my_llm").state
        with pytest.raises(CircuitOpenError):
            await policy("my_llm").acall(fail)


class TestFastAPIRecipe:
    def test_lifespan_configures_routes_decorated_at_import(self, tmp_path):
        """The recipe: configure in the lifespan, policy on a dependency."""
        path = write(tmp_path)
        calls = {"n": 0}

        @policy("my_llm")  # at import time, before any configuration
        async def ask_llm() -> str:
            calls["n"] += 1
            if calls["n"] > 1:
                raise ConnectionError("provider down")
            return "answer"

        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            configure(path)
            yield

        app = FastAPI(lifespan=lifespan)
        app.mount("/resilience", create_app())

        async def llm_answer() -> str:
            return await ask_llm()

        @app.get("/ask")
        async def ask(answer: str = Depends(llm_answer)) -> dict[str, str]:  # noqa: FAST002 - a local dependency: Annotated needs it at module level
            return {"answer": answer}

        with TestClient(app, raise_server_exceptions=False) as client:
            assert {"answer": "answer"} == client.get("/ask").json()
            assert "ok" == client.get("/resilience/health").json()["status"]
            assert 500 == client.get("/ask").status_code
            assert 500 == client.get("/ask").status_code
            health = client.get("/resilience/health").json()
            assert "degraded" == health["status"]
            assert "open" == health["breakers"]["my_llm"]["state"]
            assert 3 == calls["n"]
            assert 500 == client.get("/ask").status_code
            assert 3 == calls["n"]  # refused: the provider was not called

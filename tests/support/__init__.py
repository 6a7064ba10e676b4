"""Shared helpers for tests that need real services."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(what: str, how: str) -> None:
    """Fail in CI, skip locally: a test needs a service that is missing."""
    message = f"{what} is not available; {how}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: missing services are failures)")
    pytest.skip(message)


def need_binary(name: str, how: str) -> str:
    """Path of an executable, or fail (CI) / skip (locally)."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"the program {name!r}", how)
    assert path is not None
    return path

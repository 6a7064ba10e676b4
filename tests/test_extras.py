"""Every optional module names the extra to install when its library is
missing, at import, whatever the import path (one parametrised test).

Each case loads a fresh copy of the module's file with the libraries
blocked in ``sys.modules`` (an import of a blocked name raises
``ImportError``), so the installed packages stay untouched.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sage_resilience"

#: module file, libraries made missing, the extras the error must name.
CASES = [
    ("http.py", ("httpx", "httpx2"), ("http", "httpx2")),
    ("postgres.py", ("asyncpg",), ("postgres",)),
    ("openai.py", ("openai",), ("openai",)),
    ("metrics.py", ("prometheus_client",), ("metrics",)),
    ("otel.py", ("opentelemetry",), ("otel",)),
]


@pytest.mark.parametrize(
    ("filename", "missing", "extras"),
    CASES,
    ids=[case[0] for case in CASES],
)
def test_a_missing_library_names_its_extra(
    monkeypatch: pytest.MonkeyPatch,
    filename: str,
    missing: tuple[str, ...],
    extras: tuple[str, ...],
) -> None:
    for name in missing:
        monkeypatch.setitem(sys.modules, name, None)
    for name in list(sys.modules):
        if name.startswith(tuple(f"{m}." for m in missing)):
            monkeypatch.setitem(sys.modules, name, None)
    spec = importlib.util.spec_from_file_location(
        f"_probe_{filename[:-3]}", PACKAGE / filename
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.raises(ImportError) as failed:
        spec.loader.exec_module(module)
    message = str(failed.value)
    for extra in extras:
        assert f"sage-resilience[{extra}]" in message, message

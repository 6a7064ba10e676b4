"""Secrets never leave the library; redaction is bounded on any input."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sage_resilience._redact import (
    MAX_TEXT,
    REDACTED,
    is_secret_key,
    redact,
    redact_mapping,
)


class TestLeaks:
    @pytest.mark.parametrize(
        ("text", "secret"),
        [
            ("postgresql://sage:p@ss/word@db.local/sage", "p@ss/word"),
            ("postgresql://sage:s3cr3t@db/sage", "s3cr3t"),
            ("https://ghp_abcdefghijklmnopqrstuv12345@github.com/x", "ghp_"),
            ("https://api.example.com/v1?key=AIzaSyABC123&x=1", "AIzaSy"),
            ("GET /c?sv=1&sig=SIGNATURE123", "SIGNATURE123"),
            ("/o?X-Amz-Signature=abcdef0123&a=1", "abcdef0123"),
            ("access_token=tok123 more", "tok123"),
            ("client_secret: xyz789", "xyz789"),
            ("DB_PASSWORD=hunter2", "hunter2"),
            ("aws_secret_access_key=wJalrXUtnFEMI", "wJalrXUtnFEMI"),
            ("Authorization: Token abcdefgh12345678", "abcdefgh12345678"),
            ("Authorization: Bearer abcdefgh12345678", "abcdefgh12345678"),
            ("Incorrect API key provided: sk-proj-abcdefgh1234", "sk-proj"),
            ("key AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jV",
                "eyJzdWIiOiIxMjM0In0",
            ),
        ],
    )
    def test_secret_is_gone(self, text, secret):
        """Each credential format is replaced by ***."""
        shown = redact(text)
        assert secret not in shown
        assert REDACTED in shown

    def test_lists_and_nested_mappings(self):
        """Secrets inside lists and nested mappings of settings are hidden."""
        shown = redact_mapping(
            {
                "headers": [{"Authorization": "Bearer abcdefgh12345678"}],
                "urls": ["postgresql://a:b3cret@c/d"],
                "nested": {"client_secret": "x"},
            }
        )
        assert {
            "headers": [{"Authorization": REDACTED}],
            "urls": ["postgresql://a:***@c/d"],
            "nested": {"client_secret": REDACTED},
        } == shown


class TestNoOverRedaction:
    @pytest.mark.parametrize(
        "key", ["author", "oauth_scope", "password_env", "api_key_env", "host"]
    )
    def test_names_that_are_not_secrets(self, key):
        """Names merely containing auth, or ending in _env, are kept."""
        assert not is_secret_key(key)
        assert {key: "value"} == redact_mapping({key: "value"})

    @pytest.mark.parametrize(
        "key", ["DB_PASSWORD", "client_secret", "access_token", "apiKey"]
    )
    def test_secret_names(self, key):
        """Secret names are recognised whatever their case and separators."""
        assert is_secret_key(key)

    def test_ordinary_messages_are_kept(self):
        """A database message with 'Key (id)=' is not touched."""
        text = "duplicate key value: Key (id)=(1) already exists."
        assert text == redact(text)


BOUNDED = """\
import time
from sage_resilience._redact import redact
for text in ("a" * 100_000, "x://" + "b" * 100_000, "a://b:" * 20_000,
             "c" * 10_000_000):
    redact(text)
print("done")
"""


class TestBounded:
    def test_long_runs_take_linear_time(self):
        """100k letters and a 10 MB message finish at once (were 19 s+)."""
        done = subprocess.run(
            [sys.executable, "-c", BOUNDED],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        assert "done\n" == done.stdout

    def test_long_text_is_cut_first(self):
        """At most MAX_TEXT characters are redacted and shown."""
        shown = redact("z" * (MAX_TEXT * 3))
        assert MAX_TEXT + 3 == len(shown)

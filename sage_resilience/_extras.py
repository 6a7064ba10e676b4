"""The error an optional module raises when its library is not installed."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator


def missing_extra(module: str, package: str, extra: str) -> ImportError:
    """``module`` needs ``package``: say which extra installs it."""
    return ImportError(
        f"{module} needs the {package} package, which is not installed: "
        f"pip install 'sage-resilience[{extra}]'"
    )


@contextlib.contextmanager
def needs_extra(module: str, package: str, extra: str) -> Iterator[None]:
    """Imports of ``module``'s library: one that fails names the extra.

    The ``ImportError`` raised is :func:`missing_extra`'s, from the
    original one (exercised in tests/test_extras.py).
    """
    try:
        yield
    except ImportError as missing:
        raise missing_extra(module, package, extra) from missing

"""The error an optional module raises when its library is not installed."""

from __future__ import annotations


def missing_extra(module: str, package: str, extra: str) -> ImportError:
    """``module`` needs ``package``: say which extra installs it."""
    return ImportError(
        f"{module} needs the {package} package, which is not installed: "
        f"pip install 'sage-resilience[{extra}]'"
    )

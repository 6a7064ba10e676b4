"""Structured log analysis: ``sage-resilience logs summarize``.

Reads JSON-lines logs (structlog's ``JSONRenderer`` output, structlog with
``EventRenamer``, python-json-logger, ecs-logging, stdlib JSON formatters:
the event name under one of :data:`EVENT_KEYS`, the time under one of
:data:`TIME_KEYS`; mixed with any other lines of the application) and
answers "which dependency failed, when, for how long, why, and how many
calls did the breaker shed?". Logs can be large: reading streams, with
memory bounded by the number of breakers and transitions.

The work is split by step:

* :mod:`.read`: one source at a time (plain or gzip, stdin too), block by
  block, to events: runs of regular lines at once (:mod:`.bulk`), the
  others line by line (:mod:`.lines`); timestamps are read by
  :mod:`.times`.
* :mod:`.summary`: the merged events of every source, aggregated into a
  :class:`Summary` (trips, time open, causes, flapping, timeline).
* :mod:`.render`: the text table and the HTML page (inline SVG).

The command itself (``sage-resilience logs summarize``) is
:mod:`sage_resilience.cli.logs`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sage_resilience._logs import model
from sage_resilience._logs.model import *  # noqa: F403 - the result types (model.__all__)
from sage_resilience._logs.times import parse_time, parse_timestamp

if TYPE_CHECKING:
    from sage_resilience._logs.render import render_html, render_table
    from sage_resilience._logs.summary import normalise_cause, summarize

__all__ = [
    "normalise_cause",
    "parse_time",
    "parse_timestamp",
    "render_html",
    "render_table",
    "summarize",
]
__all__ += model.__all__

# Reading, aggregating and rendering load on first use, so that building
# the command line (which needs the model's names only) stays quick.
_LAZY = {
    "normalise_cause": "summary",
    "summarize": "summary",
    "render_html": "render",
    "render_table": "render",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    import importlib  # noqa: PLC0415

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value

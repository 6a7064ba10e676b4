"""Log analysis in Python: what ``sage-resilience logs summarize`` reports.

:func:`summarize` reads JSON-lines logs (plain or gzip streams, merged in
time order) and returns a :class:`Summary`: per breaker its trips, time
open, causes and flapping, and the timeline of every transition.
:func:`render_table` and :func:`render_html` turn it into the command's
text and HTML reports, and ``Summary.to_json()`` is its JSON one::

    from sage_resilience.logs import render_table, summarize

    with open("app.log", "rb") as log:
        summary = summarize([("app.log", log)], since="12h")
    print(render_table(summary))

The logs it reads, the shapes it recognises and the reports are described
in ``docs/logs.md``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from sage_resilience._logs.model import (
    BreakerSummary,
    KeysSeen,
    Segment,
    SkippedLine,
    Summary,
    Transition,
)
from sage_resilience._logs.render import render_html, render_table
from sage_resilience._logs.summary import summarize
from sage_resilience._logs.times import parse_time

__all__ = [
    "BreakerSummary",
    "KeysSeen",
    "Segment",
    "SkippedLine",
    "Summary",
    "Transition",
    "parse_time",
    "render_html",
    "render_table",
    "summarize",
]

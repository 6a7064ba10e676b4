"""Reports of a :class:`Summary`: a text table, and an HTML page with SVG.

Every text taken from the logs is escaped: for the terminal by
:func:`sage_resilience._terminal.printable`, for the page by HTML escaping.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from sage_resilience._logs.model import (
    _CLOSED,
    _HALF_OPEN,
    _OPEN,
    DEFAULT_HTML_OUTPUT,
)
from sage_resilience._logs.times import _EPOCH, _US, _iso
from sage_resilience._terminal import aligned, printable

if TYPE_CHECKING:
    from sage_resilience._logs.model import BreakerSummary, Summary

__all__ = ["DEFAULT_HTML_OUTPUT", "render_html", "render_table"]


def _duration(seconds: float) -> str:
    """``1h 02m 03s`` style, or ``450ms`` / ``12.5s`` for short ones."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s".replace(".0s", "s")
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"


def _period(summary: Summary) -> str:
    if summary.start_us is None or summary.end_us is None:
        return "no timestamps"
    length = (summary.end_us - summary.start_us) / _US
    return (
        f"{_iso(summary.start_us)} .. {_iso(summary.end_us)} "
        f"({_duration(length)})"
    )


# -- the text table ---------------------------------------------------------


def render_table(summary: Summary) -> str:
    """Plain-text report: one aligned row per breaker, causes, timeline.

    Args:
        summary: What :func:`summarize` returned.

    Returns:
        The report, ending with a newline. Control characters from the
        logs are shown escaped.

    .. versionadded:: 0.1.0
    """
    lines = _table_heading(summary)
    lines += _breaker_lines(summary)
    lines += _cause_lines(summary)
    lines += _timeline_lines(summary)
    lines += _skipped_lines(summary)
    return "\n".join(lines) + "\n"


def _table_heading(summary: Summary) -> list[str]:
    """Which files, over which period, how many lines."""
    files = ", ".join(printable(name) for name in summary.files)
    return [
        f"Log summary: {files}",
        f"  period:  {_period(summary)}",
        f"  lines:   {summary.lines:,} read, {summary.skipped:,} skipped",
        "",
    ]


_BREAKER_HEADER: Final = (
    "breaker",
    "trips",
    "open total",
    "longest",
    "final",
    "rejected",
    "retries",
    "exhausted",
    "flapping",
)


def _breaker_row(name: str, b: BreakerSummary) -> list[str]:
    return [
        name,
        str(b.trips),
        _duration(b.time_open_total_s),
        _duration(b.longest_open_s),
        b.final_state,
        f"{b.rejected:,}",
        f"{b.retries_scheduled:,}",
        f"{b.retries_exhausted:,}",
        "YES" if b.flapping else "no",
    ]


def _breaker_lines(summary: Summary) -> list[str]:
    """One row per breaker under a header."""
    if not summary.breakers:
        return ["No breaker events in this period."]
    rows = [list(_BREAKER_HEADER)]
    rows += [_breaker_row(name, b) for name, b in summary.breakers.items()]
    return aligned(rows, right={1, 2, 3, 5, 6, 7})


def _cause_lines(summary: Summary) -> list[str]:
    """The top causes of every breaker's trips (nothing without trips)."""
    rows = [
        ["", name, f"{cause.count}x", cause.cause]
        for name, b in summary.breakers.items()
        for cause in b.top_causes
    ]
    if not rows:
        return []
    return ["", "Top causes of trips", *aligned(rows, right={2})]


def _timeline_lines(summary: Summary) -> list[str]:
    """Every transition, in time order (nothing without transitions)."""
    if not summary.timeline:
        return []
    rows = [
        [
            "",
            t.time,
            t.breaker,
            f"{printable(t.old_state or '?')} -> {printable(t.new_state)}",
            f"rejected {t.rejected:,}" if t.rejected else "",
        ]
        for t in summary.timeline
    ]
    heading = f"Timeline ({len(summary.timeline)} transitions, UTC)"
    return ["", heading, *aligned(rows)]


def _skipped_lines(summary: Summary) -> list[str]:
    """The first skipped lines and why (nothing when none was skipped)."""
    if not summary.skipped:
        return []
    return [
        "",
        f"Skipped lines ({summary.skipped:,}; first ones):",
        *(
            f"  {printable(e.file)}:{e.line}: {printable(e.reason)}"
            for e in summary.skipped_examples
        ),
    ]


# -- the HTML page ----------------------------------------------------------


_STATE_CLASS = re.compile(r"[^a-z0-9-]")
# The HTML transitions table lists this many rows at most (the SVG and the
# JSON report show every transition).
_HTML_ROWS: Final = 5000
_STATE_COLOURS: Final = {
    _CLOSED: "#3fa34d",
    _HALF_OPEN: "#f0a202",
    _OPEN: "#d7263d",
}
_OTHER_COLOUR: Final = "#8a8f98"

_CSS: Final = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
margin:24px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
p.meta{color:#4c5566;margin:0 0 8px}
table{border-collapse:collapse;margin:4px 0}
th,td{padding:4px 10px;border-bottom:1px solid #e3e6eb;text-align:left;
vertical-align:top}
th{background:#f4f6f9;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.state-open,td.flapping{color:#b3001b;font-weight:600}
td.state-half-open{color:#a86b00;font-weight:600}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
font-size:12.5px}
svg.timeline{width:100%;height:auto;max-width:1200px;display:block}
svg text{font:12px system-ui,sans-serif;fill:#1d2330}
svg text.axis{fill:#4c5566;font-size:11px}
.band-closed{fill:#3fa34d}.band-open{fill:#d7263d}
.band-half-open{fill:#f0a202}.band-other{fill:#8a8f98}
details summary{cursor:pointer}
"""


def _e(text: object) -> str:
    """Escape log-derived text for HTML; ``/`` too, so no URL survives."""
    return html.escape(str(text), quote=True).replace("/", "&#47;")


def _state_class(state: str) -> str:
    cleaned = _STATE_CLASS.sub("", state.lower())
    return cleaned if cleaned in _STATE_COLOURS else "other"


_TICK_STEPS: Final = (
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
    172800,
    604800,
)


def _ticks(start: int, end: int, wanted: int = 8) -> list[int]:
    """Round tick times (µs) between *start* and *end*."""
    span = max(end - start, 1)
    step = next(
        (s * _US for s in _TICK_STEPS if span / (s * _US) <= wanted),
        _TICK_STEPS[-1] * _US * max(1, math.ceil(span / (604800 * _US * 8))),
    )
    first = -(-start // step) * step
    return list(range(first, end + 1, step))


def _tick_label(us: int, step_us: int, span_us: int) -> str:
    moment = _EPOCH + dt.timedelta(microseconds=us)
    if span_us > 2 * 86400 * _US:
        return moment.strftime("%m-%d %H:%M")
    if step_us < 60 * _US:
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%H:%M")


def _drawn_span(summary: Summary) -> tuple[int, int] | None:
    """The period the timeline shows: the log's, widened to every segment."""
    start = summary.start_us
    end = summary.end_us
    segments_all = [s for b in summary.breakers.values() for s in b.segments]
    if segments_all:
        low = min(s.start_us for s in segments_all)
        high = max(s.end_us for s in segments_all)
        start = low if start is None else min(start, low)
        end = high if end is None else max(end, high)
    if start is None or end is None or not summary.breakers:
        return None
    return start, end


@dataclass(frozen=True, slots=True)
class _Canvas:
    """Where the timeline's parts go, in SVG user units."""

    start: int  # the time at the left of the plot (µs)
    span: int  # the time across the plot (µs)
    rows: int  # one per breaker
    width: int = 1000
    gutter: int = 190  # the breaker names, left of the plot
    right: int = 16
    row_h: int = 30
    band_h: int = 20
    top: int = 40

    @property
    def plot(self) -> int:
        return self.width - self.gutter - self.right

    @property
    def axis_y(self) -> int:
        return self.top + self.rows * self.row_h + 4

    @property
    def height(self) -> int:
        return self.axis_y + 44

    def x_of(self, us: int) -> float:
        return self.gutter + self.plot * (us - self.start) / self.span


def _svg_timeline(summary: Summary) -> str:
    """One row of state bands per breaker on a shared time axis."""
    drawn = _drawn_span(summary)
    if drawn is None:
        return "<p>No state to draw.</p>"
    start, end = drawn
    canvas = _Canvas(
        start=start, span=max(end - start, _US), rows=len(summary.breakers)
    )
    parts = [
        (
            f'<svg class="timeline" viewBox="0 0 {canvas.width} '
            f'{canvas.height}" width="{canvas.width}" '
            f'height="{canvas.height}" role="img" '
            'aria-label="Circuit state per breaker over time">'
        ),
        *_svg_legend(canvas),
    ]
    for index, (name, b) in enumerate(summary.breakers.items()):
        parts += _svg_row(canvas, canvas.top + index * canvas.row_h, name, b)
    parts += _svg_axis(canvas, end)
    parts.append("</svg>")
    return "\n".join(parts)


def _svg_legend(canvas: _Canvas) -> list[str]:
    parts = ['<g class="legend">']
    legend_x = canvas.gutter
    for state, label in (
        (_CLOSED, "closed"),
        (_HALF_OPEN, "half-open"),
        (_OPEN, "open"),
    ):
        parts.append(
            f'<rect class="swatch swatch-{state}" x="{legend_x}" y="8" '
            f'width="14" height="14" fill="{_STATE_COLOURS[state]}"/>'
            f'<text x="{legend_x + 20}" y="20">{label}</text>'
        )
        legend_x += 110
    parts.append("</g>")
    return parts


def _svg_row(
    canvas: _Canvas, y: int, name: str, b: BreakerSummary
) -> list[str]:
    """A breaker's name and its state bands, at height *y*."""
    parts = [
        f'<g class="breaker-row" data-breaker="{_e(name)}">',
        (
            f'<text x="{canvas.gutter - 8}" y="{y + canvas.band_h - 5}" '
            f'text-anchor="end">{_e(name)}</text>'
        ),
    ]
    for segment in b.segments:
        x0 = canvas.x_of(segment.start_us)
        x1 = canvas.x_of(segment.end_us)
        w = max(x1 - x0, 0.75)
        css = _state_class(segment.state)
        fill = _STATE_COLOURS.get(segment.state, _OTHER_COLOUR)
        label = (
            f"{name}: {segment.state} from {_iso(segment.start_us)} "
            f"to {_iso(segment.end_us)} "
            f"({_duration((segment.end_us - segment.start_us) / _US)})"
        )
        parts.append(
            f'<rect class="band band-{css}" '
            f'data-state="{_e(segment.state)}"'
            f' x="{x0:.2f}" y="{y}" width="{w:.2f}" '
            f'height="{canvas.band_h}"'
            f' fill="{fill}"><title>{_e(label)}</title></rect>'
        )
    parts.append("</g>")
    return parts


def _svg_axis(canvas: _Canvas, end: int) -> list[str]:
    """The time axis under the rows: ticks, their labels, the day."""
    axis_y = canvas.axis_y
    gutter, plot = canvas.gutter, canvas.plot
    parts = [
        (
            f'<line class="axis" x1="{gutter}" y1="{axis_y}" '
            f'x2="{gutter + plot}" y2="{axis_y}" stroke="#4c5566"/>'
        )
    ]
    ticks = _ticks(canvas.start, end)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else canvas.span
    for tick in ticks:
        x = canvas.x_of(tick)
        parts.append(
            f'<line x1="{x:.2f}" y1="{axis_y}" x2="{x:.2f}" '
            f'y2="{axis_y + 5}" stroke="#4c5566"/>'
            f'<text class="axis tick" x="{x:.2f}" y="{axis_y + 18}" '
            f'text-anchor="middle">'
            f"{_tick_label(tick, step, canvas.span)}</text>"
        )
    day = (_EPOCH + dt.timedelta(microseconds=canvas.start)).strftime(
        "%Y-%m-%d"
    )
    parts.append(
        f'<text class="axis" x="{gutter + plot / 2:.0f}" '
        f'y="{axis_y + 38}" text-anchor="middle">'
        f"time (UTC), from {day}</text>"
    )
    return parts


def render_html(summary: Summary) -> str:
    """A self-contained HTML report (inline CSS and SVG, no scripts).

    The page loads nothing from anywhere: no scripts, stylesheets, fonts or
    images, and a Content-Security-Policy says so. Every text taken from
    the logs is escaped.

    Args:
        summary: What :func:`summarize` returned.

    Returns:
        The page.

    .. versionadded:: 0.1.0
    """
    out = _html_head(summary)
    out += [
        '<section id="timeline"><h2>State timeline</h2>',
        _svg_timeline(summary),
        "</section>",
    ]
    out += _html_breakers(summary)
    out += _html_causes(summary)
    out += _html_transitions(summary)
    out += _html_skipped(summary)
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _html_head(summary: Summary) -> list[str]:
    """The document's head, title and what was read."""
    return [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        (
            '<meta http-equiv="Content-Security-Policy" '
            "content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        ),
        "<title>Circuit breaker report</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<h1>Circuit breaker report</h1>",
        (
            f'<p class="meta">Period: {_e(_period(summary))}<br>'
            f"{summary.lines:,} lines read, {summary.skipped:,} skipped; "
            f"files: {_e(', '.join(summary.files))}</p>"
        ),
    ]


def _html_breakers(summary: Summary) -> list[str]:
    """The summary table: one row per breaker."""
    out = [
        '<section id="summary"><h2>Summary</h2>',
        (
            "<table><thead><tr><th>breaker</th><th>trips</th>"
            "<th>time open</th><th>longest open</th><th>final state</th>"
            "<th>rejected</th><th>retries</th><th>retries exhausted</th>"
            "<th>flapping</th></tr></thead><tbody>"
        ),
    ]
    out.extend(
        f"<tr><td><code>{_e(name)}</code></td>"
        f'<td class="num">{b.trips}</td>'
        f'<td class="num">{_e(_duration(b.time_open_total_s))}</td>'
        f'<td class="num">{_e(_duration(b.longest_open_s))}</td>'
        f'<td class="state-{_state_class(b.final_state)}">'
        f"{_e(b.final_state)}</td>"
        f'<td class="num">{b.rejected:,}</td>'
        f'<td class="num">{b.retries_scheduled:,}</td>'
        f'<td class="num">{b.retries_exhausted:,}</td>'
        f'<td class="{"flapping" if b.flapping else ""}">'
        f"{'yes' if b.flapping else 'no'}</td></tr>"
        for name, b in summary.breakers.items()
    )
    out.append("</tbody></table></section>")
    return out


def _html_causes(summary: Summary) -> list[str]:
    """The root causes of trips, per breaker."""
    out = ['<section id="causes"><h2>Root causes of trips</h2>']
    causes = [
        (name, c) for name, b in summary.breakers.items() for c in b.top_causes
    ]
    if causes:
        out.append(
            "<table><thead><tr><th>breaker</th><th>trips</th><th>cause</th>"
            "</tr></thead><tbody>"
        )
        out.extend(
            f"<tr><td><code>{_e(name)}</code></td>"
            f'<td class="num">{c.count}</td><td><code>{_e(c.cause)}</code>'
            "</td></tr>"
            for name, c in causes
        )
        out.append("</tbody></table>")
    else:
        out.append("<p>No trips.</p>")
    out.append("</section>")
    return out


def _html_transitions(summary: Summary) -> list[str]:
    """Every transition (the first _HTML_ROWS), in time order."""
    shown_note = ""
    if len(summary.timeline) > _HTML_ROWS:
        shown_note = (
            f"; the first {_HTML_ROWS:,} are listed (--format json has all)"
        )
    out = [
        (
            f'<section id="transitions"><h2>Transitions</h2><details open>'
            f"<summary>{len(summary.timeline):,} transitions (UTC)"
            f"{shown_note}</summary>"
            "<table><thead><tr><th>time</th><th>breaker</th><th>from</th>"
            "<th>to</th><th>rejected while open</th></tr></thead><tbody>"
        )
    ]
    out.extend(
        f"<tr><td><code>{t.time}</code></td><td><code>{_e(t.breaker)}</code>"
        f"</td><td>{_e(t.old_state or '?')}</td>"
        f'<td class="state-{_state_class(t.new_state)}">{_e(t.new_state)}</td>'
        f'<td class="num">{t.rejected or ""}</td></tr>'
        for t in summary.timeline[:_HTML_ROWS]
    )
    out.append("</tbody></table></details></section>")
    return out


def _html_skipped(summary: Summary) -> list[str]:
    """The first skipped lines (nothing when none was skipped)."""
    if not summary.skipped:
        return []
    out = [
        (
            f'<section id="skipped"><h2>Skipped lines</h2><p>'
            f"{summary.skipped:,} lines skipped; the first ones:</p><ul>"
        )
    ]
    out.extend(
        f"<li><code>{_e(e.file)}:{e.line}</code>: {_e(e.reason)}</li>"
        for e in summary.skipped_examples
    )
    out.append("</ul></section>")
    return out

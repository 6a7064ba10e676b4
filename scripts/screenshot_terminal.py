#!/usr/bin/env python3
"""Regenerate docs/terminal.png: ``sage-resilience demo --quick`` on a terminal.

Runs the demo with stdout and stderr on one pseudo-terminal (so the CLI
renders its events with structlog's console renderer, in colour), turns
the ANSI colours into HTML, and screenshots the page with headless
Chromium::

    .venv/bin/python scripts/screenshot_terminal.py [--output docs/terminal.png]

Needs the demo extra (httpx) and ``chromium`` on PATH (``apt-get install
chromium``). ``--html PATH`` keeps the intermediate page.
"""

from __future__ import annotations

import argparse
import fcntl
import html
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = 132

#: SGR codes to CSS: the palette of a dark terminal theme.
COLOURS = {
    30: "#3b4252",
    31: "#ff6b6b",
    32: "#8fd16a",
    33: "#f0c674",
    34: "#6cb6ff",
    35: "#d291e4",
    36: "#66d9e8",
    37: "#e6e6e6",
}
BRIGHT = {code + 60: colour for code, colour in COLOURS.items()}

SGR = re.compile(r"\x1b\[([0-9;]*)m")
OTHER_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def capture(argv: list[str]) -> str:
    """What *argv* writes to a terminal COLUMNS wide (stdout and stderr)."""
    master, slave = os.openpty()
    fcntl.ioctl(
        slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, COLUMNS, 0, 0)
    )
    env = {**os.environ, "COLUMNS": str(COLUMNS), "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    if process.wait() != 0:
        sys.exit(f"{' '.join(argv)} failed")
    return b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


class _Style:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.colour: str | None = None
        self.bold = False
        self.dim = False

    def apply(self, codes: str) -> None:
        for part in codes.split(";") if codes else ["0"]:
            code = int(part or 0)
            if code == 0:
                self.reset()
            elif code == 1:
                self.bold = True
            elif code == 2:
                self.dim = True
            elif code == 22:
                self.bold = self.dim = False
            elif code == 39:
                self.colour = None
            else:
                self.colour = COLOURS.get(code) or BRIGHT.get(code)

    def css(self) -> str:
        rules = []
        if self.colour:
            rules.append(f"color:{self.colour}")
        if self.bold:
            rules.append("font-weight:bold")
        if self.dim:
            rules.append("opacity:.6")
        return ";".join(rules)


def to_html(text: str) -> str:
    """ANSI-coloured text as HTML spans (other escapes dropped)."""
    style = _Style()
    out = []
    position = 0
    for match in SGR.finditer(text):
        out.append(_span(text[position : match.start()], style.css()))
        style.apply(match.group(1))
        position = match.end()
    out.append(_span(text[position:], style.css()))
    return OTHER_ESCAPE.sub("", "".join(out))


def _span(text: str, css: str) -> str:
    if not text:
        return ""
    escaped = html.escape(text)
    return f'<span style="{css}">{escaped}</span>' if css else escaped


def page(text: str, title: str) -> tuple[str, int]:
    """A terminal-looking HTML page, and its height in pixels."""
    plain = OTHER_ESCAPE.sub("", SGR.sub("", text))
    rows = sum(
        max(1, math.ceil(len(line) / COLUMNS)) for line in plain.splitlines()
    )
    line_height = 18
    height = rows * line_height + 90
    body = f"""<!doctype html>
<html><head><meta charset="utf-8"><style>
html, body {{ margin: 0; background: #1e2127; }}
.window {{ margin: 12px; border-radius: 8px; background: #282c34;
  box-shadow: 0 2px 10px #0008; overflow: hidden; }}
.bar {{ height: 28px; background: #3a3f4b; display: flex;
  align-items: center; padding: 0 10px; gap: 7px;
  font: 12px sans-serif; color: #c8ccd4; }}
.dot {{ width: 12px; height: 12px; border-radius: 50%; }}
.title {{ margin-left: 10px; }}
pre {{ margin: 0; padding: 12px 14px; color: #dcdfe4;
  font: 13px/{line_height}px "DejaVu Sans Mono", "Liberation Mono",
  monospace; white-space: pre-wrap; word-break: break-all;
  width: {COLUMNS}ch; }}
</style></head><body><div class="window">
<div class="bar"><span class="dot" style="background:#ff5f56"></span>
<span class="dot" style="background:#ffbd2e"></span>
<span class="dot" style="background:#27c93f"></span>
<span class="title">{html.escape(title)}</span></div>
<pre>{to_html(text)}</pre></div></body></html>
"""
    return body, height


def screenshot(
    chromium: str, page_path: Path, shot: Path, height: int
) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                f"--user-data-dir={profile}",
                f"--window-size={COLUMNS * 8 + 60},{height}",
                f"--screenshot={shot}",
                page_path.as_uri(),
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "docs" / "terminal.png",
        help="where to write the PNG (default docs/terminal.png)",
    )
    parser.add_argument("--html", type=Path, help="also keep the HTML page")
    parser.add_argument(
        "--chromium",
        default=shutil.which("chromium") or shutil.which("chromium-browser"),
        help="the Chromium binary (default: chromium on PATH)",
    )
    args = parser.parse_args()
    if not args.chromium:
        sys.exit("chromium not found: apt-get install chromium")
    command = "sage-resilience demo --quick"
    text = capture(
        [sys.executable, "-m", "sage_resilience.cli", *command.split()[1:]]
    )
    body, height = page(f"$ {command}\n{text}", command)
    with tempfile.TemporaryDirectory() as work:
        page_path = Path(work) / "terminal.html"
        page_path.write_text(body, encoding="utf-8")
        if args.html:
            args.html.write_text(body, encoding="utf-8")
        screenshot(args.chromium, page_path, args.output, height)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

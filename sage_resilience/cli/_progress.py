"""Progress on a terminal: one status line on stderr, redrawn in place.

Only on a terminal: when stderr is a pipe or a file nothing is written, so
logs and captured output never hold spinner frames or escape codes.
Whatever is printed while the line is shown should go through
:meth:`StatusLine.clear` first, so that the line does not mix with it.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import time
from typing import IO, TYPE_CHECKING, Any, Final

from sage_resilience._terminal import printable
from sage_resilience.cli._logging import is_terminal

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "FRAMES",
    "ReadProgress",
    "StatusLine",
    "counting_reader",
    "human_bytes",
]

#: The spinner's frames.
FRAMES: Final = "|/-\\"

#: Erase the line the cursor is on and go back to its start.
_ERASE: Final = "\r\x1b[K"


class StatusLine:
    """A line of progress on *stream*, drawn only when it is a terminal.

    Args:
        stream: Where to draw (stderr when None).
        delay: Seconds before the first drawing: quick work shows
            nothing.
        interval: Seconds between two drawings at least.
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        delay: float = 0.0,
        interval: float = 0.1,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = is_terminal(self.stream)
        self.started = time.monotonic()
        self._delay = delay
        self._interval = interval
        self._drawn_at = -1.0
        self._shown = False
        self._frame = 0

    def elapsed(self) -> float:
        """Seconds since the line was made."""
        return time.monotonic() - self.started

    def show(self, text: str, *, force: bool = False) -> None:
        """Draw *text* (cut to the terminal's width), if it is time to."""
        if not self.enabled:
            return
        now = time.monotonic()
        early = now - self.started < self._delay
        if not force and (early or now - self._drawn_at < self._interval):
            return
        self._drawn_at = now
        frame = FRAMES[self._frame % len(FRAMES)]
        self._frame += 1
        width = shutil.get_terminal_size((80, 24)).columns - 1
        line = printable(f"{frame} {text}")[: max(width, 10)]
        self._write(_ERASE + line)
        self._shown = True

    def clear(self) -> None:
        """Erase the line (before printing something else, and at the end)."""
        if self._shown:
            self._write(_ERASE)
            self._shown = False

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away
            self.enabled = False


def human_bytes(count: float) -> str:
    """``512 B``, ``1.5 KB``, ``12.0 MB``..."""
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return (
                f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
            )
        count /= 1024
    return f"{count:.1f} GB"  # pragma: no cover - the loop returns


class _Counter(io.RawIOBase):
    """A raw binary stream over another that reports each read's size."""

    def __init__(
        self, inner: IO[bytes], on_read: Callable[[int], None]
    ) -> None:
        super().__init__()
        self._inner = inner
        self._on_read = on_read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._inner.read(len(view))
        count = len(data)
        view[:count] = data
        self._on_read(count)
        return count

    def close(self) -> None:
        # The owner of the inner stream closes it.
        super().close()


def counting_reader(
    inner: IO[bytes], on_read: Callable[[int], None]
) -> IO[bytes]:
    """A buffered binary stream over *inner*, calling *on_read* per read.

    A reader of it sees an ordinary :class:`io.BufferedReader` (``read``,
    ``read1``, ``readline``, ``peek``, iteration; gzip can wrap it); each
    chunk taken from *inner* is reported with its size in bytes, so that a
    caller can show how far the reading went without the reader's help.
    """
    return io.BufferedReader(_Counter(inner, on_read), buffer_size=1 << 16)


class ReadProgress:
    """How much of the input was read, on a :class:`StatusLine`.

    :meth:`track` wraps each input stream with a byte counter
    (:func:`counting_reader`), so the reader needs no progress hook of
    its own. Off a terminal nothing is wrapped and nothing is drawn.

    Args:
        stream: Where to draw (stderr when None).
        delay: Seconds before the first drawing: small inputs show
            nothing.
    """

    def __init__(
        self, stream: IO[str] | None = None, delay: float = 0.5
    ) -> None:
        self.line = StatusLine(stream, delay=delay)
        self.read = 0
        self.total = 0  # bytes of the regular files among the inputs
        self.sized = True  # every input has a known size (no pipe)

    def track(self, inner: IO[bytes]) -> IO[bytes]:
        """*inner*, counted (as it is, off a terminal)."""
        if not self.line.enabled:
            return inner
        try:
            self.total += os.fstat(inner.fileno()).st_size
        except (OSError, ValueError, AttributeError):
            self.sized = False
        else:
            self.sized = self.sized and inner.seekable()
        return counting_reader(inner, self._count)

    def _count(self, count: int) -> None:
        self.read += count
        self.line.show(self.text())

    def text(self) -> str:
        """``reading: 42% of 1.2 GB (3.4s)`` (no percentage for a pipe)."""
        done = human_bytes(self.read)
        elapsed = f"({self.line.elapsed():.1f}s)"
        if self.sized and self.total:
            share = min(100, int(100 * self.read / self.total))
            return f"reading: {share}% of {human_bytes(self.total)} {elapsed}"
        return f"reading: {done} {elapsed}"

    def finish(self) -> None:
        """Erase the line."""
        self.line.clear()

"""The Python blocks of README.md and docs/*.md, parsed with Sybil and run.

Every block fenced ``python`` (or ``pycon``) is one example. It runs as
written, as a reader would paste it:

- top-level ``await`` and ``async with`` work (the block runs in an event
  loop of its own);
- a block made of ``>>>`` prompts is a doctest: its printed values are
  compared (``...`` matches anything, whitespace is normalised);
- each block has a namespace of its own: a block never relies on names a
  block above it defined;
- the dependencies are real servers on 127.0.0.1, reached the way a
  deployment reaches its own: through the environment (see
  :data:`ENVIRONMENT`), never through names slipped into the block;
- the working directory is an empty temporary one holding the files of
  :data:`FILES` (the log files the log analysis examples read);
- what the block leaves open (an asyncpg pool, an HTTP or OpenAI client,
  a SQLAlchemy engine) is closed after it, in its loop.

A block that cannot run says why in an HTML comment right above it, which
readers of the rendered page do not see::

    <!-- not-run: Sage's own module (a relative import) -->
    ```python
    from ..resilience import retry
    ```

The reason is required; the test suite counts these blocks per page, so
they cannot grow unnoticed. Signatures and shell sessions are not Python:
they are fenced ``text`` and ``console``.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import doctest
import inspect
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sybil import Document, Region
from sybil.parsers.markdown.lexers import (
    DirectiveInHTMLCommentLexer,
    FencedCodeBlockLexer,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

    from sybil import Example

__all__ = [
    "ENVIRONMENT",
    "FILES",
    "PYTHON_FENCES",
    "Block",
    "blocks",
    "run",
]

#: Fence languages that hold Python.
PYTHON_FENCES = ("python", "pycon")

#: Fence languages that look like Python but are not accepted: a block
#: fenced so would escape the test.
_OTHER_PYTHON_NAMES = re.compile(
    r"py|python[0-9]?|py3|pycon|ipython|pytb", re.IGNORECASE
)

#: The environment every block runs with; ``{api}`` is the base URL of the
#: OpenAI-compatible stand-in, ``{pg_port}`` and ``{pg_password}`` those of
#: the PostgreSQL server (database ``sage``, role ``sage``).
ENVIRONMENT = {
    "SILICONFLOW_API_KEY": "sk-docs-example-key",
    "SAGE_RESILIENCE__SILICONFLOW_API__SETTINGS__BASE_URL": "{api}/v1",
    "SAGE_RESILIENCE__VECTORIZER__SETTINGS__BASE_URL": "{api}/v1",
    "SAGE_RESILIENCE__DATABASE_CONNECTION__SETTINGS__HOST": "127.0.0.1",
    "SAGE_RESILIENCE__DATABASE_CONNECTION__SETTINGS__PORT": "{pg_port}",
    "PGPASSWORD": "{pg_password}",
    "DATABASE_URL": (
        "postgresql://sage:{pg_password}@127.0.0.1:{pg_port}/sage"
    ),
}

#: Files in the working directory of every block, and where they come
#: from (relative to ``tests/data``); ``.gz`` sources are unpacked unless
#: the name ends in ``.gz`` too.
FILES = {
    "app.log": "logs/last-night.log.gz",
    "app.log.1.gz": "logs/last-night.log.gz",
}

_NOT_RUN = "not-run"


@dataclass(frozen=True)
class Block:
    """One Python block of a page.

    Attributes:
        path: The page.
        line: The line of its opening fence (1-based).
        source: The code.
        not_run: The reason given in its ``not-run`` comment, or None
            when it runs.
    """

    path: str
    line: int
    source: str
    not_run: str | None

    @property
    def doctest(self) -> bool:
        """Whether the block is a session of ``>>>`` prompts."""
        return self.source.lstrip().startswith(">>>")


def _is_python(language: str, path: str) -> bool:
    """Whether a fence holds Python; a misspelt Python fence is an error."""
    if language in PYTHON_FENCES:
        return True
    if _OTHER_PYTHON_NAMES.fullmatch(language):
        msg = (
            f"{path}: a block fenced {language!r}; fence Python as one of "
            f"{PYTHON_FENCES}, or as text"
        )
        raise ValueError(msg)
    return False


def _line(document: Document, offset: int) -> int:
    return document.text.count("\n", 0, offset) + 1


class _Parser:
    """Sybil parser: one region per Python fence, with its marker."""

    def __init__(self) -> None:
        self.fences = FencedCodeBlockLexer(
            language=r"[^\s`]*",
            mapping={"language": "language", "source": "source"},
        )
        self.markers = DirectiveInHTMLCommentLexer(
            directive=_NOT_RUN, arguments=r"[^\n]*?"
        )

    def _reasons(self, document: Document) -> dict[int, str]:
        """Each marker's reason, by the offset where its comment ends."""
        reasons: dict[int, str] = {}
        for marker in self.markers(document):
            reason = marker.lexemes["arguments"].strip()
            if not reason:
                msg = (
                    f"{document.path}:{_line(document, marker.start)}: a "
                    f"{_NOT_RUN!r} comment needs a reason"
                )
                raise ValueError(msg)
            end = document.text.find("-->", marker.end) + len("-->")
            reasons[end] = reason
        return reasons

    def __call__(self, document: Document) -> Iterable[Region]:
        reasons = self._reasons(document)
        for fence in sorted(self.fences(document), key=lambda r: r.start):
            if not _is_python(fence.lexemes["language"], document.path):
                continue
            before = document.text[: fence.start].rstrip()
            yield Region(
                fence.start,
                fence.end,
                parsed=Block(
                    path=document.path,
                    line=_line(document, fence.start),
                    source=str(fence.lexemes["source"]),
                    not_run=reasons.pop(len(before), None),
                ),
            )
        if reasons:
            msg = (
                f"{document.path}:{_line(document, min(reasons))}: a "
                f"{_NOT_RUN!r} comment that is not right above a Python block"
            )
            raise ValueError(msg)


def blocks(path: Path) -> list[Block]:
    """The Python blocks of one page, in order."""
    document = Document.parse(str(path), _Parser())
    examples: Iterable[Example] = document.examples()
    return [example.parsed for example in examples]


# -- running ----------------------------------------------------------------


#: Libraries whose objects a block may leave open (pools, clients,
#: engines): closed after the block with their own method.
_CLOSABLE = ("asyncpg.", "httpx", "openai.", "sqlalchemy.")


async def _close(value: Any) -> None:
    """Close what a block left open, as its library wants it closed."""
    if isinstance(value, type) or not type(value).__module__.startswith(
        _CLOSABLE
    ):
        return
    for method in ("aclose", "close", "dispose"):
        closer = getattr(value, method, None)
        if callable(closer):
            result = closer()
            if inspect.isawaitable(result):
                await result
            return


async def _run_code(block: Block, namespace: dict[str, Any]) -> None:
    source = "\n" * (block.line) + block.source
    code = compile(
        source,
        block.path,
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        dont_inherit=True,
    )
    try:
        result = eval(code, namespace)
        if inspect.iscoroutine(result):
            await result
    finally:
        for value in list(namespace.values()):
            with contextlib.suppress(Exception):
                await _close(value)


def _run_doctest(block: Block, namespace: dict[str, Any]) -> None:
    parser = doctest.DocTestParser()
    test = parser.get_doctest(
        block.source,
        namespace,
        f"{block.path}:{block.line}",
        block.path,
        block.line,
    )
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    report: list[str] = []
    runner.run(test, out=report.append, clear_globs=False)
    if runner.failures:
        raise AssertionError("".join(report))


def run(
    block: Block, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Run one block as written, in a fresh namespace and event loop.

    Returns:
        The namespace the block leaves (what it defined and assigned).
    """
    namespace: dict[str, Any] = {"__name__": "__main__", **(extra or {})}
    if block.doctest:
        _run_doctest(block, namespace)
    else:
        asyncio.run(_run_code(block, namespace))
    return namespace

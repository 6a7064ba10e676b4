"""Griffe extension of the documentation site: the reST of the docstrings.

The docstrings are Google style with a few reStructuredText constructs
that Python's ``help()`` and IDEs show as they are; the site renders
Markdown, so before rendering:

- a role, ``:class:`~sage_resilience.Policy``` or ``:func:`diagnose```,
  becomes inline code (``Policy`` with ``~``, the whole name otherwise);
- a literal block (a paragraph ending in ``::`` and the indented lines
  after it) becomes a fenced code block, ``python`` when it parses as
  Python, ``text`` otherwise;
- an attribute without a docstring takes the ``#:`` comment lines right
  above it (as Sphinx's autodoc does);
- ``.. versionadded:: 0.1.0`` and ``.. versionchanged:: 0.2.0`` (with
  their indented text) become a paragraph of their own, "*Added in
  version 0.1.0.*" and "*Changed in version 0.2.0:* ...".
"""

from __future__ import annotations

import ast
import re
import textwrap
from typing import Any

import griffe

ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj|const):"
    r"`(?P<tilde>~?)(?P<target>[^`]+)`"
)
LITERAL = re.compile(
    r"(?P<lead>[^\n]*?)(?P<colons> ?::)\n\n(?P<body>(?:(?:[ \t]+[^\n]*)?\n)*"
    r"(?:[ \t]+[^\n]*))",
)

VERSION = re.compile(
    r"^(?P<indent>[ \t]*)\.\. (?P<kind>versionadded|versionchanged|"
    r"deprecated):: (?P<version>\S+)(?P<text>[^\n]*)"
    r"(?P<more>(?:\n(?P=indent)[ \t]+[^\n]*)*)",
    re.MULTILINE,
)
VERSION_LABELS = {
    "versionadded": "Added in version",
    "versionchanged": "Changed in version",
    "deprecated": "Deprecated since version",
}


def _version(match: re.Match[str]) -> str:
    label = VERSION_LABELS[match["kind"]]
    text = " ".join((match["text"] + match["more"]).split())
    said = (
        f"*{label} {match['version']}:* {text}"
        if text
        else (f"*{label} {match['version']}.*")
    )
    return f"\n{match['indent']}{said}\n"


def _role(match: re.Match[str]) -> str:
    target = match["target"]
    if match["tilde"]:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _language(code: str) -> str:
    try:
        compile(
            code,
            "<docstring>",
            "exec",
            flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        )
    except SyntaxError:
        return "text"
    return "python"


def _literal(match: re.Match[str]) -> str:
    lead = match["lead"]
    if lead.strip():
        # "Example::" -> "Example:"; a lone "::" disappears.
        lead += ":"
    code = textwrap.dedent(match["body"]).strip("\n")
    indent = re.match(r"[ \t]*", match["body"])
    # The fence keeps the block's place in a section (Args: ...).
    prefix = (
        " " * (len(indent[0]) - 4) if indent and len(indent[0]) > 4 else ""
    )
    fence = f"{prefix}```{_language(code)}\n"
    body = textwrap.indent(code, prefix) + "\n"
    return f"{lead}\n\n{fence}{body}{prefix}```"


def markdown(docstring: str) -> str:
    """The docstring with its roles and literal blocks as Markdown."""
    text = VERSION.sub(_version, ROLE.sub(_role, docstring))
    return LITERAL.sub(_literal, text)


class RestToMarkdown(griffe.Extension):
    """Rewrite every loaded docstring (see the module's docstring)."""

    def on_attribute_instance(
        self, *, attr: griffe.Attribute, **_: Any
    ) -> None:
        """Give an attribute its ``#:`` comment as its docstring."""
        if attr.docstring is not None or attr.lineno is None:
            return
        try:
            lines = attr.lines_collection[attr.filepath]  # type: ignore[index]
        except KeyError:
            return
        comment: list[str] = []
        index = attr.lineno - 2
        while index >= 0 and lines[index].lstrip().startswith("#:"):
            comment.insert(0, lines[index].lstrip()[2:].strip())
            index -= 1
        if comment:
            attr.docstring = griffe.Docstring(
                "\n".join(comment), lineno=index + 2, parent=attr
            )

    def on_object(self, *, obj: griffe.Object, **_: Any) -> None:
        """Rewrite one object's docstring in place."""
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)

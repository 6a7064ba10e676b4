"""YAML with line numbers, within limits that keep hostile input harmless.

:func:`_parse_yaml` reads one document with PyYAML's SafeLoader and keeps
the line of every key and list item. Duplicate keys, non-text keys, alias
bombs, deep nesting, ``!!binary`` and unreadable tagged values all become
a :class:`~sage_resilience.exceptions.ConfigError` with a line.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from sage_resilience._config.wording import _dotted, _Path, _show
from sage_resilience.exceptions import ConfigError

_MAX_NODES = 100_000  # guards against alias bombs ("billion laughs")
#: Deepest nesting of YAML collections (PyYAML composes recursively).
_MAX_DEPTH = 50
#: Largest configuration file or text, in bytes (characters for text).
MAX_CONFIG_BYTES = 1_000_000

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Empty:
    """The document holds no node at all (empty, or comments only)."""


_EMPTY = _Empty()


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that remembers the line of every key and list item.

    ``lines`` maps a path (keys and list indices) to its 1-based line;
    ``problems`` collects duplicate keys and non-text keys, which plain
    PyYAML accepts silently (the later duplicate wins).
    """

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self.lines: dict[_Path, int] = {}
        self.problems: list[ConfigError] = []
        self._active: set[int] = set()
        self._nodes = 0
        self._depth = 0

    def load_document(self) -> Any:
        """Compose the single document and build it, or ``_EMPTY``."""
        node = self.get_single_node()
        if node is None:
            return _EMPTY
        self.lines[()] = node.start_mark.line + 1
        return self._build(node, ())

    def compose_node(
        self, parent: yaml.Node | None, index: object
    ) -> yaml.Node | None:
        """Compose one node; refuse nesting deeper than ``_MAX_DEPTH``.

        PyYAML composes (and later constructs) recursively: 5000 nested
        brackets would end in a RecursionError, not a message.
        """
        if self._depth >= _MAX_DEPTH:
            event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
            mark = event.start_mark
            line = None if mark is None else mark.line + 1
            raise ConfigError(
                f"nested deeper than {_MAX_DEPTH} levels",
                path=self.source,
                line=line,
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)  # type: ignore[arg-type]
        finally:
            self._depth -= 1

    def _count(self, node: yaml.Node, path: _Path) -> None:
        self._nodes += 1
        if self._nodes > _MAX_NODES:
            raise ConfigError(
                f"the document is too large (over {_MAX_NODES} values once "
                "aliases are expanded)",
                path=self.source,
                line=node.start_mark.line + 1,
            )
        if id(node) in self._active:
            raise ConfigError(
                "recursive YAML alias",
                path=self.source,
                line=node.start_mark.line + 1,
                key=_dotted(path) or None,
            )

    def _charge(self, node: yaml.Node, path: _Path) -> None:
        """Count a tagged collection as if its aliases were expanded.

        PyYAML builds ``!!set``, ``!!omap``, ``!!pairs`` itself: counted
        first, an alias bomb under such a tag cannot escape the count.
        """
        self._count(node, path)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        if not children:
            return
        self._active.add(id(node))
        try:
            for child in children:
                self._charge(child, path)
        finally:
            self._active.discard(id(node))

    def _construct(self, node: yaml.Node, path: _Path) -> Any:
        """PyYAML's own construction, any failure a ConfigError."""
        if not isinstance(node, yaml.ScalarNode):
            self._charge(node, path)
        try:
            value = self.construct_object(node, deep=True)
        except yaml.MarkedYAMLError:
            raise
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise ConfigError(
                _unreadable(node, exc),
                path=self.source,
                line=node.start_mark.line + 1,
                key=_dotted(path) or None,
            ) from exc
        if isinstance(value, bytes):
            # Nothing reads bytes, and config show could not print them.
            raise ConfigError(
                "binary data (!!binary) is not accepted; write text",
                path=self.source,
                line=node.start_mark.line + 1,
                key=_dotted(path) or None,
            )
        return value

    def _build(self, node: yaml.Node, path: _Path) -> Any:
        self._count(node, path)
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG:
            self._active.add(id(node))
            try:
                return self._build_mapping(node, path)
            finally:
                self._active.discard(id(node))
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
            self._active.add(id(node))
            try:
                items = []
                for index, item in enumerate(node.value):
                    self.lines[(*path, index)] = item.start_mark.line + 1
                    items.append(self._build(item, (*path, index)))
                return items
            finally:
                self._active.discard(id(node))
        if not isinstance(node, yaml.ScalarNode):
            self._nodes -= 1  # counted again by _charge
        return self._construct(node, path)

    def _build_mapping(
        self, node: yaml.MappingNode, path: _Path
    ) -> dict[str, Any]:
        first: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self._construct(key_node, path)
            if not isinstance(key, str):
                continue
            line = key_node.start_mark.line + 1
            if key in first:
                self.problems.append(
                    ConfigError(
                        f"duplicate key {key!r} (first at line {first[key]})",
                        path=self.source,
                        line=line,
                        key=_dotted((*path, key)),
                    )
                )
            else:
                first[key] = line
        self.flatten_mapping(node)  # YAML merge keys (<<: *anchor)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._construct(key_node, path)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                self.problems.append(
                    ConfigError(
                        f"keys must be text (got {_show(key)}); quote it",
                        path=self.source,
                        line=line,
                        key=_dotted(path) or None,
                    )
                )
                continue
            self.lines[(*path, key)] = line
            result[key] = self._build(value_node, (*path, key))
        return result


_TAG_WORDS = {
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "true or false",
    "tag:yaml.org,2002:timestamp": "a date",
    "tag:yaml.org,2002:binary": "base64 data",
}


def _unreadable(node: yaml.Node, exc: Exception) -> str:
    """Why PyYAML could not build a value (``!!int abc``, 5000 digits)."""
    what = _TAG_WORDS.get(node.tag, f"a {node.tag.rpartition(':')[2]}")
    if isinstance(node, yaml.ScalarNode):
        digits = sum(c.isdigit() for c in node.value[:10_000])
        if "digits" in str(exc) and digits > sys.get_int_max_str_digits():
            return (
                f"an integer of {digits} digits is too long (at most "
                f"{sys.get_int_max_str_digits()})"
            )
        return f"cannot be read as {what} (got {_show(node.value)})"
    return f"cannot be read as {what}"


def _parse_yaml(
    text: str, source: str
) -> tuple[Any, dict[_Path, int], list[ConfigError]]:
    """Parse one YAML document keeping lines; syntax errors raise."""
    try:
        # The reader checks every character when it is built.
        loader = _LineLoader(text, source)
    except yaml.reader.ReaderError as exc:
        char = exc.character
        code = char if isinstance(char, int) else ord(char[:1] or "\0")
        raise ConfigError(
            f"invalid YAML: the control character U+{code:04X} is not "
            "allowed (escape it in a double-quoted string)",
            path=source,
            line=text.count("\n", 0, exc.position) + 1,
        ) from exc
    try:
        data = loader.load_document()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "not valid YAML"
        if exc.context and problem.startswith("but "):
            # "expected a single document in the stream, but found ..."
            problem = f"{exc.context}, {problem}"
        raise ConfigError(
            f"invalid YAML: {problem}",
            path=source,
            line=None if mark is None else mark.line + 1,
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", path=source) from exc
    finally:
        loader.dispose()
    return data, loader.lines, loader.problems

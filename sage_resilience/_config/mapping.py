"""A mapping in the YAML's shape, read as a parsed file would be.

``configure({"version": 1, "policies": {...}})`` hands the loader Python
data instead of text. :func:`_plain_mapping` copies it into the plain
``dict``/``list`` a YAML parse gives, with the same guards (text keys,
bounded nesting, no cycle), and gives every key the one line known for it:
the caller's line, or none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sage_resilience._config.safe_yaml import _MAX_DEPTH
from sage_resilience._config.wording import _dotted, _Path, _show
from sage_resilience.exceptions import ConfigError

#: How messages name a mapping whose caller is not known.
MAPPING_SOURCE = "<mapping>"


class _Copier:
    """Copies nested mappings and lists, noting what a file could not hold."""

    def __init__(self, source: str, line: int | None) -> None:
        self.source = source
        self.line = line
        self.lines: dict[_Path, int] = {}
        self.problems: list[ConfigError] = []
        self._active: set[int] = set()

    def error(self, where: _Path, problem: str) -> ConfigError:
        return ConfigError(
            problem,
            path=self.source,
            line=self.line,
            key=_dotted(where) or None,
        )

    def mark(self, where: _Path) -> None:
        if self.line is not None:
            self.lines[where] = self.line

    def copy(self, value: Any, where: _Path) -> Any:
        if not isinstance(value, Mapping | list | tuple):
            return value
        if len(where) >= _MAX_DEPTH:
            raise self.error(where, f"nested deeper than {_MAX_DEPTH} levels")
        if id(value) in self._active:
            raise self.error(where, "holds itself (a cycle)")
        self._active.add(id(value))
        try:
            if isinstance(value, Mapping):
                return self.mapping(value, where)
            items = []
            for index, item in enumerate(value):
                self.mark((*where, index))
                items.append(self.copy(item, (*where, index)))
            return items
        finally:
            self._active.discard(id(value))

    def mapping(
        self, value: Mapping[Any, Any], where: _Path
    ) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                self.problems.append(
                    self.error(where, f"keys must be text (got {_show(key)})")
                )
                continue
            self.mark((*where, key))
            result[key] = self.copy(item, (*where, key))
        return result


def _plain_mapping(
    data: object, source: str, line: int | None
) -> tuple[dict[str, Any], dict[_Path, int], list[ConfigError]]:
    """*data* as a parsed file: the copy, the lines, the problems found.

    Raises:
        ConfigError: *data* is not a mapping, holds itself or nests too
            deep (nothing more can be read).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"the configuration must be a mapping (got {_show(data)})",
            path=source,
            line=line,
        )
    copier = _Copier(source, line)
    copier.mark(())
    return copier.mapping(data, ()), copier.lines, copier.problems

"""The file's structure: the parsed YAML read into its sections.

:func:`_read_document` turns the text (:func:`_read_mapping` a mapping of
the same shape) into a :class:`_Document`: the
``storage:``, ``defaults:``, ``policies:`` and ``platforms:`` layers, each
with the origin of every value, and the structural problems found (unknown
or duplicate keys, a missing ``version``). The layers are validated and
merged by :mod:`.resolve`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sage_resilience._config.layers import _Layer, _Origin
from sage_resilience._config.mapping import _plain_mapping
from sage_resilience._config.models import PolicyConfig, StorageConfig
from sage_resilience._config.platforms import normalize_platform
from sage_resilience._config.safe_yaml import (
    _EMPTY,
    MAX_CONFIG_BYTES,
    _parse_yaml,
)
from sage_resilience._config.wording import _dotted, _Path, _show, _unknown_key
from sage_resilience.exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from sage_resilience._config.models import _Model

#: ``$schema`` is what editors write to find the JSON Schema: ignored.
_TOP_KEYS = (
    "version",
    "storage",
    "defaults",
    "policies",
    "platforms",
    "$schema",
)
_PLATFORM_KEYS = ("defaults", "policies", "storage")


@dataclass(slots=True)
class _Platform:
    key: str  # as written in the file (may be an alias such as macos)
    defaults: _Layer | None = None
    storage: _Layer | None = None
    policies: dict[str, _Layer] = field(default_factory=dict)


@dataclass(slots=True)
class _Document:
    source: str  # how messages name the file (or the mapping's caller)
    label: str | None = None  # the configuration's path, if not source
    storage: _Layer | None = None
    defaults: _Layer | None = None
    policies: dict[str, _Layer] = field(default_factory=dict)
    platforms: dict[str, _Platform] = field(default_factory=dict)
    errors: list[ConfigError] = field(default_factory=list)

    def layers(self) -> Iterable[tuple[type[_Model], _Layer]]:
        """Every layer of the file, with the model it is a part of."""
        yield from _section_layers(self)
        for section in self.platforms.values():
            yield from _section_layers(section)


def _section_layers(
    section: _Document | _Platform,
) -> Iterable[tuple[type[_Model], _Layer]]:
    """The layers of the top level or of one platform, with their models."""
    if section.storage is not None:
        yield StorageConfig, section.storage
    if section.defaults is not None:
        yield PolicyConfig, section.defaults
    for layer in section.policies.values():
        yield PolicyConfig, layer


class _Reader:
    """Turns the parsed YAML into a :class:`_Document`, noting problems."""

    def __init__(self, source: str, lines: dict[_Path, int]) -> None:
        self.source = source
        self.lines = lines
        self.errors: list[ConfigError] = []

    def error(self, where: _Path, problem: str) -> None:
        self.errors.append(
            ConfigError(
                problem,
                path=self.source,
                line=self.lines.get(where),
                key=_dotted(where) or None,
            )
        )

    def check_keys(
        self, mapping: Mapping[str, Any], where: _Path, valid: Iterable[str]
    ) -> None:
        allowed = tuple(valid)
        for key in mapping:
            if key not in allowed:
                self.error((*where, key), _unknown_key(key, allowed))

    def mapping(self, value: Any, where: _Path) -> dict[str, Any] | None:
        """A section's mapping; null reads as empty; anything else errs."""
        if value is None:
            return {}
        if isinstance(value, dict):
            return value
        self.error(where, f"must be a mapping (got {_show(value)})")
        return None

    def layer(self, value: Any, where: _Path) -> _Layer | None:
        data = self.mapping(value, where)
        if data is None:
            return None
        n = len(where)
        origins = {
            path[n:]: _Origin(self.source, line, path)
            for path, line in self.lines.items()
            if path[:n] == where
        }
        origins.setdefault((), _Origin(self.source, None, where))
        return _Layer(data, origins)

    def policies(self, value: Any, where: _Path) -> dict[str, _Layer]:
        out: dict[str, _Layer] = {}
        for name, body in (self.mapping(value, where) or {}).items():
            layer = self.layer(body, (*where, name))
            if layer is not None:
                out[name] = layer
        return out

    def document(self, data: dict[str, Any]) -> _Document:
        doc = _Document(self.source)
        self.check_keys(data, (), _TOP_KEYS)
        if "version" not in data:
            self.errors.insert(
                0,
                ConfigError(
                    "missing; the file must say 'version: 1'",
                    path=self.source,
                    key="version",
                ),
            )
        elif type(data["version"]) is not int or data["version"] != 1:
            self.error(
                ("version",),
                "must be 1, the only format this release reads "
                f"(got {_show(data['version'])})",
            )
        if "storage" in data:
            doc.storage = self.layer(data["storage"], ("storage",))
        if "defaults" in data:
            doc.defaults = self.layer(data["defaults"], ("defaults",))
        doc.policies = self.policies(data.get("policies"), ("policies",))
        platforms = self.mapping(data.get("platforms"), ("platforms",))
        for key, body in (platforms or {}).items():
            where: _Path = ("platforms", key)
            name = normalize_platform(key)
            if name in doc.platforms:
                first = doc.platforms[name].key
                line = self.lines.get(("platforms", first))
                self.error(
                    where,
                    f"duplicate platform {name!r} (first written as "
                    f"{first!r} at line {line})",
                )
                continue
            section = self.mapping(body, where)
            if section is None:
                continue
            self.check_keys(section, where, _PLATFORM_KEYS)
            doc.platforms[name] = _Platform(
                key=key,
                defaults=(
                    self.layer(section["defaults"], (*where, "defaults"))
                    if "defaults" in section
                    else None
                ),
                storage=(
                    self.layer(section["storage"], (*where, "storage"))
                    if "storage" in section
                    else None
                ),
                policies=self.policies(
                    section.get("policies"), (*where, "policies")
                ),
            )
        doc.errors = self.errors
        return doc


def _read_document(text: str, source: str) -> _Document:
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"too large ({len(text):,} characters); a configuration holds "
            f"at most {MAX_CONFIG_BYTES:,}",
            path=source,
        )
    data, lines, problems = _parse_yaml(text, source)
    if data is _EMPTY or data is None:
        raise ConfigError(
            "the file is empty; it needs at least 'version: 1'", path=source
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"the top level must be a mapping (got {_show(data)})",
            path=source,
            line=lines.get(()),
        )
    return _document_of(data, lines, problems, source)


def _read_mapping(
    data: object, source: str, line: int | None = None
) -> _Document:
    """A mapping in the YAML's shape read as a file; *line* for every key."""
    plain, lines, problems = _plain_mapping(data, source, line)
    doc = _document_of(plain, lines, problems, source)
    if line is not None:
        doc.label = f"{source}:{line}"
        doc.errors = [
            ConfigError(e.problem, path=e.path, line=line, key=e.key)
            if e.line is None
            else e
            for e in doc.errors
        ]
    return doc


def _document_of(
    data: dict[str, Any],
    lines: dict[_Path, int],
    problems: list[ConfigError],
    source: str,
) -> _Document:
    reader = _Reader(source, lines)
    doc = reader.document(data)
    doc.errors[:0] = problems
    return doc

"""Where values were written: origins, layers and their merge.

Every value of the merge remembers its :class:`_Origin` (a file line, or
an environment variable), so that a problem found after the merge still
names the place the operator wrote the bad value. A :class:`_Layer` is one
mapping of the merge (``defaults:``, a policy, a platform's policy, code,
environment); :func:`_merge` applies them in order, later wins.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sage_resilience._config.wording import _dotted, _Path
from sage_resilience.exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where a value was written: a file line, or an environment variable."""

    path: str  # the file as the caller named it, "<string>" or "<env>"
    line: int | None
    where: _Path  # YAML path in the file, or the config path for env
    variable: str | None = None  # the environment variable, if any

    def error(self, rest: _Path, problem: str) -> ConfigError:
        where = self.where + rest
        if self.variable is not None:
            text = f"{_dotted(where)}: {problem}" if where else problem
            return ConfigError(text, path=self.path, key=self.variable)
        return ConfigError(
            problem, path=self.path, line=self.line, key=_dotted(where) or None
        )


@dataclass(slots=True)
class _Layer:
    """One mapping of the merge, with the origin of every key and item.

    Origin paths are relative to the layer (a policy's root).
    """

    data: dict[str, Any]
    origins: dict[_Path, _Origin]


@dataclass(frozen=True, slots=True)
class Declaration:
    """Policy settings written in code (a decorator's arguments).

    ``settings`` has the YAML's shape (``{"retry": {"attempts": 3}}``);
    ``path`` and ``line`` say where the code declared them, for messages.
    """

    settings: Mapping[str, Any]
    path: str
    line: int | None = None

    @property
    def where(self) -> str:
        """``file:line`` of the declaration."""
        return self.path if self.line is None else f"{self.path}:{self.line}"

    def layer(self, name: str) -> _Layer:
        """The declaration as one layer of the merge."""
        origin = _Origin(self.path, self.line, ("policies", name))
        return _Layer(copy.deepcopy(dict(self.settings)), {(): origin})


def _lookup(
    origins: Mapping[_Path, _Origin], loc: _Path
) -> tuple[_Origin, _Path]:
    for n in range(len(loc), -1, -1):
        origin = origins.get(loc[:n])
        if origin is not None:
            return origin, loc[n:]
    msg = "every layer has a root origin"  # pragma: no cover
    raise AssertionError(msg)  # pragma: no cover


def _drop_below(origins: dict[_Path, _Origin], path: _Path) -> None:
    n = len(path)
    for key in [k for k in origins if k[:n] == path]:
        del origins[key]


def _merge_into(
    dst: dict[str, Any],
    src: Mapping[str, Any],
    path: _Path,
    src_origins: Mapping[_Path, _Origin],
    dst_origins: dict[_Path, _Origin],
) -> None:
    for key, value in src.items():
        here = (*path, key)
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            dst_origins[here] = src_origins.get(here, dst_origins[path])
            _merge_into(dst[key], value, here, src_origins, dst_origins)
            continue
        _drop_below(dst_origins, here)
        dst[key] = copy.deepcopy(value)
        n = len(here)
        dst_origins.update(
            {sub: o for sub, o in src_origins.items() if sub[:n] == here}
        )


def _merge(layers: Iterable[_Layer], root: _Origin) -> _Layer:
    merged = _Layer({}, {(): root})
    for layer in layers:
        _merge_into(merged.data, layer.data, (), layer.origins, merged.origins)
    return merged

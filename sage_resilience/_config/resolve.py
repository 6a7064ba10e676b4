"""Resolution: a document's layers merged, validated, into a configuration.

For each policy the layers are merged in order (built-ins < ``defaults:``
< code < ``policies.<name>`` < platform defaults < platform policy <
environment), then validated as a whole; any problem is collected, and
the first in file order is raised: nothing half-applied is returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sage_resilience._config.document import _Platform
from sage_resilience._config.env import _env_layer, _env_overrides
from sage_resilience._config.errors import _first, _validate
from sage_resilience._config.layers import _lookup, _merge, _Origin
from sage_resilience._config.models import (
    PolicyConfig,
    ResilienceConfig,
    StorageConfig,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sage_resilience._config.document import _Document
    from sage_resilience._config.env import _EnvOverride
    from sage_resilience._config.layers import Declaration, _Layer
    from sage_resilience.exceptions import ConfigError


@dataclass(frozen=True, slots=True)
class _Source:
    """What a loaded configuration was resolved from."""

    doc: _Document
    platform: str
    environ: Mapping[str, str]
    pending: dict[str, list[_EnvOverride]]
    storage: _Layer  # the merged storage layer, for messages

    def storage_error(self, problem: str) -> ConfigError:
        """*problem* about ``storage.backend``, where it was written."""
        origin, rest = _lookup(self.storage.origins, ("backend",))
        return origin.error(rest, problem)

    def resolve(
        self, declared: Mapping[str, Sequence[Declaration]]
    ) -> ResilienceConfig:
        """The configuration resolved again, *declared* included."""
        return _resolve(self.doc, self.platform, self.environ, declared)


def _policy_layers(
    doc: _Document,
    section: _Platform,
    name: str,
    declared: Sequence[Declaration],
) -> _Layer:
    """The file and code layers of policy *name*, merged in order.

    built-ins < ``defaults:`` < code < ``policies.<name>`` < platform
    defaults < platform policy (the environment comes after).
    """
    own = doc.policies.get(name)
    plat = section.policies.get(name)
    code = [d.layer(name) for d in declared]
    layers = [
        layer
        for layer in (doc.defaults, *code, own, section.defaults, plat)
        if layer is not None
    ]
    # Messages about the whole policy point at the file's entry first.
    top = own or plat or (code[0] if code else layers[0])
    return _merge(layers, top.origins[()])


def _resolve(
    doc: _Document,
    platform: str,
    environ: Mapping[str, str],
    declared: Mapping[str, Sequence[Declaration]] | None = None,
) -> ResilienceConfig:
    declared = declared or {}
    errors = list(doc.errors)
    for model, layer in doc.layers():
        _validate(model, layer, errors, partial=True)
    section = doc.platforms.get(platform, _Platform(key=platform))

    names = list(doc.policies)
    names += [n for n in section.policies if n not in doc.policies]
    names += [n for n in declared if n not in names]
    overrides, env_errors = _env_overrides(environ, names)
    errors += env_errors
    pending = {n: found for n, found in overrides.items() if n not in names}

    policies: dict[str, PolicyConfig] = {}
    for name in names:
        merged = _policy_layers(doc, section, name, declared.get(name, ()))
        if name in overrides:
            env = _env_layer(name, overrides[name], merged.data, errors)
            merged = _merge([merged, env], merged.origins[()])
        result = _validate(PolicyConfig, merged, errors)
        if result is not None:
            policies[name] = result

    storage_layers = [
        layer for layer in (doc.storage, section.storage) if layer is not None
    ]
    storage_root = (
        storage_layers[0].origins[()]
        if storage_layers
        else _Origin(doc.source, None, ("storage",))
    )
    storage_layer = _merge(storage_layers, storage_root)
    storage = _validate(StorageConfig, storage_layer, errors)

    if errors:
        raise _first(errors)
    config = ResilienceConfig(
        version=1,
        platform=platform,
        path=doc.label or doc.source,
        storage=storage,
        policies=policies,
    )
    config._source = _Source(
        doc, platform, dict(environ), pending, storage_layer
    )
    return config

"""Configuration: the models of a resolved policy, and the YAML loader.

The models are the single description of the YAML: validation, defaults and
the JSON Schema (``sage-resilience config schema``) all come from them.
Loading (line numbers, platform and environment merge) is built on them.

Merge order, later wins (mappings merge key by key, lists are replaced)::

    built-in model defaults
    < defaults
    < policies.<name>
    < platforms.<p>.defaults
    < platforms.<p>.policies.<name>
    < env SAGE_RESILIENCE__<POLICY>__<KEY>[__<SUBKEY>...]

Every problem becomes one :class:`~sage_resilience.exceptions.ConfigError`
naming the file, the line and the dotted key where the bad value was
written. Loading is all or nothing: the first problem in file order is
raised (environment problems come after the file's) and no half-applied
configuration is ever returned.

The work is split by step, each module importing only those above it:

* :mod:`.wording`: annotations walked, values quoted, messages worded.
* :mod:`.layers`: where every value was written; layers and their merge.
* :mod:`.errors`: pydantic errors turned into ``ConfigError`` at file:line:key.
* :mod:`.models`: the pydantic models and their defaults (a new key goes
  here).
* :mod:`.safe_yaml`: YAML parsed with line numbers, within size limits.
* :mod:`.platforms`: platform names, aliases, the running system.
* :mod:`.document`: the parsed file read into its sections (layers).
* :mod:`.env`: ``SAGE_RESILIENCE__<POLICY>__<KEY>`` overrides as a layer.
* :mod:`.resolve`: a document's layers merged and validated, per policy.
* :mod:`.loader`: files read safely; :func:`load_config` and friends.
* :mod:`.schema`: the JSON Schema and the dump of a configuration.
"""

from __future__ import annotations

from sage_resilience._config.env import ENV_PREFIX
from sage_resilience._config.layers import Declaration
from sage_resilience._config.loader import (
    CONFIG_ENV,
    default_config_path,
    load_config,
    load_config_text,
    self_tripping,
    validate_files,
)
from sage_resilience._config.models import (
    BackoffConfig,
    ChaosConfig,
    PolicyConfig,
    RecoveryBackoffConfig,
    ResilienceConfig,
    RetryConfig,
    StorageConfig,
    TripConfig,
)
from sage_resilience._config.platforms import (
    PLATFORM_ENV,
    PLATFORMS,
    detect_platform,
    normalize_platform,
)
from sage_resilience._config.safe_yaml import MAX_CONFIG_BYTES
from sage_resilience._config.schema import config_schema, dump_config

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "MAX_CONFIG_BYTES",
    "PLATFORMS",
    "PLATFORM_ENV",
    "BackoffConfig",
    "ChaosConfig",
    "Declaration",
    "PolicyConfig",
    "RecoveryBackoffConfig",
    "ResilienceConfig",
    "RetryConfig",
    "StorageConfig",
    "TripConfig",
    "config_schema",
    "default_config_path",
    "detect_platform",
    "dump_config",
    "load_config",
    "load_config_text",
    "normalize_platform",
    "self_tripping",
    "validate_files",
]

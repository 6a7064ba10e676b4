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
written. Loading is all or nothing: every problem is found, and one error
is raised carrying them all (``problems``, in file order, environment
problems after the file's), its message the first's; no half-applied
configuration is ever returned. A mapping in the YAML's shape
(``configure({...})``) is read like a file, named ``<mapping>`` or by its
caller's file:line.

The work is split by step, each module importing only those above it:

* :mod:`.wording`: annotations walked, values quoted, messages worded.
* :mod:`.layers`: where every value was written; layers and their merge.
* :mod:`.errors`: pydantic errors turned into ``ConfigError`` at file:line:key.
* :mod:`.models`: the pydantic models and their defaults (a new key goes
  here).
* :mod:`.safe_yaml`: YAML parsed with line numbers, within size limits.
* :mod:`.mapping`: a mapping given in code copied as a parsed file.
* :mod:`.platforms`: platform names, aliases, the running system.
* :mod:`.document`: the parsed file read into its sections (layers).
* :mod:`.env`: ``SAGE_RESILIENCE__<POLICY>__<KEY>`` overrides as a layer.
* :mod:`.resolve`: a document's layers merged and validated, per policy.
* :mod:`.loader`: files read safely, the file found when none is named;
  :func:`load_config` and friends; every platform checked.
* :mod:`.schema`: the JSON Schema and the dump of a configuration.
"""

from __future__ import annotations

from sage_resilience._config.env import ENV_PREFIX
from sage_resilience._config.layers import Declaration
from sage_resilience._config.loader import (
    CONFIG_ENV,
    LOCAL_CONFIG,
    default_config_path,
    find_config,
    load_config,
    load_config_mapping,
    load_config_text,
    self_tripping,
    validate_files,
)
from sage_resilience._config.mapping import MAPPING_SOURCE
from sage_resilience._config.models import (
    BACKEND_EXTRAS,
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
from sage_resilience._config.schema import (
    SCHEMA_URL,
    config_schema,
    dump_config,
    schema_text,
)

__all__ = [
    "BACKEND_EXTRAS",
    "CONFIG_ENV",
    "ENV_PREFIX",
    "LOCAL_CONFIG",
    "MAPPING_SOURCE",
    "MAX_CONFIG_BYTES",
    "PLATFORMS",
    "PLATFORM_ENV",
    "SCHEMA_URL",
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
    "find_config",
    "load_config",
    "load_config_mapping",
    "load_config_text",
    "normalize_platform",
    "schema_text",
    "self_tripping",
    "validate_files",
]

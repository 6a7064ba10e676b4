"""Platform names: the known three, their aliases, the running system."""

from __future__ import annotations

import platform as _platform

#: Environment variable naming the platform whose overrides apply.
PLATFORM_ENV = "SAGE_RESILIENCE_PLATFORM"
#: The platforms every configuration knows, whether or not it mentions them.
PLATFORMS = ("darwin", "linux", "windows")

_PLATFORM_ALIASES = {
    "macos": "darwin",
    "osx": "darwin",
    "win": "windows",
    "win32": "windows",
}
_SYSTEMS = {"Darwin": "darwin", "Linux": "linux", "Windows": "windows"}


def normalize_platform(name: str) -> str:
    """The canonical spelling of a platform name (``macos`` -> ``darwin``).

    Args:
        name: A platform name in any case; ``macos``/``osx`` and
            ``win32``/``win`` are aliases of ``darwin`` and ``windows``.

    Returns:
        The lower-cased, de-aliased name.

    .. versionadded:: 0.1.0
    """
    lowered = name.strip().lower()
    return _PLATFORM_ALIASES.get(lowered, lowered)


def detect_platform() -> str:
    """The platform this process runs on, as the YAML spells it.

    Returns:
        ``linux``, ``darwin`` or ``windows``; any other system's name
        lower-cased.

    .. versionadded:: 0.1.0
    """
    system = _platform.system()
    return _SYSTEMS.get(system) or normalize_platform(system) or "unknown"

"""Loading: the file read safely, resolved for a platform; file checks.

:func:`load_config` reads a regular UTF-8 file of at most 1 MB (never a
FIFO or a device), :func:`load_config_text` reads text and
:func:`load_config_mapping` a mapping of the same shape; each resolves it
for one platform (explicit, ``SAGE_RESILIENCE_PLATFORM`` or the running
system) and the environment. :func:`find_config` says which file is read
when none is named. :func:`validate_files` checks files for every platform
they mention.
"""

from __future__ import annotations

import importlib.resources
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sage_resilience._config.document import _read_document, _read_mapping
from sage_resilience._config.errors import _first, _identity
from sage_resilience._config.mapping import MAPPING_SOURCE
from sage_resilience._config.platforms import (
    PLATFORM_ENV,
    PLATFORMS,
    detect_platform,
    normalize_platform,
)
from sage_resilience._config.resolve import _resolve
from sage_resilience._config.safe_yaml import MAX_CONFIG_BYTES
from sage_resilience.exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from sage_resilience._config.document import _Document
    from sage_resilience._config.models import ResilienceConfig

#: Environment variable naming the configuration file.
CONFIG_ENV = "SAGE_RESILIENCE_CONFIG"
#: The file looked for in the current directory when none is named.
LOCAL_CONFIG = "resilience.yaml"


def _choose_platform(
    doc: _Document, explicit: str | None, environ: Mapping[str, str]
) -> str:
    if explicit is not None:
        raw, path, key = explicit, doc.source, None
    elif environ.get(PLATFORM_ENV, "").strip():
        raw, path, key = environ[PLATFORM_ENV], "<env>", PLATFORM_ENV
    else:
        return detect_platform()
    name = normalize_platform(raw)
    if name in PLATFORMS or name in doc.platforms:
        return name
    known = ", ".join(sorted({*PLATFORMS, *doc.platforms}))
    raise ConfigError(
        f"unknown platform {raw!r}; known platforms: {known}",
        path=path,
        key=key,
    )


_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_a_file(mode: int) -> str | None:
    """Why a file of *mode* is not read as a configuration, if it is not."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    kind = next((name for test, name in _FILE_KINDS if test(mode)), None)
    return f"is {kind or 'not a regular file'}, not a file"


def _too_large(size: int) -> str:
    return (
        f"too large ({size:,} bytes); a configuration file holds at most "
        f"{MAX_CONFIG_BYTES:,}"
    )


def _read_bytes(source: str) -> bytes:
    # Checked before reading: a FIFO would block for ever, /dev/zero would
    # fill the memory. The file is opened without blocking and checked
    # again, so nothing swapped in between is read either.
    try:
        problem = _not_a_file(Path(source).stat().st_mode)
        if problem is not None:
            raise ConfigError(problem, path=source)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(source, flags | getattr(os, "O_BINARY", 0))
    except FileNotFoundError as exc:
        raise ConfigError("no such file", path=source) from exc
    except OSError as exc:
        raise ConfigError(
            f"cannot read the file: {exc.strerror or exc}", path=source
        ) from exc
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        problem = _not_a_file(info.st_mode)
        if problem is not None:
            raise ConfigError(problem, path=source)
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(_too_large(info.st_size), path=source)
        try:
            data = file.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ConfigError(
                f"cannot read the file: {exc.strerror or exc}", path=source
            ) from exc
    if len(data) > MAX_CONFIG_BYTES:  # it grew while being read
        raise ConfigError(_too_large(len(data)), path=source)
    return data


def _read_text(source: str) -> str:
    """The text of a configuration file: a regular, UTF-8 file of 1 MB."""
    data = _read_bytes(source)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text (bad byte at offset {exc.start})",
            path=source,
            line=data.count(b"\n", 0, exc.start) + 1,
        ) from exc


def default_config_path() -> Path:
    """The shipped default configuration file.

    Returns:
        ``sage_resilience/_data/resilience.yaml`` inside an installed wheel,
        else ``config/resilience.yaml`` of the source tree (editable
        install).

    .. versionadded:: 0.1.0
    """
    packaged = importlib.resources.files("sage_resilience").joinpath(
        "_data", "resilience.yaml"
    )
    if packaged.is_file():
        return Path(str(packaged))
    root = Path(__file__).resolve().parents[2]
    return root / "config" / "resilience.yaml"


def find_config(
    environ: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """The file :func:`load_config` reads when given no path, and why.

    In order: the file named by env ``SAGE_RESILIENCE_CONFIG``, else
    ``resilience.yaml`` in the current directory, else the shipped
    default (:func:`default_config_path`).

    Returns:
        ``(path, why)``, *why* being ``"named by SAGE_RESILIENCE_CONFIG"``,
        ``"in the current directory"`` or ``"the shipped default"``.

    .. versionadded:: 0.1.0
    """
    env = os.environ if environ is None else environ
    named = env.get(CONFIG_ENV)
    if named:
        return named, f"named by {CONFIG_ENV}"
    if os.path.lexists(LOCAL_CONFIG):
        return LOCAL_CONFIG, "in the current directory"
    return str(default_config_path()), "the shipped default"


def load_config_text(
    text: str,
    *,
    source: str = "<string>",
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ResilienceConfig:
    """Load a configuration from YAML text (tests, hot reload).

    Args:
        text: The YAML document.
        source: How messages name the text (a file name, or ``<string>``).
        platform: Whose ``platforms:`` overrides apply; default: env
            ``SAGE_RESILIENCE_PLATFORM``, else the running system.
        environ: Where ``SAGE_RESILIENCE_*`` variables are read; default
            ``os.environ``. Pass ``{}`` to ignore the environment.

    Returns:
        The resolved configuration.

    Raises:
        ConfigError: Every problem (``problems``), the first in file order
            as the message; nothing is applied.

    .. versionadded:: 0.1.0
    """
    env = os.environ if environ is None else environ
    doc = _read_document(text, source)
    return _resolve(doc, _choose_platform(doc, platform, env), env)


def load_config_mapping(
    data: Mapping[str, Any],
    *,
    source: str = MAPPING_SOURCE,
    line: int | None = None,
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ResilienceConfig:
    """Load a configuration from a mapping in the YAML's shape.

    Validated exactly as a file (``version: 1`` included); ``platforms:``
    and the environment apply on top.

    Args:
        data: ``{"version": 1, "policies": {...}, ...}``; copied.
        source: How messages name it where a file would be named.
        line: The line messages give (the caller's), if any.
        platform: As for :func:`load_config_text`.
        environ: As for :func:`load_config_text`.

    Returns:
        The resolved configuration; its ``path`` is ``source:line``.

    Raises:
        ConfigError: Every problem (``problems``); nothing is applied.

    .. versionadded:: 0.1.0
    """
    env = os.environ if environ is None else environ
    doc = _read_mapping(data, source, line)
    return _resolve(doc, _choose_platform(doc, platform, env), env)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ResilienceConfig:
    """Load, merge and validate a configuration file.

    Args:
        path: The YAML file; default: :func:`find_config` (env
            ``SAGE_RESILIENCE_CONFIG``, else ``./resilience.yaml``, else
            the shipped default). Messages name it as given.
        platform: Whose ``platforms:`` overrides apply; default: env
            ``SAGE_RESILIENCE_PLATFORM``, else the running system
            (``linux``, ``darwin``, ``windows``). ``macos``/``osx`` and
            ``win32``/``win`` are aliases. A name given here must be one of
            those three or appear under ``platforms:``.
        environ: Where ``SAGE_RESILIENCE_*`` variables are read; default
            ``os.environ``.

    Returns:
        The resolved configuration: ``.platform`` (canonical name),
        ``.policies`` (name -> fully resolved :class:`PolicyConfig`),
        ``.storage`` and ``.path`` (the file read).

    Raises:
        ConfigError: The file cannot be read, or is invalid: every problem
            is in ``problems``, the first in file order is the message
            (``file:line: dotted.key: problem``); environment problems
            name the variable.

    .. versionadded:: 0.1.0
    """
    env = os.environ if environ is None else environ
    why = None
    if path is None:
        path, why = find_config(env)
    source = os.fspath(path)
    try:
        text = _read_text(source)
    except ConfigError as exc:
        if why is None:
            raise
        raise ConfigError(
            f"{exc.problem} ({why})", path=source, line=exc.line
        ) from exc
    return load_config_text(
        text, source=source, platform=platform, environ=env
    )


def _platform_problems(
    doc: _Document, platform: str, env: Mapping[str, str]
) -> list[ConfigError]:
    """Every problem of *doc* on *platform*, the storage's extra included."""
    try:
        _resolve(doc, platform, env).require_extras()
    except ConfigError as exc:
        problems = exc.problems
    else:
        return []
    for problem in problems:
        problem.problems = [problem]  # each stands alone until gathered
    return problems


def _on_platforms(
    error: ConfigError, platforms: list[str], total: int
) -> ConfigError:
    """*error*, saying on which platforms only it shows, if not all."""
    if len(platforms) == total or "platforms." in (error.key or ""):
        return error
    names = " and ".join(repr(name) for name in platforms)
    return ConfigError(
        f"{error.problem} (with the {names} platform overrides)",
        path=error.path,
        line=error.line,
        key=error.key,
    )


def _check_document(
    doc: _Document, env: Mapping[str, str]
) -> ConfigError | None:
    """Every problem of *doc* on any platform, each once, or None."""
    names = sorted({*PLATFORMS, *doc.platforms})
    found: dict[tuple[object, ...], tuple[ConfigError, list[str]]] = {}
    for name in names:
        for problem in _platform_problems(doc, name, env):
            found.setdefault(_identity(problem), (problem, []))[1].append(name)
    if not found:
        return None
    return _first(
        _on_platforms(error, platforms, len(names))
        for error, platforms in found.values()
    )


def validate_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    environ: Mapping[str, str] | None = None,
) -> list[tuple[str, ConfigError | None]]:
    """Validate files for every platform they mention, and the usual three.

    The storage backend's extra must be installed too (``redis``).

    Args:
        paths: The files to check.
        environ: Override variables to apply as well; default none, so the
            verdict is about the files alone.

    Returns:
        One ``(path, error or None)`` per file, in the order given; an
        error carries every problem of its file (``problems``), each
        once. A problem that shows on some platforms only says which.

    .. versionadded:: 0.1.0
    """
    env: Mapping[str, str] = {} if environ is None else environ
    results: list[tuple[str, ConfigError | None]] = []
    for path in paths:
        source = os.fspath(path)
        try:
            doc = _read_document(_read_text(source), source)
        except ConfigError as exc:
            results.append((source, exc))
            continue
        results.append((source, _check_document(doc, env)))
    return results


def self_tripping(config: ResilienceConfig) -> list[str]:
    """Policies where one call's attempts can open their own circuit.

    With ``retry.attempts >= failure_threshold`` a single caller retrying
    into a brief outage opens the circuit for every other caller.

    Returns:
        One message per such policy, naming the file and the key.
    """
    where = f"{config.path}: " if config.path else ""
    return [
        f"{where}policies.{name}.retry.attempts: {p.retry.attempts} >= "
        f"failure_threshold {p.failure_threshold} (platform "
        f"{config.platform}): one call's retries can open its own circuit "
        "for every caller; make failure_threshold larger than attempts"
        for name, p in sorted(config.policies.items())
        if p.retry.attempts > 1 and p.retry.attempts >= p.failure_threshold
    ]

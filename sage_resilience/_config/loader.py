"""Loading: the file read safely, resolved for a platform; file checks.

:func:`load_config` reads a regular UTF-8 file of at most 1 MB (never a
FIFO or a device), :func:`load_config_text` reads text; both resolve it
for one platform (explicit, ``SAGE_RESILIENCE_PLATFORM`` or the running
system) and the environment. :func:`validate_files` checks files for every
platform they mention.
"""

from __future__ import annotations

import importlib.resources
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from sage_resilience._config.document import _read_document
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
        ConfigError: The first problem in file order; nothing is applied.

    .. versionadded:: 0.1.0
    """
    env = os.environ if environ is None else environ
    doc = _read_document(text, source)
    return _resolve(doc, _choose_platform(doc, platform, env), env)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ResilienceConfig:
    """Load, merge and validate a configuration file.

    Args:
        path: The YAML file; default: env ``SAGE_RESILIENCE_CONFIG``, else
            :func:`default_config_path`. Messages name it as given.
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
        ``.storage`` and ``.path``.

    Raises:
        ConfigError: The file cannot be read, or the first problem in file
            order (``file:line: dotted.key: problem``); environment
            problems name the variable.

    .. versionadded:: 0.1.0
    """
    env = os.environ if environ is None else environ
    from_env = path is None and bool(env.get(CONFIG_ENV))
    if path is None:
        path = env.get(CONFIG_ENV) or default_config_path()
    source = os.fspath(path)
    try:
        text = _read_text(source)
    except ConfigError as exc:
        if not from_env:
            raise
        raise ConfigError(
            f"{exc.problem} (named by {CONFIG_ENV})", path=source
        ) from exc
    return load_config_text(
        text, source=source, platform=platform, environ=env
    )


def validate_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    environ: Mapping[str, str] | None = None,
) -> list[tuple[str, ConfigError | None]]:
    """Validate files for every platform they mention, and the usual three.

    Args:
        paths: The files to check.
        environ: Override variables to apply as well; default none, so the
            verdict is about the files alone.

    Returns:
        One ``(path, error or None)`` per file, in the order given. A
        problem that shows on one platform only says which.

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
        failures: list[tuple[str, ConfigError]] = []
        names = sorted({*PLATFORMS, *doc.platforms})
        for name in names:
            try:
                _resolve(doc, name, env)
            except ConfigError as exc:
                failures.append((name, exc))
        if not failures:
            results.append((source, None))
            continue
        name, error = failures[0]
        if len(failures) < len(names) and "platforms." not in (
            error.key or ""
        ):
            error = ConfigError(
                f"{error.problem} (with the {name!r} platform overrides)",
                path=error.path,
                line=error.line,
                key=error.key,
            )
        results.append((source, error))
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

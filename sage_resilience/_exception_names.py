"""Exception classes named in the YAML, resolved without importing.

``ignore_exceptions`` / ``record_exceptions`` name classes by dotted path.
Importing a module to find one would run arbitrary code (``this.X`` prints
to stdout), so nothing is imported: a class whose module is already
imported is used as it is, any other gets a stand-in that recognises it
once its module is imported. Both the configuration loader (to report a
bad name with file:line:key) and the classifier use this module.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from typing import cast

from sage_resilience.exceptions import ConfigError

__all__ = ["lookup_exception", "resolve_exception_names"]


class _ByName(type):
    """Metaclass of a stand-in for a class whose module is not imported.

    The YAML may name ``asyncpg.exceptions.UniqueViolationError`` before
    the application imports asyncpg; importing it here would run arbitrary
    code (``this.X`` prints to stdout). The stand-in answers ``isinstance``
    (not ``except``): by the real class once its module is imported, by the
    dotted name of the instance's classes until then.
    """

    dotted: str
    module_name: str
    attr: str

    def real(cls) -> type[BaseException] | None:
        """The named class, once its module is imported (never imports)."""
        if cls.module_name not in sys.modules:
            return None
        found, _ = lookup_exception(cls.dotted)
        return found

    def __instancecheck__(cls, instance: object) -> bool:
        return cls.__subclasscheck__(type(instance))

    def __subclasscheck__(cls, subclass: type) -> bool:
        real = cls.real()
        if real is not None:
            return issubclass(subclass, real)
        return any(
            f"{k.__module__}.{k.__qualname__}" == cls.dotted
            for k in getattr(subclass, "__mro__", ())
        )


@functools.lru_cache(maxsize=256)
def _stand_in(dotted: str) -> type[BaseException]:
    module_name, _, attr = dotted.rpartition(".")
    made = _ByName(f"<{dotted}>", (BaseException,), {})
    made.dotted, made.module_name, made.attr = dotted, module_name, attr
    return cast("type[BaseException]", made)


def lookup_exception(
    dotted: str,
) -> tuple[type[BaseException] | None, str | None]:
    """The exception class a dotted name denotes, without importing.

    Returns:
        ``(class, None)`` when its module is already imported (builtins
        always are); ``(None, None)`` when the module is not imported yet
        but could be; ``(None, problem)`` when the name cannot denote an
        exception: no such top-level module, no such attribute of an
        imported module, or not an exception class.
    """
    module_name, _, attr = dotted.rpartition(".")
    module_name = module_name or "builtins"
    module = sys.modules.get(module_name)
    if module is None:
        top = module_name.partition(".")[0]
        try:
            # A top-level name is looked up on sys.path without running
            # any of its code.
            known = top in sys.modules or (
                importlib.util.find_spec(top) is not None
            )
        except (ImportError, ValueError):
            known = False
        if not known:
            return None, f"cannot import {dotted!r}: no module named {top!r}"
        return None, None
    try:
        found = getattr(module, attr)
    except AttributeError:
        return (
            None,
            f"cannot import {dotted!r}: {module_name!r} has no {attr!r}",
        )
    except Exception as exc:  # a module's own __getattr__ failed
        return None, f"cannot import {dotted!r} ({type(exc).__name__})"
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        return None, f"{dotted!r} is not an exception class"
    return found, None


def resolve_exception_names(
    names: tuple[str, ...], *, key: str
) -> tuple[type[BaseException], ...]:
    """The exception classes named in the YAML, for ``isinstance`` checks.

    No module is ever imported: a name whose module the process has not
    imported gets a stand-in (see :class:`_ByName`) that recognises the
    class once the module is imported, and its instances by name before.

    Raises:
        ConfigError: A name cannot denote an exception class (no such
            top-level module, no such attribute, not an exception).
    """
    resolved: list[type[BaseException]] = []
    for index, dotted in enumerate(names):
        found, problem = lookup_exception(dotted)
        if problem is not None:
            raise ConfigError(problem, key=f"{key}[{index}]")
        resolved.append(found if found is not None else _stand_in(dotted))
    return tuple(resolved)

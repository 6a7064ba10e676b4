"""``sage-resilience doctor``: check every configured dependency for real.

The checks are :func:`sage_resilience._diagnosis.doctor.run_doctor`'s;
this module reads the arguments, runs the checks of each dependency at
once (one ``run_doctor`` per distinct dependency) and prints each finding
as soon as it is known: in the order the checks finish on a terminal, in
configuration order otherwise. While checks are pending, a spinner with
the elapsed time and the dependencies still awaited is drawn on stderr,
on a terminal only. Exit codes: 0 every finding ``ok``, 1 a problem found
or an invalid configuration, 2 usage.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from sage_resilience._redact import redact
from sage_resilience._terminal import printable
from sage_resilience.cli._logging import is_terminal
from sage_resilience.cli._options import (
    add_config,
    add_format,
    add_platform,
    add_timeout,
    add_url,
    error,
    one_line_errors,
    postgres_dsn,
)
from sage_resilience.cli._progress import StatusLine

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from sage_resilience._config import ResilienceConfig
    from sage_resilience._diagnosis.doctor import Finding

__all__ = ["add_doctor_arguments", "doctor_command"]

_PROG = "sage-resilience doctor"


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``doctor`` options to *parser* (the CLI's subparser).

    A bad value makes *parser* exit 2 with one line.

    .. versionadded:: 0.1.0
    """
    one_line_errors(parser)
    add_config(parser)
    add_platform(parser)
    parser.add_argument(
        "--dsn",
        metavar="DSN",
        type=postgres_dsn,
        help="PostgreSQL URL for every postgres policy (password: from "
        "the URL or env PGPASSWORD)",
    )
    add_url(parser, "base URL for every http policy")
    add_format(parser, "the findings as a JSON list on stdout")
    add_timeout(parser, "time allowed to each connection and request")


def doctor_command(args: argparse.Namespace) -> int:
    """Run ``sage-resilience doctor``; return the exit code.

    One line per finding on stdout (``policy: cause - explanation /
    fix``, control characters escaped), or with ``--format json`` (or
    ``--json``) a JSON list of ``{policy, cause, explanation, fix}`` on
    stdout alone. Problems with
    the configuration go to stderr.

    Returns:
        0 when every finding is ``ok``, 1 when any is not or the
        configuration is invalid.

    .. versionadded:: 0.1.0
    """
    import asyncio  # noqa: PLC0415 - not needed for --help, --version

    from sage_resilience._config import load_config  # noqa: PLC0415
    from sage_resilience.exceptions import ConfigError  # noqa: PLC0415

    try:
        config = load_config(args.config, platform=args.platform)
    except ConfigError as exc:
        error(_PROG, redact(str(exc)))
        return 1
    text = args.format != "json"
    findings = asyncio.run(
        _checks(
            config,
            args,
            show=_print_finding if text else None,
            in_order=not is_terminal(sys.stdout),
        )
    )
    if not text:
        print(json.dumps([f.as_dict() for f in findings], indent=2))
    problems = sum(not finding.ok for finding in findings)
    if not findings:
        error(_PROG, "no policy has a kind to check")
    else:
        error(_PROG, f"{len(findings)} checked, {problems} problem(s)")
    return 1 if problems else 0


def _print_finding(finding: Finding) -> None:
    print(printable(finding.line()), flush=True)


def _groups(
    config: ResilienceConfig, dsn: str | None, url: str | None
) -> list[list[str]]:
    """The policies with a ``kind``, those of one dependency together.

    Policies with the same kind and settings (or all ``postgres`` ones
    under ``--dsn``) are one dependency, checked once.
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for name, policy in config.policies.items():
        if policy.kind is None:
            continue
        if policy.kind == "postgres" and dsn:
            where = dsn
        else:
            where = json.dumps(policy.settings, sort_keys=True, default=str)
            if policy.kind == "http" and url:
                where = f"{url} {where}"
        groups.setdefault((policy.kind, where), []).append(name)
    return list(groups.values())


async def _checks(
    config: ResilienceConfig,
    args: argparse.Namespace,
    *,
    show: Callable[[Finding], None] | None,
    in_order: bool,
) -> list[Finding]:
    """Every finding, in configuration order; each *show*-n when known.

    *in_order*: show in configuration order (each as soon as those before
    it are known), rather than in the order the checks finish.
    """
    import asyncio  # noqa: PLC0415 - not needed for --help, --version

    from sage_resilience._diagnosis import doctor  # noqa: PLC0415

    groups = _groups(config, args.dsn, args.url)
    tasks: dict[asyncio.Task[list[Finding]], list[str]] = {}
    for names in groups:
        part = config.model_copy(
            update={"policies": {n: config.policies[n] for n in names}}
        )
        check = doctor.run_doctor(
            part, dsn=args.dsn, url=args.url, timeout=args.timeout
        )
        tasks[asyncio.ensure_future(check)] = names
    line = StatusLine(delay=0.2)
    shown = _Shown(groups, show, line, in_order=in_order)
    pending = set(tasks)
    while pending:
        done, pending = await asyncio.wait(
            pending, timeout=0.1, return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            shown.add(tasks[task], task.result())
        waiting = [name for task in pending for name in tasks[task]]
        if waiting:
            line.show(
                f"checking {', '.join(waiting)} "
                f"({line.elapsed():.1f}s, {shown.done()} of "
                f"{len(shown.order)} done)"
            )
    line.clear()
    return shown.ordered()


class _Shown:
    """The findings known so far, shown as they come."""

    def __init__(
        self,
        groups: list[list[str]],
        show: Callable[[Finding], None] | None,
        line: StatusLine,
        *,
        in_order: bool,
    ) -> None:
        self.order = [name for names in groups for name in names]
        self.findings: dict[str, list[Finding]] = {}
        self._show = show
        self._line = line
        self._in_order = in_order
        self._next = 0  # index in order of the next policy to show

    def add(self, names: list[str], found: list[Any]) -> None:
        for name in names:
            self.findings[name] = [f for f in found if f.policy == name]
        # A finding for no policy asked for: shown at once, kept last.
        extra = [f for f in found if f.policy not in names]
        self.findings.setdefault("", []).extend(extra)
        if not self._in_order:
            self._print(found)
            return
        self._print(extra)
        while self._next < len(self.order):
            name = self.order[self._next]
            if name not in self.findings:
                break
            self._print(self.findings[name])
            self._next += 1

    def _print(self, findings: list[Finding]) -> None:
        if findings and self._show is not None:
            self._line.clear()
            for finding in findings:
                self._show(finding)

    def done(self) -> int:
        """How many of the policies have their finding."""
        return sum(name in self.findings for name in self.order)

    def ordered(self) -> list[Finding]:
        """Every finding, in configuration order."""
        names = [*self.order, ""]
        return [f for name in names for f in self.findings.get(name, [])]

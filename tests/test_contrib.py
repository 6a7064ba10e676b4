"""The operator's kit under contrib/: alerting rules and Grafana dashboard.

promtool (Debian's ``prometheus`` package) checks the rules, runs their
unit tests and parses every query of the dashboard; every metric a query
names must be in a real exposition of the library.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sage_resilience import (
    BulkheadFullError,
    CircuitOpenError,
    configure,
    metrics,
    policy,
)
from tests.support import need_binary

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "contrib" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "contrib" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "contrib" / "grafana" / "sage_resilience.json"
DOCS = (ROOT / "docs" / "monitoring.md", ROOT / "docs" / "operations.md")

CONFIG = """\
version: 1
policies:
  db: {critical: true, failure_threshold: 2, recovery_timeout: 60}
  api: {failure_threshold: 3, retry: {attempts: 2}, max_concurrency: 1}
"""

#: Old name -> new name of each renamed metric (the pages may name both).
RENAMED = {
    "sage_resilience_failure_count": "sage_resilience_consecutive_failures",
}

#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}

#: Grafana's macros and variables -> what promtool can parse.
MACROS = {
    "$__rate_interval": "5m",
    "$__range": "1h",
    "$job": ".*",
    "$breaker": ".*",
}

#: A metric name right before a selector's ``{`` or a range's ``[``.
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]")
#: Any name of the library's (also one used without a selector).
OURS = re.compile(r"\bsage_resilience_[a-zA-Z0-9_]+")
#: A label matcher's label name inside a selector.
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
#: The labels of ``by (...)``, ``on (...)``, ``ignoring (...)``.
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


def promtool() -> str:
    return need_binary("promtool", "apt-get install prometheus")


def run(
    *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def boom() -> None:
    raise ZeroDivisionError("boom")


@pytest.fixture
def exposition(tmp_path: Path) -> str:
    """A real scrape, every outcome counted at least once."""
    path = tmp_path / "resilience.yaml"
    path.write_text(CONFIG)
    configure(path)
    registry = CollectorRegistry()
    metrics.register_metrics(registry)
    policy("db").call(lambda: None)
    for _ in range(2):
        with pytest.raises(ZeroDivisionError):
            policy("db").call(boom)
    with pytest.raises(CircuitOpenError):
        policy("db").call(lambda: None)
    with pytest.raises(ZeroDivisionError):
        policy("api").call(boom)  # one retry
    bulkhead = policy("api")._s.bulkhead
    assert bulkhead is not None
    assert bulkhead.acquire_sync()
    try:
        with pytest.raises(BulkheadFullError):
            policy("api").call(lambda: None)
    finally:
        bulkhead.release()
    return metrics.generate_latest_text(registry).decode()


def exported(text: str) -> tuple[set[str], set[str]]:
    """The sample names and the label names of an exposition."""
    names: set[str] = set()
    labels: set[str] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.add(sample.name)
            labels.update(sample.labels)
    return names, labels


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panel_queries() -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel."""
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", ()):
            yield panel["title"], target["expr"]


def variable_queries() -> Iterator[tuple[str, str]]:
    """(variable name, the selector inside its label_values(...))."""
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"]
        found = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert found, query
        yield variable["name"], found[1]


def rule_queries() -> Iterator[tuple[str, str]]:
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield rule["alert"], rule["expr"]


def grafana_to_promql(query: str) -> str:
    for macro, value in MACROS.items():
        query = query.replace(macro, value)
    assert "$" not in query, query
    return query


def every_query() -> list[tuple[str, str]]:
    return [
        *panel_queries(),
        *variable_queries(),
        *rule_queries(),
    ]


def metric_names(query: str) -> set[str]:
    """Every metric name *query* reads."""
    return set(SELECTOR.findall(query)) | set(OURS.findall(query))


def label_names(query: str) -> set[str]:
    """Every label name *query* matches on or groups by."""
    found = set(MATCHER.findall(query))
    for group in GROUPING.findall(query):
        found.update(name.strip() for name in group.split(",") if name.strip())
    return found


class TestAlertingRules:
    def test_check_rules(self) -> None:
        """promtool check rules accepts the file."""
        checked = run("check", "rules", str(RULES))
        assert 0 == checked.returncode, checked.stdout + checked.stderr
        assert "SUCCESS: 5 rules found" in checked.stdout

    def test_unit_tests(self) -> None:
        """The rules fire as alerts_test.yml expects (and only then)."""
        tested = run("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
        assert 0 == tested.returncode, tested.stdout + tested.stderr
        assert "SUCCESS" in tested.stdout

    def test_the_alerts(self) -> None:
        """A critical breaker open, flapping, rejections: all present."""
        rules = dict(rule_queries())
        assert {
            "SageResilienceCriticalCircuitOpen",
            "SageResilienceCircuitOpen",
            "SageResilienceCircuitFlapping",
            "SageResilienceHighRejectionRate",
            "SageResilienceCircuitForcedOpen",
        } == set(rules)
        assert "changes(" in rules["SageResilienceCircuitFlapping"]
        assert (
            "sage_resilience_circuit_critical"
            in (rules["SageResilienceCriticalCircuitOpen"])
        )


class TestDashboard:
    def test_the_panels(self) -> None:
        """State timeline, calls, rejections, retries, latency, time open."""
        panels = {p["title"]: p for p in dashboard()["panels"]}
        assert "state-timeline" == panels["Circuit state"]["type"]
        for title in (
            "Calls by outcome",
            "Rejections",
            "Retries",
            "Attempt latency",
            "Time open",
        ):
            assert title in panels
        latency = [t["expr"] for t in panels["Attempt latency"]["targets"]]
        quantiles = [
            re.findall(r"^histogram_quantile\(([\d.]+),", e) for e in latency
        ]
        assert [["0.5"], ["0.95"], ["0.99"]] == quantiles
        assert all("_bucket" in e for e in latency)
        timeline = panels["Circuit state"]["fieldConfig"]["defaults"]
        texts = {
            key: value["text"]
            for key, value in timeline["mappings"][0]["options"].items()
        }
        assert {
            "0": "closed",
            "1": "half-open",
            "2": "open",
            "3": "forced open",
        } == texts

    def test_layout(self) -> None:
        """Unique panel ids; no two panels overlap on the 24-column grid."""
        panels = dashboard()["panels"]
        assert len(panels) == len({p["id"] for p in panels})
        cells: dict[tuple[int, int], str] = {}
        for panel in panels:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    assert (x, y) not in cells, (panel["title"], cells[x, y])
                    cells[x, y] = panel["title"]

    def test_data_source_is_a_variable(self) -> None:
        """Every panel and query uses the ${datasource} variable."""
        for panel in dashboard()["panels"]:
            assert "${datasource}" == panel["datasource"]["uid"]
            for target in panel["targets"]:
                assert "${datasource}" == target["datasource"]["uid"]

    def test_queries_parse(self, tmp_path: Path) -> None:
        """promtool parses every panel query (as a recording rule)."""
        rules = {
            "groups": [
                {
                    "name": "dashboard",
                    "rules": [
                        {
                            "record": f"dashboard:query_{number}",
                            "expr": grafana_to_promql(query),
                        }
                        for number, (_, query) in enumerate(
                            [*panel_queries(), *variable_queries()]
                        )
                    ],
                }
            ]
        }
        path = tmp_path / "dashboard_rules.yml"
        path.write_text(yaml.safe_dump(rules))
        checked = run("check", "rules", str(path))
        assert 0 == checked.returncode, checked.stdout + checked.stderr


class TestNamesAreExported:
    """Each metric and label a query reads is in a real exposition."""

    def test_every_query_reads_exported_metrics(self, exposition: str) -> None:
        names, _ = exported(exposition)
        for where, query in every_query():
            used = metric_names(query)
            assert used, (where, query)
            assert used <= names, (where, sorted(used - names))

    def test_every_label_is_exported(self, exposition: str) -> None:
        _, labels = exported(exposition)
        for where, query in every_query():
            used = label_names(query)
            assert used <= labels | TARGET_LABELS, (where, used - labels)

    def test_every_metric_name_in_the_docs(self, exposition: str) -> None:
        """The pages name metrics (and their samples) under today's names.

        A renamed metric's old name may appear (the pages tell readers
        about the rename); it must no longer be exported.
        """
        names, _ = exported(exposition)
        families = {
            family.name
            for family in text_string_to_metric_families(exposition)
        }
        assert not set(RENAMED) & (names | families)
        assert set(RENAMED.values()) <= families
        for page in DOCS:
            used = set(OURS.findall(page.read_text())) - set(RENAMED)
            assert used, page
            unknown = used - names - families
            assert not unknown, (page.name, unknown)

    def test_the_extraction(self) -> None:
        """The name extraction itself, on a query with every construct."""
        query = (
            'sum by (breaker, le) (rate(x_bucket{job=~"$job", le!="1"}[5m]))'
            " / ignoring (outcome) group_left"
            " sage_resilience_calls_total"
        )
        assert {"x_bucket", "sage_resilience_calls_total"} == metric_names(
            query
        )
        assert {"breaker", "le", "job", "outcome"} == label_names(query)

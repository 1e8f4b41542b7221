"""deploy/grafana/castway.json: a valid dashboard whose every metric is documented in
docs/deploy.md, and whose documented metrics match what the components define."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest

ROOT = Path(__file__).parents[2]
DASHBOARD: dict[str, Any] = json.loads((ROOT / "deploy" / "grafana" / "castway.json").read_text())
DOCS = (ROOT / "docs" / "deploy.md").read_text()


def _panels() -> Iterator[dict[str, Any]]:
    for panel in DASHBOARD["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _exprs() -> list[str]:
    return [t["expr"] for p in _panels() for t in p.get("targets", [])]


NOT_YET = "*not yet*"


def _table() -> dict[str, str]:
    """docs/deploy.md's metric table: exposed name -> the defining module or NOT_YET."""
    section = DOCS.split("### Metrics the dashboard expects", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`castway_"):
            rows[cells[0].strip("`")] = cells[3].strip("`")
    return rows


def _documented() -> set[str]:
    return set(_table())


def _defined_in_code() -> dict[str, tuple[str, str]]:
    """Metric families the code defines -> (type, module path). Static: the components are
    written in parallel and some are not importable yet."""
    found: dict[str, tuple[str, str]] = {}
    pattern = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"(castway_[a-z0-9_]+)\"")
    for package in ("castway", "ingest", "transcoder", "origin", "archiver", "scheduler",
                    "chat"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for kind, name in pattern.findall(path.read_text()):
                found[name] = (kind, path.relative_to(ROOT).as_posix())
    return found


def _exposed(name: str, kind: str) -> set[str]:
    """The series names prometheus_client exposes for one family."""
    if kind == "Counter":
        return {name.removesuffix("_total") + "_total"}
    if kind in ("Histogram", "Summary"):
        return {name + "_bucket", name + "_sum", name + "_count", name}
    return {name}


def test_dashboard_is_a_grafana_dashboard() -> None:
    assert DASHBOARD["title"] == "castway" and DASHBOARD["uid"]
    assert isinstance(DASHBOARD["schemaVersion"], int)
    ids = [p["id"] for p in _panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in _panels():
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}"
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"


def _selectors(expr: str) -> list[tuple[str, bool]]:
    """(metric name, used through rate()/increase()) of every selector in a PromQL query,
    parsed by promql-parser (a port of Prometheus's own parser)."""
    found: list[tuple[str, bool]] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.Call) and node.func.name in ("rate", "increase"):
            for arg in node.args:
                if isinstance(arg, promql_parser.MatrixSelector):
                    found.append((str(arg.vector_selector.name), True))
        elif isinstance(node, promql_parser.VectorSelector):
            if not any(name == node.name for name, _ in found):
                found.append((str(node.name), False))

    promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    return found


@pytest.mark.parametrize("expr", _exprs())
def test_queries_are_valid_promql_over_castway_metrics(expr: str) -> None:
    selectors = _selectors(expr)  # raises ValueError on a syntax error
    assert selectors, expr
    for name, through_rate in selectors:
        assert name.startswith("castway_"), expr
        # a counter or a histogram's buckets only make sense as rates
        if name.endswith(("_total", "_bucket")):
            assert through_rate, (name, expr)


def test_every_panel_topic_of_the_issue_is_covered() -> None:
    titles = " ".join(p["title"].lower() for p in _panels())
    for topic in ("publishers", "bitrate", "fps", "lag", "dropped frames", "segments written",
                  "retries", "spool", "requests by kind and status", "blocked", "fleet",
                  "actions", "glass-to-glass"):
        assert topic in titles, topic


def test_every_metric_the_dashboard_queries_is_documented() -> None:
    used = {name for expr in _exprs() for name, _ in _selectors(expr)}
    documented = _documented()
    assert used <= documented, sorted(used - documented)
    assert documented <= used, sorted(documented - used)  # no stale rows either


def test_metric_table_says_truly_where_each_metric_is_defined() -> None:
    """A row naming a module: that module defines the metric (with this exposed name). A
    *not yet* row: nothing defines it (when a component adds it, the row must say where)."""
    exposed: dict[str, str] = {}
    for name, (kind, module) in _defined_in_code().items():
        for series in _exposed(name, kind):
            exposed[series] = module
    wrong = {metric: (where, exposed.get(metric, NOT_YET))
             for metric, where in _table().items() if exposed.get(metric, NOT_YET) != where}
    assert not wrong, wrong

"""The Grafana dashboard and its provisioning: only series the code emits, valid PromQL.

The names come from :mod:`bus.metrics` (the same constants the instruments are made from), so a
renamed instrument or a typo in a panel fails here; ``tests/ops/test_metrics.py`` checks the
same names against a live scrape. PromQL is checked by Debian's ``promtool`` (the test skips
only where it is absent; ``scripts/bootstrap test`` installs it with ``prometheus``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bus.metrics import emitted_series

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "ops" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "sophia.json"
PROMTOOL = "/usr/bin/promtool"

#: what Grafana substitutes before a query reaches Prometheus
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$service": ".*"}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPINGS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_NAMES = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)")


def load_dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def panel_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard's panels."""
    return [
        target["expr"]
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def variable_metrics(dashboard: dict[str, Any]) -> set[str]:
    """The metrics the template variables read (``label_values(metric, label)``)."""
    found = set()
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query", "")
        text = query.get("query", "") if isinstance(query, dict) else str(query)
        found.update(_LABEL_VALUES.findall(text))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects: what is left once strings, label matchers, ranges,
    groupings, function calls, keywords and numbers are taken out."""
    bare = _STRINGS.sub('""', expr)
    bare = _MATCHERS.sub(" ", bare)
    bare = _RANGES.sub(" ", bare)
    bare = _GROUPINGS.sub(" ", bare)
    return {n for n in _NAMES.findall(bare) if n.lower() not in _KEYWORDS}


def dashboard_metrics() -> set[str]:
    dashboard = load_dashboard()
    names = {n for expr in panel_queries(dashboard) for n in metric_names(expr)}
    return names | variable_metrics(dashboard)


def promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("sum(rate(sophia_nope_total[5m]))", {"sophia_nope_total"}),
        (
            'histogram_quantile(0.95, sum by (service, le) (rate(a_bucket{x="b(c)"}[1m])))',
            {"a_bucket"},
        ),
        ("sum(rate(a_total[1m])) / sum(rate(b_total[1m])) * 3600", {"a_total", "b_total"}),
        ('max by (service) (gauge{service=~"$service"}) offset 5m', {"gauge"}),
    ],
    ids=["counter-rate", "quantile-with-matcher", "ratio", "offset"],
)
def test_metric_names_finds_every_selected_metric(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_dashboard_references_only_series_the_code_emits() -> None:
    names = dashboard_metrics()
    assert names, "the dashboard queries no metric"
    unknown = names - emitted_series()
    assert not unknown, f"the dashboard queries series no code emits: {sorted(unknown)}"


@pytest.mark.parametrize(
    "title",
    [
        "Request rate by service",
        "Errors by service",
        "p95 latency by service",
        "Consumer lag",
        "DLQ depth",
        "Cache hit rate",
        "Model cost",
        "Task throughput",
    ],
)
def test_dashboard_has_panel(title: str) -> None:
    panels = [p for p in _panels(load_dashboard()["panels"]) if p.get("title") == title]
    assert len(panels) == 1
    assert panels[0]["targets"], f"{title}: no query"


def test_dashboard_uses_the_provisioned_datasources() -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources/sophia.yaml").read_text())
    uids = {d["uid"]: d["type"] for d in provisioned["datasources"]}
    assert uids == {"prometheus": "prometheus", "tempo": "tempo"}
    used = {
        (ds["uid"], ds["type"])
        for panel in _panels(load_dashboard()["panels"])
        for ds in [
            panel.get("datasource"),
            *(t.get("datasource") for t in panel.get("targets", [])),
        ]
        if ds
    }
    assert used == {("prometheus", "prometheus")}


def test_dashboard_provider_loads_the_dashboard_folder() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/sophia.yaml").read_text())
    (only,) = provider["providers"]
    assert only["type"] == "file"
    assert only["options"]["path"]
    assert load_dashboard()["uid"] == "sophia"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    if shutil.which(PROMTOOL) is None:
        pytest.skip(f"{PROMTOOL} is not installed (scripts/bootstrap test installs prometheus)")
    queries = panel_queries(load_dashboard())
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"sophia:q{i}", "expr": promql(e)} for i, e in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

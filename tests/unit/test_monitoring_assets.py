"""The chart's alert rules and Grafana dashboard: promtool-valid, alerts that fire when they
should, a dashboard Grafana can load, and only series the application really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
FILES = REPO / "kubernetes" / "chart" / "machine-health" / "files"
RULES = FILES / "prometheus-rules.yaml"
DASHBOARD = FILES / "grafana-dashboard.json"
RULE_TESTS = Path(__file__).parent / "prometheus" / "rules_test.yaml"
# Series Prometheus itself adds to every scrape target.
PROMETHEUS_OWN = {"up"}
REQUIRED_ALERTS = {
    "MachineHealthApiHighErrorRate",
    "MachineHealthApiHighLatencyP99",
    "MachineHealthSpoolNotEmpty",
    "MachineHealthSpoolDeadLetters",
    "MachineHealthArchiveTaskRestarts",
    "MachineHealthDataDrift",
    "MachineHealthLivePerformanceDrop",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: run `make promtool` (Debian's prometheus package ships it); "
            "the alert rules cannot be checked without it"
        )
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_rules_passes() -> None:
    result = run_promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alerts_fire_exactly_in_the_promtool_unit_cases() -> None:
    result = run_promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The check itself can fail: a rule with a PromQL syntax error is refused."""
    rules = yaml.safe_load(RULES.read_text())
    rules["groups"][0]["rules"][0]["expr"] = "sum(rate(http_requests_total[5m])"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(rules))
    assert run_promtool("check", "rules", str(broken)).returncode != 0


def test_the_issue_alerts_are_present() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert alerts >= REQUIRED_ALERTS


# --- the dashboard ------------------------------------------------------------------------------
def board() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_has_grafana_model_keys() -> None:
    data = board()
    assert {"title", "uid", "schemaVersion", "panels"} <= set(data)
    assert isinstance(data["title"], str) and data["title"]
    assert isinstance(data["uid"], str) and re.fullmatch(r"[A-Za-z0-9_-]{1,40}", data["uid"])
    assert isinstance(data["schemaVersion"], int) and data["schemaVersion"] >= 36
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_panels_are_well_formed_and_do_not_overlap() -> None:
    panels = board()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        assert {"id", "type", "title", "targets", "gridPos"} <= set(panel), panel.get("title")
        assert isinstance(panel["id"], int) and panel["title"]
        assert panel["type"] in {"row", "timeseries", "stat", "table", "bargauge", "gauge"}
        pos = panel["gridPos"]
        assert set(pos) == {"h", "w", "x", "y"}
        assert all(isinstance(v, int) and v >= 0 for v in pos.values())
        assert pos["w"] >= 1 and pos["h"] >= 1 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                 for y in range(pos["y"], pos["y"] + pos["h"])}  # fmt: skip
        assert not cells & occupied, f"panel {panel['title']!r} overlaps another"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["expr"].strip() and 'job="machine-health"' in target["expr"]


# --- only series the application exports ---------------------------------------------------------
def exported_series() -> set[str]:
    """Sample names of every series the API exposes: our own metrics module, plus the HTTP
    series of prometheus-fastapi-instrumentator configured as in api/app.py (after a request)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry
    from prometheus_fastapi_instrumentator import Instrumentator

    import machine_health.telemetry  # noqa: F401 - registers our series

    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("machine_health_"):
            names |= _sample_names(family.name, family.type)
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"ok": "yes"}

    Instrumentator(excluded_handlers=["/metrics"], registry=CollectorRegistry()).instrument(
        app
    ).expose(app, endpoint="/metrics")
    client = TestClient(app)
    client.get("/ping")
    for family in text_string_to_metric_families(client.get("/metrics").text):
        names |= {sample.name for sample in family.samples}
    return names


def _sample_names(name: str, kind: str) -> set[str]:
    if kind == "counter":
        return {f"{name}_total"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return {name}


def used_series(expression: str) -> set[str]:
    return set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expression))


def test_every_rule_and_panel_reads_a_series_the_app_exports() -> None:
    exported = exported_series() | PROMETHEUS_OWN
    exprs = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    exprs += [t["expr"] for p in board()["panels"] for t in p["targets"]]
    for expression in exprs:
        used = used_series(expression)
        assert used, expression
        assert used <= exported, f"not exported by the API: {used - exported} in {expression}"


def test_dashboard_shows_every_alerted_series() -> None:
    alerted = {
        m for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
        for m in used_series(r["expr"])
    }  # fmt: skip
    shown = {m for p in board()["panels"] for t in p["targets"] for m in used_series(t["expr"])}
    assert alerted <= shown, alerted - shown

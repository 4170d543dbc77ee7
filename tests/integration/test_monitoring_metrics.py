"""After real traffic, GET /metrics of a real uvicorn shows the custom series with the right
counts, and the drift / live-performance gauges of the reports computed from that traffic."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from machine_health.config import Settings
from machine_health.domains import get_domain
from machine_health.domains.turbofan.data import SENSORS, SETTINGS, load_subset
from machine_health.domains.vibration.demo import test_windows as vibration_windows
from machine_health.monitoring import drift, performance
from tests.support.models import TrainedModels, api_settings
from tests.support.servers import Server, start_uvicorn
from tests.support.users import create_users, login

pytestmark = pytest.mark.slow

N_VIBRATION = 48  # interleaved across the 7 recordings: normal and every fault class
TURBOFAN_CYCLES = 12


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, store_uri: str, trained_models: TrainedModels
) -> Iterator[tuple[Server, Settings]]:
    tmp = tmp_path_factory.mktemp("metrics")
    settings = api_settings(tmp, store_uri, trained_models, metrics_refresh_seconds=0.5)
    create_users(settings)
    server = start_uvicorn(settings, tmp / "logs")
    yield server, settings
    server.stop()


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition: (name, labels) -> value."""
    samples = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        if not match or line.startswith("#"):
            continue
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_for(url: str, name: str, timeout_s: float = 15.0, **labels: str) -> dict[Any, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(url)
        if (name, frozenset(labels.items())) in samples or time.monotonic() > deadline:
            return samples
        time.sleep(0.3)


def test_metrics_after_traffic(api: tuple[Server, Settings], trained_models: TrainedModels) -> None:
    server, settings = api
    headers = login(server.url, "operator")
    vib_version, tf_version = trained_models.vibration_version, trained_models.turbofan_version
    before = scrape(server.url)

    # --- vibration: real CWRU test windows, then their inspected labels as feedback ---------
    started = datetime.now(UTC)
    answers = []
    for item in vibration_windows(settings.data_dir, N_VIBRATION):
        response = httpx.post(f"{server.url}/predict/vibration", json=item["body"],
                              headers=headers, timeout=30)  # fmt: skip
        assert response.status_code == 200, response.text
        answers.append(response.json())
        feedback = {"prediction_id": answers[-1]["prediction_id"], "label": item["label"]}
        assert httpx.post(f"{server.url}/feedback", json=feedback, headers=headers,
                          timeout=30).status_code == 200  # fmt: skip
    test_only = httpx.post(f"{server.url}/predict-test/vibration", json=item["body"],
                           headers=headers, timeout=30).json()  # fmt: skip
    anomalies = sum(a["prediction"]["is_anomaly"] for a in [*answers, test_only])

    # --- turbofan: one FD001 test unit cycle by cycle -----------------------------------------
    example = get_domain("turbofan").example_input(settings.data_dir)
    unit = load_subset(settings.data_dir, "FD001").test.query("unit == 1").head(TURBOFAN_CYCLES)
    ruls = []
    for row in unit.itertuples(index=False):
        body = {**example, "unit_id": "metrics-u1", "cycle": int(row.cycle),
                "settings": [float(getattr(row, c)) for c in SETTINGS],
                "sensors": [float(getattr(row, c)) for c in SENSORS]}  # fmt: skip
        response = httpx.post(f"{server.url}/predict/turbofan", json=body, headers=headers,
                              timeout=60)  # fmt: skip
        assert response.status_code == 200, response.text
        ruls.append(response.json()["prediction"]["rul"])

    samples = scrape(server.url)

    def delta(name: str, **labels: str) -> float:
        return value(samples, name, **labels) - value(before, name, **labels)

    archived = {"archived", "spooled"}
    vib_count = sum(
        delta("machine_health_predictions_total", domain="vibration", model_version=vib_version,
              outcome=o) for o in archived
    )  # fmt: skip
    assert vib_count == N_VIBRATION
    assert delta("machine_health_predictions_total", domain="vibration", model_version=vib_version,
                 outcome="not_archived") == 1  # fmt: skip
    verdicts = {
        v: delta("machine_health_anomaly_outputs_total", domain="vibration",
                 model_version=vib_version, anomaly=v) for v in ("true", "false")
    }  # fmt: skip
    assert verdicts == {"true": anomalies, "false": N_VIBRATION + 1 - anomalies}
    assert 0 < anomalies < N_VIBRATION + 1  # the replay holds normal and faulty windows

    tf_count = sum(
        delta("machine_health_predictions_total", domain="turbofan", model_version=tf_version,
              outcome=o) for o in archived
    )  # fmt: skip
    assert tf_count == TURBOFAN_CYCLES
    assert delta("machine_health_predicted_rul_cycles_count", model_version=tf_version) == len(ruls)
    assert delta("machine_health_predicted_rul_cycles_sum", model_version=tf_version) == (
        pytest.approx(sum(ruls), rel=1e-6)
    )
    assert delta("machine_health_prediction_latency_seconds_count", domain="turbofan") >= len(ruls)
    assert value(samples, "machine_health_model_info", domain="vibration", version=vib_version,
                 alias="champion") == 1  # fmt: skip
    assert value(samples, "machine_health_spool_depth") == 0
    # the loaded models are frozen out of the collector's walks, and its pauses are timed
    assert value(samples, "machine_health_gc_frozen_objects") > 100_000
    assert delta("machine_health_gc_pause_seconds_count", generation="0") > 0

    # --- reports from that traffic reach every replica's gauges --------------------------------
    now = datetime.now(UTC) + timedelta(seconds=1)
    drift_report = drift.run_drift(settings, "vibration", window=now - started, now=now)
    perf_report = performance.run_performance(settings, "vibration", now=now)
    assert drift_report["n_rows"] >= N_VIBRATION
    (live,) = perf_report["versions"]
    assert live["n_predictions"] == N_VIBRATION

    samples = wait_for(server.url, "machine_health_live_metric", domain="vibration",
                       model_version=vib_version, metric="recall")  # fmt: skip
    recall = value(samples, "machine_health_live_metric", domain="vibration",
                   model_version=vib_version, metric="recall")  # fmt: skip
    assert recall == pytest.approx(live["recall"])
    assert value(samples, "machine_health_live_degraded", domain="vibration",
                 model_version=vib_version) == float(live["degraded"])  # fmt: skip
    assert value(samples, "machine_health_drift_flagged", domain="vibration") == float(
        drift_report["flagged"]
    )
    assert value(samples, "machine_health_drift_share", domain="vibration") == pytest.approx(
        drift_report["drift_share"]
    )
    first = drift_report["features"][0]
    assert value(samples, "machine_health_drift_score", domain="vibration",
                 feature=first["feature"], test="psi") == pytest.approx(first["psi"])  # fmt: skip
    assert value(samples, "machine_health_monitoring_refresh_total", result="ok") >= 1

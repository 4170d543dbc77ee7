"""Every custom Prometheus series of machine-health, in one module.

A leaf: it imports nothing of the project, so the archive, the API and the monitoring package
may all count into it without depending on each other (tests/unit/test_layers.py). Reading the
stored reports that feed the monitoring gauges is the API's job (`api/app.py`).

The API exposes them on GET /metrics next to the HTTP series of
prometheus-fastapi-instrumentator. Names follow Prometheus conventions (`_total` counters,
`_seconds` histograms). They live in the default registry, one set per process: with
`--workers N` each worker reports its own values (scrape each replica, not the workers).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

PREDICTIONS = Counter(
    "machine_health_predictions_total",
    "Predictions answered, by domain, model version and outcome (archived, spooled, "
    "not_archived, idempotent_replay, error).",
    ["domain", "model_version", "outcome"],
)
PREDICTION_LATENCY = Histogram(
    "machine_health_prediction_latency_seconds",
    "Time to score one request (queueing for the model batch included), by domain.",
    ["domain"],
    buckets=_LATENCY_BUCKETS,
)
MODEL_BATCH_SIZE = Histogram(
    "machine_health_model_batch_size",
    "Requests scored together in one model call, by domain.",
    ["domain"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
ARCHIVE_WRITE_LATENCY = Histogram(
    "machine_health_archive_write_seconds",
    "Duration of one group-commit insert_many into the archive.",
    buckets=_LATENCY_BUCKETS,
)
ARCHIVE_BATCH_SIZE = Histogram(
    "machine_health_archive_batch_size",
    "Records written by one group commit.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
ARCHIVE_FAILURES = Counter(
    "machine_health_archive_failures_total",
    "Archive writes that did not reach the store, by reason (store_down, spool_full, error, "
    "invalid_record, write_concern, unit_state; counters and labels: a pre-aggregated count "
    "or a replayed cycle's label not updated, the record itself archived).",
    ["reason"],
)
GC_PAUSE = Histogram(
    "machine_health_gc_pause_seconds",
    "Duration of one garbage collection (the event loop stands still meanwhile), by generation.",
    ["generation"],
    buckets=_LATENCY_BUCKETS,
)
GC_FROZEN = Gauge(
    "machine_health_gc_frozen_objects",
    "Long-lived objects (the loaded models) frozen out of the collector's walks.",
)
SPOOL_DEPTH = Gauge(
    "machine_health_spool_depth",
    "Records waiting in the local spool for the store to come back.",
)
STORE_UP = Gauge(
    "machine_health_store_up",
    "1 when this replica's last store ping (every few seconds) answered, else 0. Reported, "
    "not routed on: /ready stays 200 while predictions are spooled.",
)
SPOOL_REPLAYED = Counter(
    "machine_health_spool_replayed_total",
    "Spooled records replayed into the store (duplicates of archived ones included).",
)
SPOOL_DEAD_LETTERS = Counter(
    "machine_health_spool_dead_letters_total",
    "Spooled records the replay cannot archive, moved to the spool folder's dead-letter.jsonl, "
    "by reason (undecodable, unencodable, refused).",
    ["reason"],
)
ARCHIVE_TASK_RESTARTS = Counter(
    "machine_health_archive_task_restarts_total",
    "Deaths of the archive's background tasks (writer, replay), each restarted after a backoff.",
    ["task"],
)
MODEL_INFO = Gauge(
    "machine_health_model_info",
    "1 for the model version each domain serves now.",
    ["domain", "version", "alias"],
)
RELOADS = Counter(
    "machine_health_reloads_total",
    "PUT /reload outcomes per domain (swapped, unchanged, refused).",
    ["domain", "result"],
)
SHADOW_RESULTS = Counter(
    "machine_health_shadow_results_total",
    "Shadow scoring per domain and shadow version: ok, error, late (beyond the budget), skipped.",
    ["domain", "version", "status"],
)
EXPLANATIONS = Counter(
    "machine_health_explanations_total",
    "Explanations per domain: answered (asked for), archived (background), error, skipped.",
    ["domain", "outcome"],
)
LOGIN_FAILURES = Counter(
    "machine_health_login_failures_total",
    "Failed logins, by reason (bad_credentials, throttled).",
    ["reason"],
)


def set_model_info(domain: str, version: str, alias: str | None) -> None:
    """Point `machine_health_model_info` of a domain at its newly served version only."""
    for labels in list(MODEL_INFO._metrics):  # type: ignore[attr-defined]
        if labels[0] == domain:
            MODEL_INFO.remove(*labels)
    MODEL_INFO.labels(domain=domain, version=version, alias=alias or "").set(1)


# --- model outputs, drift and live performance (monitoring issue) ----------------------------
ANOMALY_OUTPUTS = Counter(
    "machine_health_anomaly_outputs_total",
    "Scored vibration windows by anomaly verdict (anomaly=true/false); their ratio is the "
    "anomaly rate.",
    ["domain", "model_version", "anomaly"],
)
PREDICTED_RUL = Histogram(
    "machine_health_predicted_rul_cycles",
    "Predicted remaining useful life of scored turbofan cycles.",
    ["model_version"],
    buckets=(0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 125, 150),
)
DRIFT_SCORE = Gauge(
    "machine_health_drift_score",
    "Latest drift report per input feature: test=psi (effect size), ks (statistic) or "
    "p_adjusted (Benjamini-Hochberg).",
    ["domain", "feature", "test"],
)
DRIFT_SHARE = Gauge(
    "machine_health_drift_share",
    "Share of drifted input features in the latest drift report of a domain.",
    ["domain"],
)
DRIFT_FLAGGED = Gauge(
    "machine_health_drift_flagged",
    "1 when the latest drift report of a domain reached MH_DRIFT_THRESHOLD.",
    ["domain"],
)
LIVE_METRIC = Gauge(
    "machine_health_live_metric",
    "Live performance from labels per model version (rmse, phm08, precision, recall...).",
    ["domain", "model_version", "metric"],
)
LIVE_DEGRADED = Gauge(
    "machine_health_live_degraded",
    "1 when a model version's live performance crossed its retraining threshold.",
    ["domain", "model_version"],
)
REPORTS_READ = Counter(
    "machine_health_monitoring_refresh_total",
    "Reads of the latest drift/performance reports by this replica, by result (ok, error).",
    ["result"],
)
_DRIFT_TESTS = ("psi", "ks", "p_adjusted")
_LIVE_METRICS = (
    "rmse", "phm08", "rmse_all_cycles", "precision", "recall", "false_alarm_rate",
    "class_accuracy", "macro_f1",
)  # fmt: skip


def observe_output(domain: str, model_version: str, output: dict[str, Any]) -> None:
    """Count what a model answered: anomaly verdicts (vibration), predicted RUL (turbofan)."""
    if "is_anomaly" in output:
        verdict = "true" if output["is_anomaly"] else "false"
        ANOMALY_OUTPUTS.labels(domain, model_version, verdict).inc()
    if "rul" in output:
        PREDICTED_RUL.labels(model_version).observe(float(output["rul"]))


def _clear(gauge: Gauge, domain: str) -> None:
    for labels in list(gauge._metrics):  # type: ignore[attr-defined]
        if labels[0] == domain:
            gauge.remove(*labels)


def publish_drift(report: dict[str, Any]) -> None:
    """Gauges of a domain's latest drift report (`monitoring.drift`), replacing the previous."""
    domain = str(report["domain"])
    _clear(DRIFT_SCORE, domain)
    for row in report.get("features", []):
        for test in _DRIFT_TESTS:
            DRIFT_SCORE.labels(domain, row["feature"], test).set(float(row[test]))
    DRIFT_SHARE.labels(domain).set(float(report.get("drift_share", 0.0)))
    DRIFT_FLAGGED.labels(domain).set(1.0 if report.get("flagged") else 0.0)


def publish_performance(report: dict[str, Any]) -> None:
    """Gauges of a domain's latest live-performance report (`monitoring.performance`)."""
    domain = str(report["domain"])
    _clear(LIVE_METRIC, domain)
    _clear(LIVE_DEGRADED, domain)
    for row in report.get("versions", []):
        version = str(row["model_version"])
        for metric in _LIVE_METRICS:
            if metric in row:
                LIVE_METRIC.labels(domain, version, metric).set(float(row[metric]))
        LIVE_DEGRADED.labels(domain, version).set(1.0 if row.get("degraded") else 0.0)

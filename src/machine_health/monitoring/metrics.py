"""Every custom Prometheus series of machine-health, in one module.

The API exposes them on GET /metrics next to the HTTP series of
prometheus-fastapi-instrumentator. Names follow Prometheus conventions (`_total` counters,
`_seconds` histograms). They live in the default registry, one set per process: with
`--workers N` each worker reports its own values (scrape each replica, not the workers).
"""

from __future__ import annotations

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
    "Archive writes that did not reach the store, by reason (store_down, spool_full, error).",
    ["reason"],
)
SPOOL_DEPTH = Gauge(
    "machine_health_spool_depth",
    "Records waiting in the local spool for the store to come back.",
)
SPOOL_REPLAYED = Counter(
    "machine_health_spool_replayed_total",
    "Spooled records replayed into the store (duplicates of archived ones included).",
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

"""Step 0 (the DAGs' short-circuit): should this run retrain at all?

First it measures: the drift of the archived inputs of the run's data interval against the
champion's training reference, and the live performance of the labels known at the interval
end, both stored as reports (what the triggers, the API's gauges and the alert rules read).
Then it decides. Yes when, at the interval end, at least `retrain_min_new_labels` predictions
were labelled after the data the last registered version consumed, or when the monitoring
triggers (drift, live performance; `monitoring.triggers.should_retrain`) ask for it, or when
the run is forced (a manual trigger from the UI). The answer is the `retrain` key of the
result; the DAG stops the run cleanly when it is false.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from machine_health.archive.client import open_db
from machine_health.archive.labels import count_labelled
from machine_health.config import Settings
from machine_health.errors import MachineHealthError
from machine_health.pipeline import lineage
from machine_health.pipeline.steps import StepRun, step

logger = logging.getLogger(__name__)

DRIFT_KEYS = ("status", "model_version", "n_rows", "drift_share", "flagged")
PERFORMANCE_KEYS = ("n_labelled", "degraded_versions")
#: the newest labelled predictions a run's live-performance report scores: plenty for precision,
#: recall or RMSE per version, and it bounds the check's time on a large archive.
PERFORMANCE_ROWS = 20_000


def count_new_labels(
    settings: Settings, domain: str, until: datetime, since: datetime | None
) -> int:
    """Predictions of `domain` labelled after `since` (all when None) and by `until`."""
    with open_db(settings) as db:
        return count_labelled(db, domain, until, since=since)


def measure(settings: Settings, domain: str, start: datetime, end: datetime) -> dict[str, Any]:
    """Store a drift report of `[start, end)` (or the last `drift_window_hours` when the run has
    no interval) and a live-performance report at `end`; a summary of each, or why it could not
    be made (e.g. a version registered without a reference): that report is then left out."""
    from machine_health.monitoring import drift, performance

    window = end - start if end > start else timedelta(hours=settings.drift_window_hours)
    measurements = {
        "drift": (lambda: drift.run_drift(settings, domain, window=window, now=end), DRIFT_KEYS),
        "performance": (
            lambda: performance.run_performance(settings, domain, now=end, limit=PERFORMANCE_ROWS),
            PERFORMANCE_KEYS,
        ),
    }
    summary: dict[str, Any] = {}
    for name, (make_report, keys) in measurements.items():
        try:
            report = make_report()
        except MachineHealthError as exc:
            logger.warning("%s: %s not measured (%s)", domain, name, exc)
            summary[name] = {"error": str(exc)}
        else:
            summary[name] = {k: report.get(k) for k in keys}
    return summary


def monitoring_trigger(settings: Settings, domain: str, now: datetime, run_id: str) -> dict:
    """The drift / live-performance decision of the monitoring package (a failure = no trigger)."""
    from machine_health.monitoring.triggers import should_retrain

    try:
        return should_retrain(settings, domain, now=now, run_id=run_id)
    except MachineHealthError as exc:
        logger.warning("%s: monitoring trigger unavailable (%s)", domain, exc)
        return {"retrain": False, "reason": None}


@step("check")
def run(job: StepRun, *, min_new_labels: int | None = None) -> dict[str, Any]:
    """Decide whether the run retrains; the decision is recorded and repeated on a retry."""
    settings, domain, ws = job.settings, job.domain, job.ws
    threshold = settings.retrain_min_new_labels if min_new_labels is None else min_new_labels
    since = lineage.consumed_until(settings, domain)
    new_labels = count_new_labels(settings, domain, ws.interval_end, since)
    measured = measure(settings, domain, ws.interval_start, ws.interval_end)
    trigger = monitoring_trigger(settings, domain, ws.interval_end, job.run_id)
    reasons = []
    if job.force:
        reasons.append("forced")
    if new_labels >= threshold:
        reasons.append(f"{new_labels} new labels >= {threshold}")
    if trigger.get("retrain"):
        reasons.append(f"monitoring: {trigger.get('reason')}")
    return {
        "retrain": bool(reasons),
        "reasons": reasons or [f"{new_labels} new labels < {threshold}, no monitoring trigger"],
        "new_labels": new_labels,
        "min_new_labels": threshold,
        "consumed_until": since.isoformat() if since else None,
        "monitoring": measured,
    }

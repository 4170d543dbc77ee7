"""Step 0 (the DAGs' short-circuit): should this run retrain at all?

Yes when, at the interval end, at least `retrain_min_new_labels` predictions were labelled after
the data the last registered version consumed, or when the monitoring triggers (drift, live
performance; `monitoring.triggers.should_retrain`) ask for it, or when the run is forced (a
manual trigger from the UI). The answer is the `retrain` key of the result; the DAG stops the
run cleanly when it is false.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from pymongo.errors import PyMongoError

from machine_health.archive.client import PREDICTIONS, sync_client
from machine_health.config import Settings
from machine_health.errors import MachineHealthError, StoreError
from machine_health.pipeline import lineage
from machine_health.pipeline.extract import count_matching, labelled_query
from machine_health.pipeline.workspace import Workspace

logger = logging.getLogger(__name__)

STEP = "check"


def count_new_labels(
    settings: Settings, domain: str, until: datetime, since: datetime | None
) -> int:
    query = labelled_query(domain, until)
    if since is not None:
        query["labelled_at"]["$gt"] = since
    client = sync_client(settings)
    try:
        return count_matching(client[settings.mongodb_db][PREDICTIONS], query)
    except PyMongoError as exc:
        raise StoreError(f"cannot count labelled {domain} predictions: {exc}") from exc
    finally:
        client.close()


def monitoring_trigger(settings: Settings, domain: str, now: datetime, run_id: str) -> dict:
    """The drift / live-performance decision of the monitoring package (a failure = no trigger)."""
    try:
        from machine_health.monitoring.triggers import should_retrain
    except ImportError:  # monitoring not installed in this image
        return {"retrain": False, "reason": None}
    try:
        return should_retrain(settings, domain, now=now, run_id=run_id)
    except MachineHealthError as exc:
        logger.warning("%s: monitoring trigger unavailable (%s)", domain, exc)
        return {"retrain": False, "reason": None}


def run(
    *,
    settings: Settings,
    domain: str,
    run_id: str,
    interval_start: str | datetime,
    interval_end: str | datetime,
    force: bool = False,
    min_new_labels: int | None = None,
) -> dict[str, Any]:
    """Decide whether the run retrains; the decision is recorded and repeated on a retry."""
    ws = Workspace.open(settings, domain, run_id, interval_start, interval_end)
    if (done := ws.result(STEP)) is not None and not force:
        return done
    threshold = settings.retrain_min_new_labels if min_new_labels is None else min_new_labels
    since = lineage.consumed_until(settings, domain)
    new_labels = count_new_labels(settings, domain, ws.interval_end, since)
    trigger = monitoring_trigger(settings, domain, ws.interval_end, run_id)
    reasons = []
    if force:
        reasons.append("forced")
    if new_labels >= threshold:
        reasons.append(f"{new_labels} new labels >= {threshold}")
    if trigger.get("retrain"):
        reasons.append(f"monitoring: {trigger.get('reason')}")
    return ws.record(
        STEP,
        {
            "retrain": bool(reasons),
            "reasons": reasons or [f"{new_labels} new labels < {threshold}, no monitoring trigger"],
            "new_labels": new_labels,
            "min_new_labels": threshold,
            "consumed_until": since.isoformat() if since else None,
        },
    )

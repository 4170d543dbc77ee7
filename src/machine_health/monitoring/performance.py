"""Live performance: archived predictions scored against the labels that arrived, per model version.

The metrics are the domain's (`Domain.live_performance`: e.g. RMSE and PHM08 of each unit's last
cycle once its failure back-filled the true RUL, or fault-detection precision and recall from
feedback labels), and so is the threshold (`Domain.degraded`). A version with fewer than the
domain's `min_labelled` labelled units or predictions is reported with
`status: "insufficient_labels"` and never trips the performance trigger.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from machine_health.archive.client import open_db
from machine_health.archive.predictions import recent_predictions
from machine_health.archive.reports import PERFORMANCE, save
from machine_health.config import Settings
from machine_health.domains import DOMAINS, get_domain
from machine_health.domains.base import Domain
from machine_health.errors import InputError
from machine_health.monitoring.shadow import compare_records

logger = logging.getLogger(__name__)

#: labelled predictions read per run (turbofan cycles are small; vibration inputs are skipped).
MAX_LABELLED = 200_000


def degraded(domain: str, metrics: Mapping[str, Any], settings: Settings) -> bool:
    """Whether one version's live metrics are below the retraining threshold."""
    if metrics.get("status") != "ok":
        return False
    return _domain(domain).degraded(metrics, settings)


def _domain(domain: str) -> Domain:
    if domain not in DOMAINS:
        raise InputError(f"no live performance for domain {domain!r}")
    return get_domain(domain)


def run_performance(
    settings: Settings,
    domain: str,
    *,
    now: datetime,
    window: timedelta | None = None,
    limit: int = MAX_LABELLED,
) -> dict[str, Any]:
    """Score the labels that arrived before `now` (predictions made in the last `window`, or
    all; the newest `limit` of them), per model version; store the report and return it."""
    start = None if window is None else now - window
    with open_db(settings) as db:
        records = recent_predictions(
            db, domain, start=start, end=now, labelled=True, with_input=False, limit=limit
        )
        versions = _domain(domain).live_performance(records, settings)
        for metrics in versions.values():
            metrics["degraded"] = degraded(domain, metrics, settings)
        report = {
            "domain": domain,
            "n_labelled": len(records),
            "window_start": start,
            "window_end": now,
            # a list, not a dict keyed by version: store keys stay plain field names
            "versions": [{"model_version": v, **m} for v, m in sorted(versions.items())],
            "degraded_versions": sorted(v for v, m in versions.items() if m["degraded"]),
            # the shadow (if any) against the champion on the same requests (monitoring/shadow)
            "shadow": compare_records(settings, domain, records),
            "thresholds": {
                "rmse_max": settings.live_rmse_max,
                "recall_min": settings.live_recall_min,
            },
        }
        save(db, PERFORMANCE, domain, report, created_at=now)
    logger.info(
        "%s live performance: %d labelled predictions, %d versions, degraded %s",
        domain, len(records), len(versions), report["degraded_versions"] or "none",
    )  # fmt: skip
    return report

"""Retraining triggers: drift and live performance, with a cooldown.

The retrain DAGs' short-circuit asks `should_retrain` besides its own "enough new labels" check.
It fires when, for the model serving now (@champion):
- the latest drift report is flagged (share of drifted inputs >= `drift_threshold`), or
- the latest live-performance report marks that version degraded (turbofan RMSE above
  `live_rmse_max`, vibration recall below `live_recall_min`),
and only for reports written after the last trigger, and not within `retrain_cooldown_hours` of
it: one drift event that persists until the new model is trained must start ONE run, not one per
schedule tick. A report about another version than the champion (a retrain already replaced the
model it measured) does not fire either.

A decision that fires is recorded (report kind "retrain_trigger") with the run id; asking again
for the same run id returns that record, so a retried task decides the same way. Time is the
caller's `now` (the DAG's data interval end), never the clock.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from pymongo.database import Database

from machine_health.archive import reports
from machine_health.archive.client import open_db
from machine_health.config import Settings
from machine_health.errors import MachineHealthError

logger = logging.getLogger(__name__)


def _champion(settings: Settings, domain: str) -> str | None:
    from machine_health import registry

    try:
        return registry.aliases(settings, domain).get(registry.CHAMPION)
    except MachineHealthError:
        return None


def _after(report: dict[str, Any] | None, moment: datetime | None) -> dict[str, Any] | None:
    if report is None or moment is None:
        return report
    return report if report["created_at"] > moment else None


def _drift_summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    if report is None:
        return None
    keys = ("report_id", "created_at", "model_version", "flagged", "drift_share", "threshold")
    return {k: report.get(k) for k in keys} | {"drifted_features": report.get("drifted_features")}


def _performance_summary(
    report: dict[str, Any] | None, version: str | None
) -> dict[str, Any] | None:
    if report is None:
        return None
    mine = [
        v for v in report.get("versions", []) if version is None or v["model_version"] == version
    ]
    return {
        "report_id": report.get("report_id"),
        "created_at": report.get("created_at"),
        "degraded": any(v.get("degraded") for v in mine),
        "versions": mine,
    }


def decide(db: Database, settings: Settings, domain: str, *, now: datetime) -> dict[str, Any]:
    """The trigger decision at `now` from the stored reports (reads only)."""
    champion = _champion(settings, domain)
    last = reports.latest(db, reports.TRIGGER, domain, at=now)
    last_at = last["created_at"] if last else None
    cooldown_until = last_at + timedelta(hours=settings.retrain_cooldown_hours) if last_at else None

    drift = _after(reports.latest(db, reports.DRIFT, domain, at=now), last_at)
    if drift is not None and champion is not None and drift.get("model_version") != champion:
        drift = None  # it measured a model that no longer serves
    performance = _after(reports.latest(db, reports.PERFORMANCE, domain, at=now), last_at)
    drift_info = _drift_summary(drift)
    perf_info = _performance_summary(performance, champion)

    reasons = []
    if drift_info and drift_info["flagged"]:
        reasons.append("drift")
    if perf_info and perf_info["degraded"]:
        reasons.append("performance")
    cooling = bool(reasons) and cooldown_until is not None and now < cooldown_until
    return {
        "domain": domain,
        "retrain": bool(reasons) and not cooling,
        "reason": "cooldown" if cooling else ("+".join(reasons) or None),
        "champion": champion,
        "drift": drift_info,
        "performance": perf_info,
        "last_trigger_at": last_at,
        "cooldown_until": cooldown_until,
        "now": now,
    }


def should_retrain(
    settings: Settings, domain: str, *, now: datetime, run_id: str | None = None
) -> dict[str, Any]:
    """Whether drift or live performance asks for a retrain of `domain` now (see module doc).

    Returns `{retrain, reason, drift, performance, cooldown_until, ...}`; a firing decision is
    recorded so the cooldown starts, and repeated for the same `run_id` on a retry.
    """
    with open_db(settings) as db:
        if run_id is not None:
            previous = reports.trigger_of_run(db, domain, run_id)
            if previous is not None:
                return {**previous["decision"], "replayed": True}
        decision = decide(db, settings, domain, now=now)
        if decision["retrain"]:
            until = now + timedelta(hours=settings.retrain_cooldown_hours)
            decision["cooldown_until"] = until
            reports.save(
                db, reports.TRIGGER, domain,
                {"run_id": run_id, "reason": decision["reason"], "decision": decision},
                created_at=now,
            )  # fmt: skip
    logger.info(
        "%s retrain trigger at %s: %s (%s)",
        domain, now.isoformat(), decision["retrain"], decision["reason"] or "nothing new",
    )  # fmt: skip
    return decision

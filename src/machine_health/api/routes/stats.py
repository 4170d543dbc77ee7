"""GET /stats/overview (archive aggregates for the UI) and GET /projection/{domain} (PCA).

What one request reads is bounded: the all-time overview sums pre-aggregated counters (one
document per domain and hour, archive/counters.py); a time window is at most MH_STATS_MAX_DAYS
wide (a wider one is a 422, not silently clamped: the counts of a clamped window would answer
another question than the one asked) and reads at most MH_STATS_MAX_ROWS predictions per domain
(the newest; `truncated` says so); a projection reads at most 1000.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Path, Query

from machine_health.api import projection
from machine_health.api.deps import DbDep, Reader, StateDep
from machine_health.api.json_body import api_router
from machine_health.api.schemas import ClientDatetime
from machine_health.archive import counters
from machine_health.archive.predictions import find_predictions
from machine_health.archive.stats import window_rows
from machine_health.errors import InputError, NotFound

router = api_router(tags=["stats"])

_RUL_STEP = 10


async def _store_status(db: Any) -> str:
    try:
        await asyncio.wait_for(db.command("ping"), timeout=1.0)
    except Exception:  # any failure of the ping means "not reachable"
        return "unreachable"
    return "ok"


def _rul_edges(cap: int) -> list[float]:
    return [float(e) for e in range(0, math.ceil(cap / _RUL_STEP) * _RUL_STEP + 1, _RUL_STEP)]


async def _domain_stats(db: Any, domain: Any, bucket: str, cap: int) -> dict[str, Any]:
    """All-time figures of a domain, from its pre-aggregated counters (archive/counters.py)."""
    fields = domain.output_model.model_fields
    stats = await counters.overview(
        db,
        domain.name,
        bucket=bucket,
        rul_edges=_rul_edges(cap) if "rul" in fields else None,
        anomalies="is_anomaly" in fields,
    )
    stats["truncated"] = False  # every prediction is counted: the same shape as a window's
    return _with_rate(stats)


async def _window_stats(
    db: Any,
    domain: Any,
    bucket: str,
    cap: int,
    since: datetime | None,
    until: datetime | None,
    max_rows: int,
) -> dict[str, Any]:
    """The same figures for a time window, counted here from the window's (newest) rows."""
    rows = await window_rows(db, domain.name, since=since, until=until, limit=max_rows)
    formats = {"hour": "%Y-%m-%dT%H:00:00Z", "day": "%Y-%m-%dT00:00:00Z"}
    outputs = [r.get("output") or {} for r in rows]
    stats: dict[str, Any] = {
        "total": len(rows),
        "labelled": sum(r.get("label") is not None for r in rows),
        "assets": len({r.get("asset_id") for r in rows}),
        "over_time": dict(
            sorted(Counter(r["created_at"].strftime(formats[bucket]) for r in rows).items())
        ),
        "by_model_version": dict(
            sorted(Counter(str(r.get("model_version")) for r in rows).items())
        ),
        "truncated": len(rows) >= max_rows,
    }
    fields = domain.output_model.model_fields
    if "is_anomaly" in fields:
        stats["anomalies"] = sum(bool(o.get("is_anomaly")) for o in outputs)
        stats["by_fault_class"] = dict(
            sorted(Counter(str(o.get("fault_class")) for o in outputs).items())
        )
    if "rul" in fields:
        edges = _rul_edges(cap)
        values = np.asarray([o["rul"] for o in outputs if o.get("rul") is not None], dtype=float)
        inside = (values >= edges[0]) & (values < edges[-1])
        counts = (
            np.histogram(values[inside], bins=edges)[0] if len(values) else [0] * (len(edges) - 1)
        )
        stats["rul_histogram"] = [
            {"low": lo, "high": hi, "n": int(n)}
            for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=True)
        ] + [{"low": None, "high": None, "n": int((~inside).sum())}]
    return _with_rate(stats)


def _with_rate(stats: dict[str, Any]) -> dict[str, Any]:
    if "anomalies" in stats:
        stats["anomaly_rate"] = stats["anomalies"] / stats["total"] if stats["total"] else None
    return stats


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def stats_window(
    since: datetime | None, until: datetime | None, max_days: float
) -> tuple[datetime, datetime]:
    """The window a windowed overview counts: `until` defaults to now, `since` to `until` minus
    MH_STATS_MAX_DAYS; a wider window is refused (InputError naming the setting)."""
    end = _utc(until) or datetime.now(UTC)
    start = _utc(since) or end - timedelta(days=max_days)
    if end - start > timedelta(days=max_days):
        raise InputError(
            f"since: the window {start.isoformat()} .. {end.isoformat()} is wider than "
            f"{max_days:g} days (MH_STATS_MAX_DAYS); ask for a narrower window, or send neither "
            "since nor until for the all-time counts"
        )
    return start, end


@router.get("/stats/overview")
async def read_overview(
    db: DbDep,
    state: StateDep,
    _: Reader,
    since: ClientDatetime | None = None,
    until: ClientDatetime | None = None,
    bucket: Literal["hour", "day"] = "hour",
) -> dict[str, Any]:
    """Per domain: counts over time, labels, anomaly rate / RUL histogram; archive health.

    Without since/until: all-time counts (from the archive counters). With either: the window's
    counts, at most MH_STATS_MAX_DAYS wide (until defaults to now, since to until minus that).
    """
    settings = state.settings
    cap = settings.rul_cap
    if since is not None or until is not None:
        since, until = stats_window(since, until, settings.stats_max_days)
    domains = {}
    for name, domain in state.scorer.domains.items():
        if since is None and until is None:
            domains[name] = await _domain_stats(db, domain, bucket, cap)
        else:
            domains[name] = await _window_stats(
                db, domain, bucket, cap, since, until, settings.stats_max_rows
            )
    served = {}
    for name in state.holder.domains:
        loaded = state.holder.loaded(name)
        served[name] = loaded.info() if loaded else None
    return {
        "since": since,
        "until": until,
        "bucket": bucket,
        "domains": domains,
        "served": served,
        "archive": {
            "store": await _store_status(db),
            "spool_depth": state.writer.spool.depth,
            "replica": state.settings.replica_name,
        },
    }


@router.get("/projection/{domain}")
async def read_projection(
    domain: Annotated[str, Path(max_length=32, pattern=r"^[a-z_]+$")],
    db: DbDep,
    state: StateDep,
    _: Reader,
    since: ClientDatetime | None = None,
    until: ClientDatetime | None = None,
    model_version: Annotated[str | None, Query(max_length=16, pattern=r"^[0-9]+$")] = None,
    limit: Annotated[int, Query(ge=3, le=1000)] = 300,
) -> dict[str, Any]:
    """PCA of the newest archived predictions' feature vectors, with predictions and labels."""
    if domain not in state.scorer.domains:
        raise NotFound(f"unknown domain {domain!r}")
    records = await find_predictions(
        db, domain=domain, model_version=model_version, since=since, until=until, limit=limit
    )
    loaded = state.holder.loaded(domain)
    bundle = loaded.bundle if loaded else None
    return await asyncio.to_thread(
        projection.project, state.scorer.domains[domain], records, bundle
    )

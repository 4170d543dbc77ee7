"""Pre-aggregated counters of archived predictions: the all-time overview in O(1) of the archive.

One document per (domain, UTC hour) in `archive_counters`, and one per domain for all time
(`_id` "<domain>/all", the same fields under `all_of` instead of `domain` and `hour`), both
updated in one round trip by the archive writer after each insert (`count_inserted`), by the
label routes (`count_labels`) and by a purge (`count_removed`). The overview reads the domain's
all-time document and the `n` of its hour documents (`overview`; a year is 8760 small ones):
its cost follows the assets and hours, not the predictions. `rebuild` recomputes every counter
from the archive once (archives written before counters).

    _id        "<domain>/<YYYY-MM-DDTHH>"
    domain     str
    hour       "YYYY-MM-DDTHH" (UTC; a string: the embedded store `$set`s datetimes as text)
    n          predictions archived in the hour
    labelled   of them, with a label
    anomalies  of them, with `output.is_anomaly` true
    mv_<v>     per model version          asset_<a>   per asset (distinct assets: `assets`)
    fault_<c>  per `output.fault_class`   label_<c>   per class label (numeric labels: only
    rul_<k>    per predicted RUL in the 1-cycle bin [k, k+1)           `labelled`)

Field names are FLAT (nx-27017 0.8.1 stores a dotted `$inc` path of an upserting update as a
literal "a.b" key), so a value's "%", "." and "$" are percent-encoded (`_field`). RUL bins are
whole cycles: a histogram over any whole-cycle edges (the overview's are multiples of 10) is
their exact sum; a prediction without a finite RUL, or outside the edges, is "other".

Counters are best effort: the writers swallow (log and count in
`machine_health_archive_failures_total{reason="counters"}`) any failure, which never fails a
prediction or a label; `rebuild` repairs them.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

from machine_health import telemetry
from machine_health.archive.client import PREDICTIONS
from machine_health.errors import InputError, StoreError

logger = logging.getLogger(__name__)

COUNTERS = "archive_counters"
DUPLICATE_KEY = 11000
RUL_BIN = 1  # cycles: the width of the stored RUL bins
_MV, _ASSET, _FAULT, _LABEL, _RUL = "mv_", "asset_", "fault_", "label_", "rul_"
_BUCKETS = {"hour": lambda h: f"{h}:00:00Z", "day": lambda h: f"{h[:10]}T00:00:00Z"}


def _field(prefix: str, value: Any) -> str:
    text = "none" if value is None else str(value)
    return prefix + text.replace("%", "%25").replace(".", "%2E").replace("$", "%24")


def _hour(created_at: datetime) -> str:
    moment = created_at.replace(tzinfo=UTC) if created_at.tzinfo is None else created_at
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H")


def _class_label(label: Any) -> bool:
    """A label counted per value (a fault class), not a number (a true RUL)."""
    return isinstance(label, str)


def _increments(doc: dict[str, Any]) -> Counter[str]:
    """What one archived prediction adds to its hour's counters."""
    inc: Counter[str] = Counter(n=1)
    inc[_field(_MV, doc.get("model_version"))] += 1
    inc[_field(_ASSET, doc.get("asset_id"))] += 1
    output = doc.get("output") or {}
    if "fault_class" in output or "is_anomaly" in output:
        inc[_field(_FAULT, output.get("fault_class"))] += 1
        inc["anomalies"] += bool(output.get("is_anomaly"))
    rul = output.get("rul")
    if isinstance(rul, int | float) and math.isfinite(rul):
        inc[f"{_RUL}{math.floor(rul / RUL_BIN) * RUL_BIN}"] += 1
    inc.update(_label_change(None, doc.get("label")))
    return inc


def _label_change(old: Any, new: Any) -> Counter[str]:
    inc: Counter[str] = Counter()
    if old == new:
        return inc
    inc["labelled"] += (new is not None) - (old is not None)
    if _class_label(old):
        inc[_field(_LABEL, old)] -= 1
    if _class_label(new):
        inc[_field(_LABEL, new)] += 1
    return inc


def _all_time(domain: str) -> str:
    return f"{domain}/all"


async def _apply(db: AsyncDatabase, domain: str, hour: str, inc: Counter[str]) -> None:
    """Upserting `$inc`s of a (domain, hour) document and of the domain's all-time document, in
    one round trip (retried once if a concurrent upsert inserted one of them first)."""
    inc = Counter({k: v for k, v in inc.items() if v})
    if not inc:
        return
    updates = [
        UpdateOne(
            {"_id": f"{domain}/{hour}"},
            {"$inc": dict(inc), "$set": {"domain": domain, "hour": hour}},
            upsert=True,
        ),
        UpdateOne(
            {"_id": _all_time(domain)}, {"$inc": dict(inc), "$set": {"all_of": domain}}, upsert=True
        ),
    ]
    for attempt in (1, 2):
        try:
            await db[COUNTERS].bulk_write(updates, ordered=True)
            return
        except BulkWriteError as exc:  # ordered: the updates before the failed one are done
            error = exc.details["writeErrors"][0]
            if attempt == 2 or error.get("code") != DUPLICATE_KEY:
                raise
            updates = updates[int(error["index"]) :]


def _failed(what: str, exc: Exception) -> None:
    logger.error("archive counters not updated (%s); `rebuild` repairs them", what, exc_info=exc)
    telemetry.ARCHIVE_FAILURES.labels(reason="counters").inc()


async def count_inserted(db: AsyncDatabase, docs: list[dict[str, Any]]) -> None:
    """Count archived predictions (only those really inserted, not duplicates): one update per
    distinct (domain, hour) of the batch. Never raises."""
    await _count_documents(db, docs, +1, "inserted")


async def count_removed(db: AsyncDatabase, docs: list[dict[str, Any]]) -> None:
    """Uncount deleted predictions (a unit's purged cycles), as `count_inserted` counted them.
    Never raises."""
    await _count_documents(db, docs, -1, "deleted")


async def _count_documents(
    db: AsyncDatabase, docs: list[dict[str, Any]], sign: int, what: str
) -> None:
    try:
        groups: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        for doc in docs:
            counts = _increments(doc)
            groups[str(doc["domain"]), _hour(doc["created_at"])].update(
                {key: sign * n for key, n in counts.items()}
            )
        for (domain, hour), inc in groups.items():
            await _apply(db, domain, hour, inc)
    except Exception as exc:
        _failed(f"{len(docs)} {what} predictions", exc)


async def count_labels(
    db: AsyncDatabase, domain: str, changes: list[tuple[datetime, Any, Any]]
) -> None:
    """Count label changes `(created_at of the prediction, old label, new label)`: a relabel
    moves one count from the old class to the new; `labelled` changes only from or to None.
    Numeric labels (true RUL) count in `labelled` only. Never raises."""
    try:
        groups: dict[str, Counter[str]] = defaultdict(Counter)
        for created_at, old, new in changes:
            groups[_hour(created_at)].update(_label_change(old, new))
        for hour, inc in groups.items():
            await _apply(db, str(domain), hour, inc)
    except Exception as exc:
        _failed(f"{len(changes)} {domain} label changes", exc)


def _sum(rows: list[dict[str, Any]], prefix: str) -> dict[str, int]:
    out: Counter[str] = Counter()
    for row in rows:
        for key, value in row.items():
            if key.startswith(prefix):
                out[unquote(key[len(prefix) :])] += int(value)
    return {k: v for k, v in sorted(out.items()) if v}


def _rul_histogram(rows: list[dict[str, Any]], edges: list[float], total: int) -> list[dict]:
    if any(float(e) != math.floor(e / RUL_BIN) * RUL_BIN for e in edges):
        raise InputError(f"rul_edges: whole multiples of {RUL_BIN} cycle(s), got {edges}")
    counts = [0] * (len(edges) - 1)
    for key, n in _sum(rows, _RUL).items():
        i = bisect.bisect_right(edges, int(key)) - 1
        if 0 <= i < len(counts):
            counts[i] += n
    bins = [
        {"low": float(lo), "high": float(hi), "n": n}
        for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=True)
    ]
    return [*bins, {"low": None, "high": None, "n": total - sum(counts)}]


async def overview(
    db: AsyncDatabase,
    domain: str,
    *,
    bucket: str = "hour",
    rul_edges: list[float] | None = None,
    anomalies: bool = False,
) -> dict[str, Any]:
    """A domain's all-time figures from its counters, in the shapes of GET /stats/overview:
    total, labelled, assets, over_time (ISO bucket start -> n), by_model_version; with
    `anomalies`: anomalies and by_fault_class; with `rul_edges`: rul_histogram (one row per
    `[edges[i], edges[i+1])`, then the rest as `{"low": None, "high": None}`)."""
    if bucket not in _BUCKETS:
        raise InputError(f"bucket: one of {', '.join(_BUCKETS)}")
    try:
        hours = db[COUNTERS].find({"domain": str(domain)}, {"hour": 1, "n": 1, "_id": 0})
        over_time: Counter[str] = Counter()
        async for row in hours:
            over_time[_BUCKETS[bucket](row["hour"])] += int(row.get("n", 0))
        rows = [await db[COUNTERS].find_one({"_id": _all_time(domain)}) or {}]
    except PyMongoError as exc:
        raise StoreError(f"cannot read the archive counters: {exc}") from exc
    total = int(rows[0].get("n", 0))
    stats: dict[str, Any] = {
        "total": total,
        "labelled": sum(int(row.get("labelled", 0)) for row in rows),
        "assets": len(_sum(rows, _ASSET)),
        "over_time": {k: v for k, v in sorted(over_time.items()) if v},
        "by_model_version": _sum(rows, _MV),
    }
    if anomalies:
        stats["anomalies"] = sum(int(row.get("anomalies", 0)) for row in rows)
        stats["by_fault_class"] = _sum(rows, _FAULT)
    if rul_edges is not None:
        stats["rul_histogram"] = _rul_histogram(rows, rul_edges, total)
    return stats


def rebuild(db: Database) -> int:
    """Recompute every counter from the archive (one full read; idempotent: the counters are
    replaced, hours no longer in the archive removed). Returns the predictions counted."""
    groups: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    fields = {"domain": 1, "created_at": 1, "asset_id": 1, "model_version": 1, "label": 1}
    read = 0
    try:
        for doc in db[PREDICTIONS].find({}, {**fields, "output": 1, "_id": 0}).batch_size(5000):
            groups[str(doc["domain"]), _hour(doc["created_at"])].update(_increments(doc))
            read += 1
        totals: dict[str, Counter[str]] = defaultdict(Counter)
        for (domain, hour), inc in groups.items():
            totals[domain].update(inc)
            _replace(db, f"{domain}/{hour}", inc, {"domain": domain, "hour": hour})
        for domain, inc in totals.items():
            _replace(db, _all_time(domain), inc, {"all_of": domain})
        kept = {f"{domain}/{hour}" for domain, hour in groups} | {_all_time(d) for d in totals}
        stale = [r["_id"] for r in db[COUNTERS].find({}, {"_id": 1}) if r["_id"] not in kept]
        if stale:
            db[COUNTERS].delete_many({"_id": {"$in": stale}})
    except PyMongoError as exc:
        raise StoreError(f"cannot rebuild the archive counters: {exc}") from exc
    return read


def _replace(db: Database, key: str, inc: Counter[str], fields: dict[str, str]) -> None:
    # `_id` in the body too: nx-27017 gives an upserted replacement an ObjectId `_id` unless
    # the replacement names one
    body = {"_id": key, **{k: v for k, v in inc.items() if v}, **fields}
    db[COUNTERS].replace_one({"_id": key}, body, upsert=True)

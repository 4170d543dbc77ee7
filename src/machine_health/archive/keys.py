"""Sort keys of archived predictions: one indexed string per access path, so every serving-path
and pipeline read is a range on ONE indexed field.

Why strings built by hand instead of compound indexes: the embedded store (nx-27017 0.8.1)
serves a range with a sort on one indexed field in a few ms at any archive size (an SQLite
index walk), but scans the collection for a compound index with a sort, an `$or`, an `$in`
off `_id`, a datetime range, or an equality that matches many documents (measured at 200 k
documents: ~3-7 ms vs 350-4300 ms; `python -m bench scale` and tests/integration/
test_archive_scale.py). On MongoDB the same ranges use the same single-field indexes.

    domain_time_key  "<domain>/<created ms, 13 digits>/<prediction_id>"   listing, drift, stats
    asset_time_key   "<domain>/<asset_id>/<created ms>/<prediction_id>"   listing by asset
    cycle_key        "<domain>/<asset_id>/<cycle, 10 digits>"             a unit's history
    label_key        "<domain>/<labelled ms>/<prediction_id>"             incremental extract

`/` cannot occur in a domain or an asset id (both are validated against `[A-Za-z0-9_.:-]`) and
sorts below every character they may hold, so a prefix plus `/` bounds exactly one domain or
one unit. Numbers are zero-padded so text order is number order; `~` sorts above every
character a key holds, so `prefix + "~"` is the end of a prefix's range.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

SEP = "/"
END = "~"
MS_DIGITS = 13  # milliseconds since 1970 fit 13 digits until the year 2286
CYCLE_DIGITS = 10

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: the key fields, each with a single-field index (archive/client.py)
KEY_FIELDS = ("domain_time_key", "asset_time_key", "cycle_key", "label_key")


def epoch_ms(moment: datetime) -> int:
    """Whole milliseconds since 1970 (a naive time is UTC, as pymongo reads it)."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def ms_text(ms: int) -> str:
    return f"{max(int(ms), 0):0{MS_DIGITS}d}"


def time_part(created_at: datetime, prediction_id: str) -> str:
    """`<ms>/<prediction_id>`: the order of predictions within a domain or an asset."""
    return f"{ms_text(epoch_ms(created_at))}{SEP}{prediction_id}"


def domain_prefix(domain: str) -> str:
    return f"{domain}{SEP}"


def asset_prefix(domain: str, asset_id: str) -> str:
    return f"{domain}{SEP}{asset_id}{SEP}"


def cycle_key(domain: str, asset_id: str, cycle: int) -> str:
    return f"{asset_prefix(domain, asset_id)}{int(cycle):0{CYCLE_DIGITS}d}"


def label_key(domain: str, labelled_ms: int, prediction_id: str) -> str:
    return f"{domain_prefix(domain)}{ms_text(labelled_ms)}{SEP}{prediction_id}"


def record_keys(doc: dict[str, Any]) -> dict[str, str]:
    """The sort keys of an archived prediction document (cycle_key only with a cycle, label_key
    only with a label and its time)."""
    domain, asset = str(doc["domain"]), str(doc["asset_id"])
    part = time_part(doc["created_at"], str(doc["prediction_id"]))
    keys = {
        "domain_time_key": domain_prefix(domain) + part,
        "asset_time_key": asset_prefix(domain, asset) + part,
    }
    if doc.get("cycle") is not None:
        keys["cycle_key"] = cycle_key(domain, asset, int(doc["cycle"]))
    labelled = doc.get("labelled_at")
    if doc.get("label") is not None and isinstance(labelled, datetime):  # imported with a label
        keys["label_key"] = label_key(domain, epoch_ms(labelled), str(doc["prediction_id"]))
    return keys


def prefix_range(prefix: str) -> dict[str, str]:
    """Every key that starts with `prefix`."""
    return {"$gt": prefix, "$lt": prefix + END}


def time_range(
    prefix: str, since: datetime | None = None, until: datetime | None = None
) -> dict[str, str]:
    """Keys under `prefix` (a domain or an asset prefix) created in `[since, until)`, to the ms."""
    low = prefix + ms_text(epoch_ms(since)) if since is not None else prefix
    high = prefix + ms_text(epoch_ms(until)) if until is not None else prefix + END
    return {"$gte": low, "$lt": high}


def with_keys(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` (an archived prediction) given its `_id` and sort keys where it lacks them (a
    record spooled or archived by an earlier version); changed in place and returned."""
    whole = all(doc.get(f) is not None for f in ("domain", "asset_id", "prediction_id"))
    if whole and "domain_time_key" not in doc and isinstance(doc.get("created_at"), datetime):
        doc.update(record_keys(doc))
    if doc.get("prediction_id") is not None:
        doc.setdefault("_id", str(doc["prediction_id"]))
    return doc

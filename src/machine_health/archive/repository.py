"""Names of the archive's queries for the callers not moved yet (cli.py, api/routes/archive.py,
api/routes/stats.py): each lives in the module of its concern — `archive.predictions`,
`archive.labels`, `archive.stats`, `archive.audit`. New code imports those; this module goes
once the three callers do.
"""

from __future__ import annotations

from machine_health.archive.audit import audit_entry, record_audit, record_audit_sync
from machine_health.archive.labels import backfill_failure, set_label
from machine_health.archive.predictions import (
    find_predictions,
    get_prediction,
    purge_unit_cycles,
    purge_unit_cycles_sync,
)
from machine_health.archive.stats import (
    count_archived,
    count_by,
    count_by_time,
    rul_histogram,
    window_rows,
)

__all__ = [
    "audit_entry",
    "backfill_failure",
    "count_archived",
    "count_by",
    "count_by_time",
    "find_predictions",
    "get_prediction",
    "purge_unit_cycles",
    "purge_unit_cycles_sync",
    "record_audit",
    "record_audit_sync",
    "rul_histogram",
    "set_label",
    "window_rows",
]

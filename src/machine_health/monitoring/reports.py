"""What the drift and live-performance runs read and write in the archive, under the names they
call (`monitoring/drift.py`, `monitoring/performance.py`).

No query is built here: the reports live in `archive.reports`, the predictions they read in
`archive.predictions`, and `store` is the archive's `open_db`. What stays is monitoring's own
bound: how many predictions one run reads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo.database import Database

from machine_health.archive.client import open_db as store
from machine_health.archive.predictions import recent_predictions
from machine_health.archive.reports import DRIFT, PERFORMANCE, TRIGGER, latest, save

__all__ = [
    "DRIFT",
    "MAX_ROWS",
    "PERFORMANCE",
    "TRIGGER",
    "archived_predictions",
    "latest",
    "save",
    "store",
]

#: newest archived predictions a drift run reads from its window (bounds memory: a vibration
#: window is 8 kB); 5000 rows already resolve a KS distance of ~0.03.
MAX_ROWS = 5_000


def archived_predictions(
    db: Database,
    domain: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    labelled: bool = False,
    with_input: bool = True,
    limit: int = MAX_ROWS,
) -> list[dict[str, Any]]:
    """`archive.predictions.recent_predictions`, at most `MAX_ROWS` unless told otherwise."""
    return recent_predictions(
        db, domain, start=start, end=end, labelled=labelled, with_input=with_input, limit=limit
    )

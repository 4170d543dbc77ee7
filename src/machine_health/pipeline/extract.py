"""Step 1: labelled archived predictions of a domain up to the interval end -> Parquet snapshot.

The snapshot holds EVERY prediction labelled until the interval end (not only the interval's),
because a challenger trains on the base data plus all the field data known so far. Documents are
streamed from the store in batches and written batch by batch (never all in memory), in
creation order, so the same interval always gives the same file and the same sha256.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from machine_health.archive.client import open_db
from machine_health.archive.labels import count_labelled, labelled_filter, stream_labelled
from machine_health.domains import DOMAINS, get_domain
from machine_health.domains.base import Domain
from machine_health.errors import DataError
from machine_health.pipeline.steps import StepRun, step
from machine_health.pipeline.workspace import Workspace, sha256_of, write_json_atomic

logger = logging.getLogger(__name__)

SNAPSHOT = "snapshot.parquet"
MANIFEST = "snapshot.json"
BATCH_ROWS = 2000

#: the columns every domain's snapshot starts with; the domain's own follow (`snapshot_schema`)
COMMON_FIELDS = [
    pa.field("prediction_id", pa.string()),
    pa.field("asset_id", pa.string()),
    pa.field("created_at", pa.timestamp("ms", tz="UTC")),
    pa.field("labelled_at", pa.timestamp("ms", tz="UTC")),
    pa.field("model_version", pa.string()),
]


def snapshot_schema(domain: str) -> pa.Schema:
    """The snapshot's columns for `domain`: the common ones, then the domain's (ending `label`)."""
    return pa.schema([*COMMON_FIELDS, *get_domain(domain).snapshot_schema()])


def _timestamp(value: Any) -> datetime | None:
    """A stored time as a datetime. Label times written by earlier versions through `$set` on
    the embedded store were kept as text ('2026-12-01 21:43:39.722000', UTC): read them too."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None  # left empty: validate reports the row
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value if isinstance(value, datetime) else None


def _row(domain: Domain, doc: dict[str, Any]) -> dict[str, Any]:
    row = {
        "prediction_id": str(doc["prediction_id"]),
        "asset_id": str(doc.get("asset_id")),
        "created_at": _timestamp(doc.get("created_at")),
        "labelled_at": _timestamp(doc.get("labelled_at")),
        "model_version": str(doc.get("model_version")),
    }
    row.update(domain.snapshot_row(doc))
    return row


def _batches(domain: Domain, docs: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for doc in docs:
        batch.append(_row(domain, doc))
        if len(batch) >= BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def _progress() -> Progress:
    # stderr: stdout carries the step's JSON result.
    return Progress(
        TextColumn("extract"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


@step("extract")
def run(job: StepRun) -> dict[str, Any]:
    """Write `snapshot.parquet` + `snapshot.json` (query, interval, rows, sha256) for the run."""
    settings, domain, run_id, ws = job.settings, job.domain, job.run_id, job.ws
    if domain not in DOMAINS:
        raise DataError(f"no snapshot schema for domain {domain!r}")
    schema = snapshot_schema(domain)
    # Classes (text labels) are tallied in the result; numeric labels (a RUL) are not.
    count_labels = pa.types.is_string(schema.field("label").type)
    query = labelled_filter(domain, ws.interval_end)
    started = time.perf_counter()
    tmp = ws.file(f".{SNAPSHOT}.tmp")
    rows = in_interval = 0
    labels: dict[str, int] = {}
    with open_db(settings) as db:
        total = count_labelled(db, domain, ws.interval_end)
        cursor = stream_labelled(db, domain, ws.interval_end, batch_size=BATCH_ROWS)
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer, _progress() as bar:
            task = bar.add_task("extract", total=total)
            for batch in _batches(get_domain(domain), cursor):
                table = pa.Table.from_pylist(batch, schema=schema)
                writer.write_table(table)
                rows += len(batch)
                in_interval += sum(
                    1 for r in batch if r["labelled_at"] and r["labelled_at"] > ws.interval_start
                )
                if count_labels:
                    for r in batch:
                        labels[r["label"]] = labels.get(r["label"], 0) + 1
                bar.update(task, advance=len(batch))
    snapshot = ws.file(SNAPSHOT)
    tmp.replace(snapshot)
    seconds = time.perf_counter() - started
    digest = sha256_of(snapshot)
    manifest = {
        "domain": domain,
        "run_id": run_id,
        "interval": ws.interval,
        "query": _jsonable(query),
        "rows": rows,
        "rows_labelled_in_interval": in_interval,
        "sha256": digest,
        "file": SNAPSHOT,
        "schema": schema.names,
    }
    write_json_atomic(ws.file(MANIFEST), manifest)
    return {
        "snapshot": str(snapshot),
        "rows": rows,
        "rows_labelled_in_interval": in_interval,
        "sha256": digest,
        "seconds": round(seconds, 3),
        "docs_per_s": round(rows / seconds, 1) if seconds > 0 else None,
        **({"labels": labels} if labels else {}),
    }


def _jsonable(query: dict[str, Any]) -> dict[str, Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, datetime):
            return value.isoformat()
        return value

    return convert(query)


#: the rows the validate step quarantined (every id and reason), in the run's workspace
QUARANTINE_FILE = "quarantine.json"


def quarantined_ids(ws: Workspace) -> set[str]:
    """The prediction ids the run's validate step quarantined (empty before it ran)."""
    path = ws.file(QUARANTINE_FILE)
    if not path.exists():
        return set()
    return {row["prediction_id"] for row in json.loads(path.read_text())["rows"]}


def read_snapshot(ws: Workspace, *, validated: bool = True) -> pa.Table:
    """The run's snapshot (DataError when extract did not write it), without the rows the
    validate step quarantined unless `validated` is False (all of them, as extracted)."""
    path = ws.file(SNAPSHOT)
    if not path.exists():
        raise DataError(f"{path}: no snapshot (run the extract step first)")
    table = pq.read_table(path)
    bad = quarantined_ids(ws) if validated else set()
    if not bad:
        return table
    ids = table.column("prediction_id")
    return table.filter(pc.invert(pc.is_in(ids, value_set=pa.array(sorted(bad)))))

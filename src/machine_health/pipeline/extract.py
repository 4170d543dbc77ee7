"""Step 1: labelled archived predictions of a domain up to the interval end -> Parquet snapshot.

The snapshot holds EVERY prediction labelled until the interval end (not only the interval's),
because a challenger trains on the base data plus all the field data known so far: the rows of
the domain whose label time (the time in `label_key`, archive/keys.py) is at or before the
interval end, each with its current label, in creation order (ties by id), so the same interval
gives the same file and the same sha256 however it was built.

Incremental: a checkpoint per domain (pipeline/checkpoint.py) records the last extracted
interval end (the watermark) and a cumulative snapshot of the rows labelled up to it. A run of a
later interval reads that snapshot and streams from the store only the rows whose label time is
in (watermark - OVERLAP, interval end]: an index walk on `label_key`, proportional to the new
labels, not to the archive. A streamed row replaces the cumulative row of the same prediction
(it is the document's current label: a relabel), and so does a row relabelled AFTER the
interval end: it leaves the snapshot, because the store keeps only a prediction's current label
and a full extract of the interval could not show the earlier one either (the row comes back in
the first interval that ends after its new label time). The run's snapshot then becomes the new
cumulative one and the checkpoint moves to the interval end.

Full (as before the checkpoint): no checkpoint yet, its file missing or not the recorded one,
the snapshot columns changed, predictions purged since it was taken (audited purges), or a run
for an interval that ends before the watermark (a backfill or a rerun of an older interval: it
never moves the checkpoint back).

Neither mode can see a label the store no longer has (the earlier label of a relabelled row)
nor a row whose label key was given a time before the watermark after the checkpoint was taken
(a migration): reset the checkpoint then (`checkpoint.reset`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from machine_health.archive.client import open_db
from machine_health.archive.keys import SEP
from machine_health.archive.labels import count_labelled, labelled_filter, stream_labelled_range
from machine_health.domains import DOMAINS, get_domain
from machine_health.domains.base import Domain
from machine_health.errors import DataError
from machine_health.pipeline import checkpoint
from machine_health.pipeline.checkpoint import OVERLAP
from machine_health.pipeline.steps import StepRun, step
from machine_health.pipeline.workspace import Workspace, sha256_of, write_json_atomic

logger = logging.getLogger(__name__)

SNAPSHOT = "snapshot.parquet"
MANIFEST = "snapshot.json"
BATCH_ROWS = 2000

#: the end of "every label time after the interval end" (label keys hold 13-digit ms)
_FAR_FUTURE = datetime(2200, 1, 1, tzinfo=UTC)

#: the columns every domain's snapshot starts with; the domain's own follow (`snapshot_schema`)
COMMON_FIELDS = [
    pa.field("prediction_id", pa.string()),
    pa.field("asset_id", pa.string()),
    pa.field("created_at", pa.timestamp("ms", tz="UTC")),
    pa.field("labelled_at", pa.timestamp("ms", tz="UTC")),
    pa.field("model_version", pa.string()),
]

#: the snapshot's row order
ORDER = [("created_at", "ascending"), ("prediction_id", "ascending")]


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


def _key_time(doc: dict[str, Any]) -> datetime | None:
    """The label time of a document's `label_key` ("<domain>/<ms>/<prediction_id>")."""
    parts = str(doc.get("label_key") or "").split(SEP)
    if len(parts) < 3 or not parts[1].isdigit():
        return None
    return datetime.fromtimestamp(int(parts[1]) / 1000, tz=UTC)


def _row(domain: Domain, doc: dict[str, Any]) -> dict[str, Any]:
    row = {
        "prediction_id": str(doc["prediction_id"]),
        "asset_id": str(doc.get("asset_id")),
        "created_at": _timestamp(doc.get("created_at")),
        # the store's time of the label; the key's time when a document has none
        "labelled_at": _timestamp(doc.get("labelled_at")) or _key_time(doc),
        "model_version": str(doc.get("model_version")),
    }
    row.update(domain.snapshot_row(doc))
    return row


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


class _Streamed:
    """The rows read from the store, as Arrow batches, and every id read (with or without a
    label: a document read without one drops its cumulative row too)."""

    def __init__(self) -> None:
        self.batches: list[pa.RecordBatch] = []
        self.ids: set[str] = set()
        self.docs = 0

    def read(
        self,
        domain: Domain,
        schema: pa.Schema,
        docs: Iterable[dict[str, Any]],
        advance: Any = None,
    ) -> None:
        batch: list[dict[str, Any]] = []
        for doc in docs:
            self.docs += 1
            self.ids.add(str(doc["prediction_id"]))
            if doc.get("label") is not None:
                batch.append(_row(domain, doc))
            if len(batch) >= BATCH_ROWS:
                self._add(batch, schema, advance)
                batch = []
        if batch:
            self._add(batch, schema, advance)

    def _add(self, rows: list[dict[str, Any]], schema: pa.Schema, advance: Any) -> None:
        self.batches.extend(pa.Table.from_pylist(rows, schema=schema).to_batches())
        if advance is not None:
            advance(len(rows))


def _last_occurrences(ids: list[str]) -> np.ndarray:
    """A mask keeping the last row of every id (the stream is in label_key order: the later)."""
    keep = np.ones(len(ids), dtype=bool)
    if len(set(ids)) == len(ids):
        return keep
    seen: set[str] = set()
    for i in range(len(ids) - 1, -1, -1):
        if ids[i] in seen:
            keep[i] = False
        seen.add(ids[i])
    return keep


class _Merged:
    """The snapshot's rows: the cumulative ones not read again, then the streamed ones, kept as
    the batches they came in and written in ORDER slice by slice (never one concatenated
    table: a column of windows may exceed the 2 GiB a `binary` column can hold)."""

    def __init__(
        self,
        schema: pa.Schema,
        base: pa.Table | None,
        streamed: _Streamed,
        dropped: set[str],
    ) -> None:
        base_batches = base.to_batches() if base is not None else []
        self.batches = [b for b in [*base_batches, *streamed.batches] if b.num_rows]
        sizes = [b.num_rows for b in self.batches]
        self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        table = pa.Table.from_batches(self.batches, schema=schema)
        n_base = sum(b.num_rows for b in base_batches)
        ids = table.column("prediction_id")
        base_keep = np.ones(n_base, dtype=bool)
        if n_base and dropped:
            gone = pc.is_in(ids.slice(0, n_base), value_set=pa.array(sorted(dropped), pa.string()))
            base_keep = ~np.asarray(gone.to_numpy(zero_copy_only=False), dtype=bool)
        new_keep = _last_occurrences(ids.slice(n_base).to_pylist())
        keep = np.concatenate([base_keep, new_keep])
        kept = np.flatnonzero(keep)
        self.columns = table.select(["created_at", "prediction_id", "labelled_at", "label"]).take(
            pa.array(kept, pa.int64())
        )
        order = pc.sort_indices(self.columns, sort_keys=ORDER).to_numpy()
        self.order = kept[order]

    @property
    def rows(self) -> int:
        return len(self.order)

    def labelled_after(self, moment: datetime) -> int:
        after = pc.greater(
            self.columns.column("labelled_at"), pa.scalar(moment, COMMON_FIELDS[3].type)
        )
        return int(pc.sum(pc.fill_null(after, False)).as_py() or 0)

    def label_counts(self) -> dict[str, int]:
        counts = pc.value_counts(self.columns.column("label").combine_chunks())
        return {str(c["values"]): int(c["counts"]) for c in counts.to_pylist()}

    def slices(self) -> Iterator[pa.RecordBatch]:
        for start in range(0, self.rows, BATCH_ROWS):
            yield self._gather(self.order[start : start + BATCH_ROWS])

    def _gather(self, index: np.ndarray) -> pa.RecordBatch:
        chunk = np.searchsorted(self.starts, index, side="right") - 1
        local = index - self.starts[chunk]
        pieces, positions = [], []
        for c in np.unique(chunk):
            where = np.flatnonzero(chunk == c)
            pieces.append(self.batches[c].take(pa.array(local[where], pa.int64())))
            positions.append(where)
        part = pa.Table.from_batches(pieces).combine_chunks()
        back = np.argsort(np.concatenate(positions), kind="stable")
        return part.take(pa.array(back, pa.int64())).to_batches()[0]


@step("extract")
def run(job: StepRun) -> dict[str, Any]:
    """Write `snapshot.parquet` + `snapshot.json` (query, interval, rows, sha256) for the run,
    incrementally from the domain's checkpoint when it allows (see the module docstring)."""
    settings, domain, run_id, ws = job.settings, job.domain, job.run_id, job.ws
    if domain not in DOMAINS:
        raise DataError(f"no snapshot schema for domain {domain!r}")
    schema = snapshot_schema(domain)
    until = ws.interval_end
    # Classes (text labels) are tallied in the result; numeric labels (a RUL) are not.
    count_labels = pa.types.is_string(schema.field("label").type)
    started = time.perf_counter()
    tmp = ws.file(f".{SNAPSHOT}.tmp")
    snapshot = ws.file(SNAPSHOT)
    streamed = _Streamed()
    later: set[str] = set()
    with open_db(settings) as db:
        previous = checkpoint.load(db, domain)
        base, since, fallback = _base(db, domain, schema, previous, until)
        read_at = datetime.now(UTC)
        total = count_labelled(db, domain, until, since=since)
        # the temporary file is open (no footer) from the first read to the rename
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            with _progress() as bar:
                task = bar.add_task("extract", total=total)
                docs = stream_labelled_range(db, domain, until, since=since, batch_size=BATCH_ROWS)
                streamed.read(
                    get_domain(domain), schema, docs, lambda n: bar.update(task, advance=n)
                )
            if base is not None:
                # rows relabelled after the interval end: their label as of it is gone
                after = stream_labelled_range(
                    db, domain, _FAR_FUTURE, since=until, batch_size=BATCH_ROWS
                )
                later = {str(d["prediction_id"]) for d in after}
            merged = _Merged(schema, base, streamed, streamed.ids | later)
            for batch in merged.slices():
                writer.write_batch(batch)
        tmp.replace(snapshot)
        digest = sha256_of(snapshot)
        moved = _move(db, job, schema, previous, snapshot, digest, merged.rows, read_at)
    seconds = time.perf_counter() - started
    rows = merged.rows
    in_interval = merged.labelled_after(ws.interval_start)
    labels = merged.label_counts() if count_labels and rows else {}
    mode = "full" if base is None else "incremental"
    used = previous.brief() if base is not None and previous is not None else None
    read = {"since": since.isoformat() if since else None, "until": until.isoformat()}
    manifest = {
        "domain": domain,
        "run_id": run_id,
        "interval": ws.interval,
        "query": _jsonable(labelled_filter(domain, until)),
        "rows": rows,
        "rows_labelled_in_interval": in_interval,
        "sha256": digest,
        "file": SNAPSHOT,
        "schema": schema.names,
        "mode": mode,
        "read": read,
        "new_rows": streamed.docs,
        "checkpoint": used,
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
        "mode": mode,
        # documents read from the store: labelled in the range read; labelled (or relabelled)
        # after the interval end (their rows leave the cumulative snapshot)
        "new_rows": streamed.docs,
        "labelled_after_end": len(later),
        "read": read,
        "checkpoint": used,
        **({"full_because": fallback} if fallback else {}),
        "checkpoint_moved": moved.brief() if moved is not None else None,
    }


def _base(
    db: Any,
    domain: str,
    schema: pa.Schema,
    previous: checkpoint.Checkpoint | None,
    until: datetime,
) -> tuple[pa.Table | None, datetime | None, str]:
    """The cumulative table to build on and the label time to read from, or (None, None, why
    the extract is a full one)."""
    if previous is None:
        return None, None, "no checkpoint"
    if previous.watermark > until:
        return None, None, f"interval ends before the checkpoint ({previous.watermark.isoformat()})"
    base, why = checkpoint.read_cumulative(previous, schema)
    if base is None:
        logger.warning("%s extract: full, %s", domain, why)
        return None, None, why
    purged = checkpoint.purged_since(db, domain, previous.read_at)
    if purged:
        return None, None, f"{purged} prediction(s) purged since the checkpoint"
    return base, previous.watermark - OVERLAP, ""


def _move(
    db: Any,
    job: StepRun,
    schema: pa.Schema,
    previous: checkpoint.Checkpoint | None,
    snapshot: Path,
    digest: str,
    rows: int,
    read_at: datetime,
) -> checkpoint.Checkpoint | None:
    """Keep the run's snapshot as the cumulative one and move the checkpoint to the interval
    end, unless it stands later (a backfill leaves it). A checkpoint at the same interval end
    is replaced: a rerun repairs one whose file went missing."""
    until = job.ws.interval_end
    if previous is not None and previous.watermark > until:
        return None
    path = checkpoint.store_cumulative(job.settings, job.domain, snapshot, digest)
    moved = checkpoint.make(job.domain, until, path, digest, rows, job.run_id, read_at)
    if not checkpoint.move(db, moved, schema):
        return None
    keep = {path} | ({Path(previous.path)} if previous is not None else set())
    checkpoint.prune(job.settings, job.domain, keep)
    return moved


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

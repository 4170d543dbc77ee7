"""The extract step's checkpoint: per domain, the last extracted interval end (the watermark)
and the cumulative snapshot of every row labelled up to it, so that the next run reads from
the store only the rows labelled since.

    extract_checkpoints  {_id: <domain>, watermark_ms, watermark (ISO), path, sha256, rows,
                          run_id, read_at_ms, read_at (ISO), format, schema, updated_at}

The cumulative snapshots live beside the runs, `<var>/runs/<domain>/_cumulative/<sha256>.parquet`
(a run id never names `_cumulative`: `safe_run_id` strips leading underscores). A file is named
by its content and never rewritten: a run that still reads the previous one is not disturbed,
and the checkpoint moves to a new file by a conditional replace that never moves it backwards.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from machine_health.archive.audit import AUDIT
from machine_health.archive.keys import epoch_ms
from machine_health.config import Settings
from machine_health.errors import StoreError
from machine_health.pipeline.workspace import sha256_of

logger = logging.getLogger(__name__)

CHECKPOINTS = "extract_checkpoints"
CUMULATIVE_DIR = "_cumulative"

#: bump when the meaning of a cumulative snapshot changes: every older checkpoint then gives a
#: full extract (as does a change of the domain's snapshot columns, checked on read)
FORMAT = 1

#: How far before the watermark an incremental extract reads again. A label's key time is the
#: labelling API replica's clock, replica clocks differ, and a label may be written (committed)
#: a moment after its key time, so a row whose key is just before the watermark may not have
#: been visible to the previous extract. Re-reading this margin and de-duplicating by
#: prediction_id (the row read now, i.e. the document's current label, replaces the cumulative
#: one: it carries the later label_key, which also applies relabels) loses nothing, as long as
#: clocks differ and writes lag by less than this.
OVERLAP = timedelta(minutes=10)

#: cumulative files no checkpoint names are removed once older than this (a run that read the
#: checkpoint just before it moved opens the previous file within seconds)
KEEP_UNREFERENCED = timedelta(days=1)


@dataclass(frozen=True)
class Checkpoint:
    """Where the last extract of a domain left off."""

    domain: str
    watermark_ms: int
    path: str
    sha256: str
    rows: int
    run_id: str
    read_at_ms: int
    format: int = FORMAT

    @property
    def watermark(self) -> datetime:
        return _from_ms(self.watermark_ms)

    @property
    def read_at(self) -> datetime:
        return _from_ms(self.read_at_ms)

    def brief(self) -> dict[str, Any]:
        """What a step result records of the checkpoint it used or moved."""
        return {
            "watermark": self.watermark.isoformat(),
            "path": self.path,
            "sha256": self.sha256,
            "rows": self.rows,
            "run_id": self.run_id,
        }

    def document(self, schema: pa.Schema) -> dict[str, Any]:
        return {
            "_id": self.domain,
            **asdict(self),
            "watermark": self.watermark.isoformat(),
            "read_at": self.read_at.isoformat(),
            "schema": list(schema.names),
            "updated_at": datetime.now(UTC).isoformat(),
        }


def _from_ms(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(ms))


def load(db: Database, domain: str) -> Checkpoint | None:
    """The domain's checkpoint, or None (none yet, or one this code cannot read)."""
    try:
        doc = db[CHECKPOINTS].find_one({"_id": str(domain)})
    except PyMongoError as exc:
        raise StoreError(f"cannot read the extract checkpoint of {domain}: {exc}") from exc
    if doc is None:
        return None
    try:
        return Checkpoint(
            domain=str(doc["domain"]),
            watermark_ms=int(doc["watermark_ms"]),
            path=str(doc["path"]),
            sha256=str(doc["sha256"]),
            rows=int(doc["rows"]),
            run_id=str(doc["run_id"]),
            read_at_ms=int(doc["read_at_ms"]),
            format=int(doc.get("format", 0)),
        )
    except (KeyError, TypeError, ValueError):
        logger.warning("extract checkpoint of %s is malformed: ignored (%s)", domain, doc)
        return None


def read_cumulative(checkpoint: Checkpoint, schema: pa.Schema) -> tuple[pa.Table | None, str]:
    """The checkpoint's cumulative table, or None and why it cannot be used."""
    if checkpoint.format != FORMAT:
        return None, f"checkpoint format {checkpoint.format} is not {FORMAT}"
    path = Path(checkpoint.path)
    if not path.is_file():
        return None, f"cumulative snapshot {path} is missing"
    try:
        digest = sha256_of(path)
    except OSError as exc:
        return None, f"cumulative snapshot {path} cannot be read: {exc}"
    if digest != checkpoint.sha256:
        return None, f"cumulative snapshot {path} has sha256 {digest}, not {checkpoint.sha256}"
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        return None, f"cumulative snapshot {path} cannot be read: {exc}"
    if not table.schema.remove_metadata().equals(schema):
        return None, "the snapshot columns changed since the cumulative snapshot"
    if table.num_rows != checkpoint.rows:
        return None, f"cumulative snapshot holds {table.num_rows} rows, not {checkpoint.rows}"
    return table.replace_schema_metadata(None), ""


def purged_since(db: Database, domain: str, moment: datetime) -> int:
    """Archived predictions of `domain` deleted (`purge_unit_cycles`, audited by the API and the
    CLI) after `moment` - OVERLAP: a cumulative snapshot read before may hold deleted rows."""
    since = moment - OVERLAP
    try:
        entries = list(
            db[AUDIT].find(
                {"action": "purge_unit_cycles", "domain": str(domain)},
                {"_id": 0, "at": 1, "deleted": 1},
            )
        )
    except PyMongoError as exc:
        raise StoreError(f"cannot read the audit of {domain}: {exc}") from exc
    deleted = 0
    for entry in entries:
        at = entry.get("at")
        if isinstance(at, str):
            try:
                at = datetime.fromisoformat(at)
            except ValueError:
                at = None
        if isinstance(at, datetime) and at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        # an entry without a readable time counts: a full extract is always correct
        if not isinstance(at, datetime) or at > since:
            deleted += max(int(entry.get("deleted") or 0), 1)
    return deleted


def cumulative_dir(settings: Settings, domain: str) -> Path:
    return settings.runs_dir / domain / CUMULATIVE_DIR


def store_cumulative(settings: Settings, domain: str, snapshot: Path, digest: str) -> Path:
    """The run's snapshot kept as the domain's cumulative one, `<dir>/<sha256>.parquet`: a copy
    (not a hard link: the run's file and the domain's stay independent), made under a temporary
    name and renamed. The same content gives the same name: an existing file is the right one."""
    folder = cumulative_dir(settings, domain)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{digest}.parquet"
    if target.is_file() and sha256_of(target) == digest:
        return target
    tmp = folder / f".{digest}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    shutil.copyfile(snapshot, tmp)
    tmp.replace(target)
    return target


def move(db: Database, checkpoint: Checkpoint, schema: pa.Schema) -> bool:
    """Set the domain's checkpoint unless it already stands at a later watermark (a concurrent
    run of a newer interval moved it): True when moved."""
    doc = checkpoint.document(schema)
    try:
        result = db[CHECKPOINTS].replace_one(
            {"_id": checkpoint.domain, "watermark_ms": {"$lte": checkpoint.watermark_ms}},
            doc,
            upsert=True,
        )
    except DuplicateKeyError:
        return False  # the stored one is later: the filter missed and the upsert collided
    except PyMongoError as exc:
        raise StoreError(
            f"cannot move the extract checkpoint of {checkpoint.domain}: {exc}"
        ) from exc
    return bool(result.matched_count or result.upserted_id is not None)


def prune(settings: Settings, domain: str, keep: set[Path]) -> int:
    """Remove the domain's cumulative files outside `keep` older than KEEP_UNREFERENCED."""
    folder = cumulative_dir(settings, domain)
    if not folder.is_dir():
        return 0
    cutoff = time.time() - KEEP_UNREFERENCED.total_seconds()
    kept = {p.resolve() for p in keep}
    removed = 0
    for path in folder.iterdir():
        try:
            if path.resolve() in kept or path.stat().st_mtime > cutoff:
                continue
            path.unlink()
            removed += 1
        except OSError:
            continue
    return removed


def make(
    domain: str,
    until: datetime,
    path: Path,
    digest: str,
    rows: int,
    run_id: str,
    read_at: datetime,
) -> Checkpoint:
    return Checkpoint(
        domain=domain,
        watermark_ms=epoch_ms(until),
        path=str(path),
        sha256=digest,
        rows=rows,
        run_id=run_id,
        read_at_ms=epoch_ms(read_at),
    )


def reset(db: Database, domain: str) -> bool:
    """Forget the domain's checkpoint: its next extract is a full one (e.g. after rows were
    given label keys with past times, or the store was restored from a backup)."""
    try:
        return bool(db[CHECKPOINTS].delete_one({"_id": str(domain)}).deleted_count)
    except PyMongoError as exc:
        raise StoreError(f"cannot reset the extract checkpoint of {domain}: {exc}") from exc

"""The local spool: where archive records wait, fsync'd, while the store is down.

One append-only JSON-lines file per live API process (`spool-<replica>-<pid>.jsonl` under
`var/spool/`), held under an exclusive `flock` for the life of the process. Lines are MongoDB
Extended JSON (canonical), so bytes (a vibration window) and datetimes come back exactly as they
were. Beside each file, `<file>.offset` holds how many bytes were already replayed into the store.

A crash leaves a file whose lock died with its process: the next process (or a sibling worker)
adopts it, replays it and deletes it. Replaying a line twice is harmless: the archive's unique
`prediction_id` turns the second insert into a duplicate-key error, read as "already archived".

`Spool.find` looks a record with an Idempotency-Key up in every spool file of the folder (this
process's, adopted ones, a sibling worker's), so a retry while the store is down gets its first
answer back even after a restart. Its index is built on first use and then only reads the bytes
appended since: nothing of it runs while the store answers.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bson import json_util
from bson.json_util import JSONMode, JSONOptions

from machine_health.errors import SpoolFull, StoreError

logger = logging.getLogger(__name__)

_JSON = JSONOptions(json_mode=JSONMode.CANONICAL, tz_aware=True)
_SUFFIX = ".jsonl"
# What json_util writes for a record's top-level fields (a string value escapes its quotes, so
# user input cannot fake them); a hit is confirmed by parsing the line.
_KEYED = b'"idempotency_key": "'
_PREDICTION_ID = re.compile(rb'"prediction_id": "([^"\\]+)"')


class _KeyIndex:
    """prediction_id -> line offset of the records with an Idempotency-Key in one spool file."""

    def __init__(self) -> None:
        self.offsets: dict[bytes, int] = {}
        self.scanned = 0  # bytes of the file indexed so far (always at a line start)

    def _reset(self) -> None:
        self.offsets.clear()
        self.scanned = 0

    def find(self, path: Path, prediction_id: str) -> dict[str, Any] | None:
        """The record, or None; reads only what was appended since the last call."""
        try:
            with path.open("rb") as reader:
                if os.fstat(reader.fileno()).st_size < self.scanned:
                    self._reset()  # emptied after a replay: start again
                self._scan(reader)
                doc = self._read(reader, prediction_id)
                if doc is None and prediction_id.encode() in self.offsets:
                    self._reset()  # the file was emptied and refilled: index it again
                    self._scan(reader)
                    doc = self._read(reader, prediction_id)
                return doc
        except OSError:  # removed meanwhile (replayed and deleted by its owner)
            return None

    def _scan(self, reader: Any) -> None:
        reader.seek(self.scanned)
        for line in reader:
            if not line.endswith(b"\n"):
                break  # a line being written (or a torn tail): indexed once complete
            if _KEYED in line and (match := _PREDICTION_ID.search(line)):
                self.offsets[match.group(1)] = self.scanned
            self.scanned += len(line)

    def _read(self, reader: Any, prediction_id: str) -> dict[str, Any] | None:
        offset = self.offsets.get(prediction_id.encode())
        if offset is None:
            return None
        reader.seek(offset)
        try:
            doc = json_util.loads(reader.readline(), json_options=_JSON)
        except ValueError:
            return None
        return doc if doc.get("prediction_id") == prediction_id else None


class SpoolFile:
    """One spool file and its replay offset; thread-safe (appends and replay run in threads)."""

    def __init__(self, path: Path, handle: Any) -> None:
        self.path = path
        self._offset_path = path.with_name(path.name + ".offset")
        self._handle = handle  # opened "a+b" and flock'ed by whoever created this object
        self._lock = threading.Lock()
        self.offset = self._read_offset()
        self.pending = self._count_lines_after(self.offset)

    # --- creation ---------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path) -> SpoolFile:
        handle = path.open("a+b")
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return cls(path, handle)

    @classmethod
    def adopt(cls, path: Path) -> SpoolFile | None:
        """Take over a file left by a dead process; None while its owner still holds the lock."""
        handle = path.open("a+b")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return cls(path, handle)

    # --- writing ----------------------------------------------------------------------------
    @property
    def pending_bytes(self) -> int:
        return self.size() - self.offset

    def size(self) -> int:
        return os.fstat(self._handle.fileno()).st_size

    def append(self, docs: Iterable[dict[str, Any]], max_bytes: int) -> int:
        """Append records and fsync; refuse (SpoolFull) when they would exceed `max_bytes`."""
        lines = [json_util.dumps(doc, json_options=_JSON).encode() + b"\n" for doc in docs]
        payload = b"".join(lines)
        with self._lock:
            if self.pending_bytes + len(payload) > max_bytes:
                raise SpoolFull(
                    f"the store is unreachable and the local spool is full "
                    f"({self.pending_bytes} of {max_bytes} bytes); retry later"
                )
            try:
                self._handle.write(payload)
                self._handle.flush()
                os.fsync(self._handle.fileno())
            except OSError as exc:
                raise StoreError(f"cannot write the spool {self.path}: {exc}") from exc
            self.pending += len(lines)
        return len(lines)

    # --- replay -----------------------------------------------------------------------------
    def read(self, max_records: int) -> tuple[list[dict[str, Any]], int]:
        """The next records after the replay offset and the offset just past them.

        A torn last line (a crash in the middle of a write, never acknowledged) is left unread.
        """
        docs: list[dict[str, Any]] = []
        with self._lock, self.path.open("rb") as reader:
            reader.seek(self.offset)
            end = self.offset
            for line in reader:
                if not line.endswith(b"\n"):
                    break
                end += len(line)
                if line.strip():
                    docs.append(json_util.loads(line, json_options=_JSON))
                if len(docs) >= max_records:
                    break
        return docs, end

    def commit(self, offset: int, replayed: int) -> None:
        """Record that everything before `offset` is in the store (survives a crash)."""
        with self._lock:
            tmp = self._offset_path.with_suffix(".tmp")
            tmp.write_text(str(offset))
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
            tmp.replace(self._offset_path)
            self.offset = offset
            self.pending = max(0, self.pending - replayed)

    def reset_if_drained(self) -> bool:
        """Empty a fully replayed file (under the append lock, so no line can slip in)."""
        with self._lock:
            if self.offset < self.size():
                return False
            self._handle.truncate(0)
            os.fsync(self._handle.fileno())
            self._offset_path.unlink(missing_ok=True)
            self.offset = 0
            self.pending = 0
            return True

    def close(self, *, delete_if_empty: bool = True) -> None:
        with self._lock:
            empty = self.offset >= self.size()
            if delete_if_empty and empty:
                self.path.unlink(missing_ok=True)
                self._offset_path.unlink(missing_ok=True)
            self._handle.close()  # releases the flock

    # --- helpers ----------------------------------------------------------------------------
    def _read_offset(self) -> int:
        try:
            return int(self._offset_path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _count_lines_after(self, offset: int) -> int:
        with self.path.open("rb") as reader:
            reader.seek(offset)
            return sum(1 for line in reader if line.endswith(b"\n") and line.strip())


class Spool:
    """This process's spool file plus the files of dead processes it adopts."""

    def __init__(self, directory: Path, *, owner: str, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.owner = "".join(c if c.isalnum() or c in "-_" else "_" for c in owner)
        self.max_bytes = max_bytes
        self.own: SpoolFile | None = None
        self.adopted: list[SpoolFile] = []
        self._indexes: dict[Path, _KeyIndex] = {}
        self._find_lock = threading.Lock()

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"spool-{self.owner}-{os.getpid()}{_SUFFIX}"
        self.own = SpoolFile.create(path)
        self.adopt_orphans()

    def adopt_orphans(self) -> int:
        """Take over the files of processes that died; returns how many were adopted."""
        known = {f.path for f in self.files()}
        count = 0
        for path in sorted(self.directory.glob(f"spool-*{_SUFFIX}")):
            if path in known:
                continue
            orphan = SpoolFile.adopt(path)
            if orphan is not None:
                logger.info("adopted spool %s (%d records to replay)", path.name, orphan.pending)
                self.adopted.append(orphan)
                count += 1
        return count

    def files(self) -> list[SpoolFile]:
        """Adopted (older) files first, so replay keeps the order of the records."""
        return [*self.adopted, *([self.own] if self.own else [])]

    @property
    def depth(self) -> int:
        return sum(f.pending for f in self.files())

    def append(self, docs: list[dict[str, Any]]) -> int:
        if self.own is None:
            raise StoreError("the spool is not open")
        return self.own.append(docs, self.max_bytes)

    def find(self, prediction_id: str) -> dict[str, Any] | None:
        """The spooled record of an idempotent request, in any spool file of the folder."""
        with self._find_lock:
            paths = sorted(self.directory.glob(f"spool-*{_SUFFIX}"))
            for gone in set(self._indexes) - set(paths):
                del self._indexes[gone]
            for path in paths:
                doc = self._indexes.setdefault(path, _KeyIndex()).find(path, prediction_id)
                if doc is not None:
                    return doc
        return None

    def drop_adopted(self, spool_file: SpoolFile) -> None:
        """Forget and delete an adopted file once it is fully replayed (a torn tail included)."""
        spool_file.close(delete_if_empty=False)
        spool_file.path.unlink(missing_ok=True)
        spool_file.path.with_name(spool_file.path.name + ".offset").unlink(missing_ok=True)
        self.adopted.remove(spool_file)

    def close(self) -> None:
        for spool_file in self.files():
            spool_file.close(delete_if_empty=True)
        self.adopted.clear()
        self.own = None

"""The local spool: where archive records wait, fsync'd, while the store is down.

One append-only JSON-lines file per live API process (`spool-<replica>-<random id>.jsonl` under
`var/spool/`), held under an exclusive `flock` for the life of the process. The id is random, not
the pid: in a container the pid is always 1, and a restarted process must never append to the
file of its predecessor (a torn tail would fuse with its first record). Lines are MongoDB
Extended JSON (canonical), so bytes (a vibration window) and datetimes come back exactly as they
were. Beside each file, `<file>.offset` holds how many bytes were already replayed into the store.

An append is all or nothing: one that fails (disk full, I/O error) truncates the file back to
its size before the append, so no torn record is left for the next one to fuse with.

A crash leaves a file whose lock died with its process: the next process (or a sibling worker)
adopts it, replays it and deletes it; `adopt_orphans` takes every unlocked `spool-*.jsonl` of
the folder, whoever wrote it. Replaying a line twice is harmless: the archive's unique
`prediction_id` turns the second insert into a duplicate-key error, read as "already archived".
A line that cannot be decoded is returned apart (`Chunk.rejected`) for the dead-letter file
(`DeadLetters`, `dead-letter.jsonl` beside the spool files), never replayed and never fatal.

`Spool.find` looks a record with an Idempotency-Key up in every spool file of the folder (this
process's, adopted ones, a sibling worker's), so a retry while the store is down gets its first
answer back even after a restart. Its index is built on first use and then only reads the bytes
appended since: nothing of it runs while the store answers.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from bson import json_util
from bson.json_util import JSONMode, JSONOptions

from machine_health.errors import SpoolFull, StoreError

logger = logging.getLogger(__name__)

_JSON = JSONOptions(json_mode=JSONMode.CANONICAL, tz_aware=True)
_SUFFIX = ".jsonl"
DEAD_LETTER_NAME = "dead-letter.jsonl"
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


class Chunk(NamedTuple):
    """What one `SpoolFile.read` returns."""

    docs: list[dict[str, Any]]  # decoded records, in file order
    lines: list[bytes]  # the line each of `docs` was decoded from (for the dead-letter file)
    rejected: list[tuple[bytes, str]]  # complete lines that cannot be decoded, with the reason
    end: int  # the offset just past everything above


def _fsync_dir(directory: Path) -> None:
    """Make a rename/unlink in `directory` durable (it is a change of the directory)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolFile:
    """One spool file and its replay offset; thread-safe (appends and replay run in threads)."""

    def __init__(self, path: Path, handle: Any) -> None:
        self.path = path
        self._offset_path = path.with_name(path.name + ".offset")
        self._handle = handle  # opened "a+b" and flock'ed by whoever created this object
        self._lock = threading.Lock()
        self.offset = self._read_offset()
        if self.offset > self.size():  # cannot happen (see reset_if_drained): read it all again
            logger.warning("%s: replay offset past the end, replaying it whole", path.name)
            self.offset = 0
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
        """Append records and fsync; refuse (SpoolFull) when they would exceed `max_bytes`.

        All or nothing: a write or fsync that fails truncates the file back to its size before
        the append (no torn record stays), and the records count as not spooled.
        """
        lines = [json_util.dumps(doc, json_options=_JSON).encode() + b"\n" for doc in docs]
        payload = b"".join(lines)
        with self._lock:
            if self.pending_bytes + len(payload) > max_bytes:
                raise SpoolFull(
                    f"the store is unreachable and the local spool is full "
                    f"({self.pending_bytes} of {max_bytes} bytes); retry later"
                )
            fd = self._handle.fileno()
            before = self.size()
            if before and os.pread(fd, 1, before - 1) != b"\n":
                payload = b"\n" + payload  # a torn tail a failed truncate left: close it off
            try:
                view = memoryview(payload)
                while view:  # unbuffered: nothing of a failed append can be flushed later
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except BaseException as exc:
                self._undo_append(before)
                if isinstance(exc, OSError):
                    raise StoreError(f"cannot write the spool {self.path}: {exc}") from exc
                raise
            self.pending += len(lines)
        return len(lines)

    def _undo_append(self, size: int) -> None:
        try:
            os.ftruncate(self._handle.fileno(), size)
            os.fsync(self._handle.fileno())
        except OSError:  # the next append starts on a new line: the torn one is dead-lettered
            logger.exception("%s: cannot truncate a failed append", self.path.name)

    # --- replay -----------------------------------------------------------------------------
    def read(self, max_records: int) -> Chunk:
        """The next records after the replay offset, and the offset just past them.

        A torn last line (a crash in the middle of a write, never acknowledged) is left unread.
        A complete line that is not a record (not JSON, not a document) is returned apart in
        `rejected`: it never stops the replay.
        """
        chunk = Chunk([], [], [], self.offset)
        end = self.offset
        with self._lock, self.path.open("rb") as reader:
            reader.seek(self.offset)
            for line in reader:
                if not line.endswith(b"\n"):
                    break
                end += len(line)
                if not line.strip():
                    continue
                try:
                    doc = json_util.loads(line, json_options=_JSON)
                except Exception as exc:  # any decoding failure of one line is that line's
                    chunk.rejected.append((line, f"undecodable: {type(exc).__name__}: {exc}"))
                else:
                    if isinstance(doc, dict):
                        chunk.docs.append(doc)
                        chunk.lines.append(line)
                    else:
                        chunk.rejected.append((line, f"not a document: {type(doc).__name__}"))
                if len(chunk.docs) + len(chunk.rejected) >= max_records:
                    break
        return chunk._replace(end=end)

    def commit(self, offset: int, replayed: int) -> None:
        """Record that everything before `offset` is in the store (survives a crash)."""
        with self._lock:
            tmp = self._offset_path.with_suffix(".tmp")
            tmp.write_text(str(offset))
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
            tmp.replace(self._offset_path)
            _fsync_dir(self.path.parent)
            self.offset = offset
            self.pending = max(0, self.pending - replayed)

    def reset_if_drained(self) -> bool:
        """Empty a fully replayed file (under the append lock, so no line can slip in).

        The offset goes first, durably, then the data: a crash between the two leaves the
        whole file with no offset, which the next replay reads again from the start (every
        line a harmless duplicate). The other order would leave an empty file with a stale
        offset past its end, and records appended after it would be skipped or read from the
        middle of a line.
        """
        with self._lock:
            if self.offset < self.size():
                return False
            self._offset_path.unlink(missing_ok=True)
            _fsync_dir(self.path.parent)
            self.offset = 0
            os.ftruncate(self._handle.fileno(), 0)
            os.fsync(self._handle.fileno())
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
        """Create this process's own file (a name never used before) and adopt the orphans."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"spool-{self.owner}-{uuid.uuid4().hex}{_SUFFIX}"
        self.own = SpoolFile.create(path)
        _fsync_dir(self.directory)
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


class DeadLetters:
    """`dead-letter.jsonl` beside the spool files: spooled lines the replay cannot store.

    One JSON object per line: `at` (UTC, ISO 8601), `reason`, `source` (the spool file) and
    `line` (the spooled line as it was, MongoDB Extended JSON when it is one), so an operator
    can fix and re-import it (docs/OPERATIONS.md, "Dead-lettered archive records"). Appends are
    fsync'd under an exclusive `flock` (several processes share the file) before the replay
    commits past the line: a crash in between writes the entry twice, never loses it.
    """

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / DEAD_LETTER_NAME

    def add(self, entries: Iterable[tuple[bytes, str]], source: str) -> int:
        """Append `(line, reason)` entries of the spool file `source`, durably; how many."""
        entries = list(entries)
        at = datetime.now(UTC).isoformat(timespec="milliseconds")
        payload = b"".join(
            json.dumps(
                {
                    "at": at,
                    "reason": reason,
                    "source": source,
                    "line": line.decode("utf-8", errors="replace").rstrip("\n"),
                },
                ensure_ascii=False,
            ).encode()
            + b"\n"
            for line, reason in entries
        )
        if not payload:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        return len(entries)

    def entries(self) -> list[dict[str, Any]]:
        """Every dead-lettered entry (for tests and the runbook's checks)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

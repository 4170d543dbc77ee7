"""The local spool: where archive records wait, fsync'd, while the store is down.

One append-only JSON-lines file per live API process (`spool-<replica>-<pid>.jsonl` under
`var/spool/`), held under an exclusive `flock` for the life of the process. Lines are MongoDB
Extended JSON (canonical), so bytes (a vibration window) and datetimes come back exactly as they
were. Beside each file, `<file>.offset` holds how many bytes were already replayed into the store.

A crash leaves a file whose lock died with its process: the next process (or a sibling worker)
adopts it, replays it and deletes it. Replaying a line twice is harmless: the archive's unique
`prediction_id` turns the second insert into a duplicate-key error, read as "already archived".
"""

from __future__ import annotations

import fcntl
import logging
import os
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

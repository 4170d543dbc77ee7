"""Backup and restore of the embedded store's files (local mode; a cluster uses mongodump).

nx-27017 keeps one SQLite file per database under its data dir (`var/store/<db>.db`), in WAL
mode: recent writes live in `<db>.db-wal` until SQLite checkpoints them, and nx-27017 does not
checkpoint at shutdown. Copying `<db>.db` alone can therefore lose acknowledged records. So:

- `backup` uses SQLite's online backup API on every database file: a consistent snapshot that
  includes the WAL, taken while the store keeps serving (WAL readers do not block writers);
  each copy is checked with `PRAGMA integrity_check` and listed with its sha256 in a manifest;
- `restore` refuses while a store answers on the configured address, checks the snapshot, moves
  the current files aside (never deletes them) and copies the snapshot in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from machine_health import embedded_store
from machine_health.errors import StoreError

logger = logging.getLogger(__name__)

MANIFEST = "backup-manifest.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check(path: Path) -> None:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        verdict = con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()
    if verdict != "ok":
        raise StoreError(f"{path}: integrity check failed ({verdict})")


def backup(data_dir: Path, dest: Path) -> dict[str, Any]:
    """Snapshot every database file of `data_dir` into the new directory `dest`."""
    sources = sorted(Path(data_dir).glob("*.db"))
    if not sources:
        raise StoreError(f"no database files (*.db) under {data_dir}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=False)
    files = []
    for source in sources:
        target = dest / source.name
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # page by page, through the WAL: a consistent point in time
        finally:
            dst.close()
            src.close()
        _check(target)
        files.append({"name": source.name, "bytes": target.stat().st_size,
                      "sha256": _sha256(target)})  # fmt: skip
    manifest = {"created_at": datetime.now(UTC).isoformat(), "source": str(data_dir),
                "files": files}  # fmt: skip
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2))
    logger.info("backed up %d database files from %s to %s", len(files), data_dir, dest)
    return manifest


def restore(backup_dir: Path, data_dir: Path, store_uri: str) -> dict[str, Any]:
    """Replace the store's files by a snapshot; the store must be stopped. Returns what moved."""
    backup_dir, data_dir = Path(backup_dir), Path(data_dir)
    if embedded_store.ping(store_uri, 0.5):
        raise StoreError(f"a store answers on {store_uri}: stop it before restoring")
    manifest = json.loads((backup_dir / MANIFEST).read_text())
    for entry in manifest["files"]:
        path = backup_dir / entry["name"]
        if _sha256(path) != entry["sha256"]:
            raise StoreError(f"{path}: sha256 differs from the backup manifest")
        _check(path)
    moved_to = None
    if data_dir.exists() and any(data_dir.iterdir()):
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        moved_to = data_dir.with_name(f"{data_dir.name}.before-restore-{stamp}")
        data_dir.rename(moved_to)
    data_dir.mkdir(parents=True, exist_ok=True)
    for entry in manifest["files"]:
        shutil.copy2(backup_dir / entry["name"], data_dir / entry["name"])
    logger.info("restored %d database files into %s", len(manifest["files"]), data_dir)
    return {"restored": [e["name"] for e in manifest["files"]],
            "previous_files": str(moved_to) if moved_to else None}  # fmt: skip

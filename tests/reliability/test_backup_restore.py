"""The runbook's local backup and restore, for real: an online snapshot under writes, a restore.

A file-backed nx-27017 receives a steady stream of inserts (one writer, increasing `seq`) while
the snapshot is taken; the snapshot must be one point in time (exactly seq 0..K-1, nothing torn),
the restore must bring back exactly that, with the unique index still enforced.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest
from pymongo import ASCENDING, MongoClient
from pymongo.errors import DuplicateKeyError

from machine_health import store_backup
from machine_health.errors import StoreError
from tests.support.cli import run_cli
from tests.support.store import Store


def _writer(uri: str, stop: threading.Event, start: int) -> None:
    client: MongoClient = MongoClient(uri)
    coll = client["mh"]["predictions"]
    seq = start
    while not stop.is_set():
        coll.insert_many([{"prediction_id": f"p{seq + i}", "seq": seq + i} for i in range(20)])
        seq += 20
    client.close()


def _seqs(uri: str) -> list[int]:
    client: MongoClient = MongoClient(uri)
    try:
        return sorted(d["seq"] for d in client["mh"]["predictions"].find({}, {"seq": 1}))
    finally:
        client.close()


def test_online_backup_and_restore_of_the_embedded_store(tmp_path: Path) -> None:
    store = Store(tmp_path).start()
    try:
        client: MongoClient = MongoClient(store.uri)
        coll = client["mh"]["predictions"]
        coll.create_index([("prediction_id", ASCENDING)], unique=True)
        coll.insert_many([{"prediction_id": f"p{i}", "seq": i} for i in range(2000)])
        client.close()
        # the WAL holds recent writes: a copy of the *.db files alone would miss them
        assert (store.data_dir / "mh.db-wal").stat().st_size > 0

        stop = threading.Event()
        writer = threading.Thread(target=_writer, args=(store.uri, stop, 2000))
        writer.start()
        try:
            manifest = store_backup.backup(store.data_dir, tmp_path / "backup")
        finally:
            stop.set()
            writer.join(30)
        after_backup = _seqs(store.uri)
        assert {f["name"] for f in manifest["files"]} >= {"mh.db"}
        with pytest.raises(StoreError, match="stop it"):
            store_backup.restore(tmp_path / "backup", store.data_dir, store.uri)
    finally:
        store.kill()  # as after a crash: the restore must not depend on a clean shutdown

    result = store_backup.restore(tmp_path / "backup", store.data_dir, store.uri)
    assert "mh.db" in result["restored"] and result["previous_files"]
    store.start()
    try:
        restored = _seqs(store.uri)
        # one point in time: a gapless prefix of what was written, at least the first 2000
        assert restored == list(range(len(restored)))
        assert 2000 <= len(restored) <= len(after_backup)
        client = MongoClient(store.uri)
        with pytest.raises(DuplicateKeyError):  # the unique index came back with the data
            client["mh"]["predictions"].insert_one({"prediction_id": "p0", "seq": -1})
        client.close()
    finally:
        store.stop()


def test_the_cli_backs_up_the_configured_store(tmp_path: Path) -> None:
    """`machine-health store backup DEST` against a running embedded store."""
    store = Store(tmp_path).start()
    try:
        client: MongoClient = MongoClient(store.uri)
        client["mh"]["predictions"].insert_many([{"prediction_id": f"p{i}"} for i in range(50)])
        client.close()
        args = ["store", "backup", str(tmp_path / "cli-backup"), "--data-dir", str(store.data_dir)]
        result = run_cli(args)  # the command in-process (Typer's CliRunner)
        done = subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (tmp_path / "cli-backup" / store_backup.MANIFEST).exists()
    finally:
        store.stop()

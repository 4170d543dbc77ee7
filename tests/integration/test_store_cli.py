"""`machine-health store start|status|stop` on a real nx-27017 process."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from pymongo import MongoClient

from tests.support.servers import free_port


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "machine_health", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_start_status_stop_with_data_kept_on_disk(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "MH_VAR_DIR": str(tmp_path / "var"), "MH_STORE_PORT": str(port)}
    env.pop("MH_MONGODB_URI", None)
    try:
        started = run_cli(["store", "start"], env)
        assert started.returncode == 0, started.stderr
        assert f"127.0.0.1:{port}" in started.stdout

        status = run_cli(["store", "status"], env)
        assert status.returncode == 0 and "running" in status.stdout

        again = run_cli(["store", "start"], env)
        assert again.returncode == 1 and "already runs" in again.stderr

        client: MongoClient = MongoClient(
            f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=2000
        )
        client.mh.things.insert_one({"kept": True})
        client.close()
    finally:
        stopped = run_cli(["store", "stop"], env)
    assert stopped.returncode == 0 and "store stopped" in stopped.stdout
    assert run_cli(["store", "status"], env).returncode == 3
    assert any((tmp_path / "var" / "store").iterdir())  # the data lives under var/store

    # Started again, the store still has what was written before the stop.
    try:
        assert run_cli(["store", "start"], env).returncode == 0
        client = MongoClient(f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=2000)
        assert client.mh.things.find_one({"kept": True}) is not None
        client.close()
    finally:
        run_cli(["store", "stop"], env)


def test_external_uri_refuses_to_manage_the_store(tmp_path: Path) -> None:
    env = {**os.environ, "MH_VAR_DIR": str(tmp_path), "MH_MONGODB_URI": "mongodb://10.0.0.1:1/"}
    result = run_cli(["store", "start"], env)
    assert result.returncode == 1
    assert "external MongoDB" in result.stderr


def test_recount_rebuilds_the_counters_and_reset_extract_drops_the_checkpoint(
    tmp_path: Path, store_uri: str
) -> None:
    """`store recount` and `store reset-extract` against the real store (an external URI)."""
    from machine_health.archive import counters
    from machine_health.pipeline import checkpoint

    db_name = f"cli_{os.getpid()}_{tmp_path.name[-8:]}"
    env = {**os.environ, "MH_VAR_DIR": str(tmp_path), "MH_MONGODB_URI": store_uri,
           "MH_MONGODB_DB": db_name}  # fmt: skip
    client: MongoClient = MongoClient(store_uri, tz_aware=True)
    try:
        db = client[db_name]
        db["predictions"].insert_one({
            "_id": "p1", "prediction_id": "p1", "domain": "turbofan", "asset_id": "u1",
            "cycle": 1, "output": {"rul": 50.0}, "model_version": "1",
            "created_at": datetime(2026, 5, 1, 10, tzinfo=UTC),
        })  # fmt: skip
        db[counters.COUNTERS].insert_one({"_id": "turbofan/2026-05-01T10", "domain": "turbofan",
                                          "hour": "2026-05-01T10", "n": 7})  # fmt: skip
        db[checkpoint.CHECKPOINTS].insert_one({"_id": "turbofan", "watermark_ms": 1})
        recount = run_cli(["store", "recount"], env)
        assert recount.returncode == 0, recount.stderr
        assert db[counters.COUNTERS].find_one({"_id": "turbofan/2026-05-01T10"})["n"] == 1
        reset = run_cli(["store", "reset-extract", "turbofan"], env)
        assert reset.returncode == 0 and "checkpoint dropped" in reset.stdout, reset.stderr
        assert db[checkpoint.CHECKPOINTS].find_one({"_id": "turbofan"}) is None
    finally:
        client.drop_database(db_name)
        client.close()

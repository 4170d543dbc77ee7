"""`machine-health store start|status|stop` on a real nx-27017 process."""

from __future__ import annotations

import os
import subprocess
import sys
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

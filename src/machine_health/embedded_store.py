"""Lifecycle of the embedded document store (nx-27017: MongoDB wire protocol on SQLite).

Used when no external MongoDB is configured. The code above it speaks plain pymongo over TCP, so
the same code runs unchanged against MongoDB in production.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from machine_health.config import Settings
from machine_health.errors import ConfigurationError, StoreAlreadyRunning, StoreError

logger = logging.getLogger(__name__)

MEMORY = "memory"


@dataclass(frozen=True)
class StoreStatus:
    running: bool
    uri: str
    pid: int | None
    data_dir: str
    log_file: str


def _paths(settings: Settings) -> tuple[Path, Path, Path]:
    var = settings.var_dir
    return var / "store", var / "store.pid", var / "store.log"


def _executable() -> str:
    # The console script lives beside the interpreter of our venv.
    candidate = Path(sys.executable).with_name("nx-27017")
    found = str(candidate) if candidate.exists() else shutil.which("nx-27017")
    if not found:
        raise StoreError("nx-27017 is not installed in this environment (run `make install`)")
    return found


def ping(uri: str, timeout_s: float = 1.0) -> bool:
    """True when a server at `uri` answers a ping."""
    client: MongoClient = MongoClient(uri, serverSelectionTimeoutMS=int(timeout_s * 1000))
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def launch(
    host: str, port: int, data_dir: str | Path, log_file: Path, *, timeout_s: float = 20.0
) -> subprocess.Popen[bytes]:
    """Start nx-27017 as a child process and wait until it answers a ping.

    `data_dir` is a directory (one SQLite file per database) or "memory".
    """
    if str(data_dir) != MEMORY:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    uri = f"mongodb://{host}:{port}/"
    if ping(uri, 0.3):
        raise StoreAlreadyRunning(f"something already answers on {uri}")
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            [
                _executable(),
                "--host",
                host,
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                "--log-file",
                str(log_file),
                "--pid-file",
                str(log_file.with_suffix(".nxpid")),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal goes to our supervisor, not here
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StoreError(f"nx-27017 exited with code {proc.returncode}; see {log_file}")
        if ping(uri, 0.5):
            logger.info("embedded store ready on %s (pid %s)", uri, proc.pid)
            return proc
        time.sleep(0.1)
    proc.kill()
    raise StoreError(f"nx-27017 did not answer on {uri} within {timeout_s:.0f}s; see {log_file}")


def _read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def status(settings: Settings) -> StoreStatus:
    data_dir, pid_file, log_file = _paths(settings)
    pid = _read_pid(pid_file)
    return StoreStatus(
        running=ping(settings.store_uri, 0.5),
        uri=settings.store_uri,
        pid=pid,
        data_dir=str(data_dir),
        log_file=str(log_file),
    )


def _require_embedded(settings: Settings) -> None:
    if not settings.embedded_store:
        raise ConfigurationError(
            "MH_MONGODB_URI names an external MongoDB: the embedded store is not used"
        )


def launch_managed(settings: Settings) -> subprocess.Popen[bytes]:
    """Launch the settings' embedded store (data under var/store) with its pid file, so `store
    status|stop` know it whoever started it (`store start` or `make run`); refuses twice."""
    _require_embedded(settings)
    data_dir, pid_file, log_file = _paths(settings)
    if _read_pid(pid_file) is not None or ping(settings.store_uri, 0.3):
        raise StoreAlreadyRunning(f"the embedded store already runs on {settings.store_uri}")
    proc = launch(settings.store_host, settings.store_port, data_dir, log_file)
    pid_file.write_text(str(proc.pid))
    return proc


def start(settings: Settings) -> StoreStatus:
    """Start the embedded store in the background (data under var/store); refuse to start twice."""
    launch_managed(settings)
    return status(settings)


def stop(settings: Settings, timeout_s: float = 10.0) -> bool:
    """Stop the background store; False when it was not running."""
    _require_embedded(settings)
    _, pid_file, _ = _paths(settings)
    pid = _read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    terminate(pid, timeout_s)
    pid_file.unlink(missing_ok=True)
    return True


def terminate(pid: int, timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)

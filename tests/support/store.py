"""A store of a test's own: the embedded nx-27017 on a fixed port and a file-backed data dir,
stopped and started again at will (its data survives), and the API's view of its spool."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx

from machine_health import embedded_store
from tests.support.servers import free_port


class Store:
    """An embedded store on a fixed port and data dir: stopped, killed and started again."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.data_dir = root / "store-data"
        self.log = root / "store.log"
        self.uri = f"mongodb://127.0.0.1:{self.port}/"
        self.process: Any = None

    def start(self) -> Store:
        self.process = embedded_store.launch("127.0.0.1", self.port, self.data_dir, self.log)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown, no checkpoint; the SQLite WAL is all that is left."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(15)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except Exception:
                self.process.kill()
                self.process.wait(5)
        self.process = None


def spool_empty(url: str) -> bool:
    """The API at `url` reaches its store and its spool is empty (everything replayed)."""
    try:
        body = httpx.get(f"{url}/ready", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return False
    return body.get("store") == "ok" and body.get("spool_depth") == 0

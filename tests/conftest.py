"""Shared fixtures: a real document store over TCP, a temporary MLflow store, real uvicorn servers.

The store is the embedded nx-27017 on a free port with an in-memory database, unless
MH_TEST_MONGODB_URI names another server (e.g. a real MongoDB): the same tests then run there.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient
from pymongo.database import Database

from machine_health import embedded_store
from machine_health.config import Settings

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = (REPO / ".." / "shared" / "data").resolve()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `predicate` until it holds; AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data sets; their absence is a broken checkout, not a reason to skip."""
    if not (DATA_DIR / "cmapss").is_dir() or not (DATA_DIR / "cwru").is_dir():
        pytest.fail(f"real data not found at {DATA_DIR} (the shared/ folder beside the repo)")
    return DATA_DIR


@pytest.fixture(scope="session")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real store over TCP for the whole session."""
    external = os.environ.get("MH_TEST_MONGODB_URI")
    if external:
        yield external
        return
    log = tmp_path_factory.mktemp("store") / "store.log"
    proc = embedded_store.launch("127.0.0.1", free_port(), embedded_store.MEMORY, log)
    port = proc.args[proc.args.index("--port") + 1]  # type: ignore[union-attr]
    yield f"mongodb://127.0.0.1:{port}/"
    proc.terminate()
    proc.wait(10)


def make_settings(tmp_path: Path, store_uri: str, **overrides: object) -> Settings:
    """Settings of one test: its own database, its own var/ (and so its own MLflow store)."""
    values: dict[str, object] = {
        "env": "test",
        "var_dir": tmp_path / "var",
        "data_dir": DATA_DIR,
        "mongodb_uri": store_uri,
        "mongodb_db": f"t_{uuid.uuid4().hex[:12]}",
        "jwt_secret": secrets.token_urlsafe(48),
        "service_token": secrets.token_urlsafe(48),
        "store_timeout_ms": 1500,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path, store_uri: str) -> Settings:
    return make_settings(tmp_path, store_uri)


def own_database(settings: Settings) -> Iterator[Database]:
    """`settings`' database on the real store, dropped afterwards (the body of a fixture)."""
    client: MongoClient = MongoClient(settings.store_uri, tz_aware=True)
    yield client[settings.mongodb_db]
    client.drop_database(settings.mongodb_db)
    client.close()


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    """The test's own database on the real store, dropped afterwards."""
    yield from own_database(settings)


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(5)


def start_uvicorn(
    settings: Settings,
    log_dir: Path,
    *,
    app: str = "machine_health.api.app:create_app",
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
    ready_path: str = "/health",
    timeout_s: float = 60.0,
) -> Server:
    """Start a real uvicorn process serving `app` (a factory) and wait until it answers."""
    port = port or free_port()
    env = {**os.environ, **settings.as_env(), **(extra_env or {})}
    env["MH_API_PORT"] = str(port)
    log = log_dir / f"uvicorn-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", app, "--host", "127.0.0.1",
             "--port", str(port), "--no-access-log"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    server = Server(url=f"http://127.0.0.1:{port}", process=proc, log=log)
    return _wait_ready(server, ready_path, timeout_s)


def start_serve(
    settings: Settings, log_dir: Path, *, workers: int, timeout_s: float = 120.0
) -> Server:
    """Start `machine-health serve --workers N` (uvicorn's own multi-process supervisor)."""
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "machine_health", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(workers)],
            env={**os.environ, **settings.as_env()}, stdout=out, stderr=subprocess.STDOUT,
            cwd=REPO,
        )  # fmt: skip
    return _wait_ready(Server(f"http://127.0.0.1:{port}", proc, log), "/health", timeout_s)


def _wait_ready(server: Server, ready_path: str, timeout_s: float) -> Server:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"uvicorn exited ({server.process.returncode}):\n{server.log.read_text()[-3000:]}"
            )
        try:
            if httpx.get(server.url + ready_path, timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(
        f"uvicorn on {server.url} not ready in {timeout_s}s:\n{server.log.read_text()[-3000:]}"
    )


@pytest.fixture
def uvicorn_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Factory of real uvicorn servers; every one started is stopped after the test."""
    started: list[Server] = []

    def start(settings: Settings, **kwargs: object) -> Server:
        server = start_uvicorn(settings, tmp_path / "logs", **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()

"""Real servers of a test: free ports, uvicorn processes of the API, waiting for a condition."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from machine_health.config import Settings
from tests.support import zygote
from tests.support.paths import REPO


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


@dataclass
class Server:
    url: str
    #: a plain subprocess, or a server forked by tests/support/zygote.py (the same interface)
    process: subprocess.Popen[bytes] | zygote.ForkedProcess
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
    """Start a real uvicorn process serving `app` (a factory) and wait until it answers.

    The process is forked from tests/support/zygote.py's zygote (uvicorn's own command line,
    run in a child of a process that has imported the app once) unless MH_TEST_FORK_SERVERS=0.
    """
    port = port or free_port()
    env = {**os.environ, **settings.as_env(), **(extra_env or {})}
    env["MH_API_PORT"] = str(port)
    log = log_dir / f"uvicorn-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = ["--factory", app, "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    proc: subprocess.Popen[bytes] | zygote.ForkedProcess
    if zygote.enabled():  # the same command line, forked from a process that imported it
        proc = zygote.fork_server(argv, env, REPO, log)
    else:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", *argv], env=env, stdout=out,
                stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip
    server = Server(url=f"http://127.0.0.1:{port}", process=proc, log=log)
    return wait_ready(server, ready_path, timeout_s)


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
    return wait_ready(Server(f"http://127.0.0.1:{port}", proc, log), "/health", timeout_s)


def wait_ready(server: Server, ready_path: str, timeout_s: float) -> Server:
    """`server` once `ready_path` answers 200; its log in the error if it exits or times out."""
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

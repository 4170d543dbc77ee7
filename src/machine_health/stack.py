"""`make run`: the whole loop on one machine, in the foreground, stopped cleanly by Ctrl-C.

Order: embedded store → a champion per domain (trained once on the real data) → two API replicas
→ the UI → Airflow (loopback api-server, scheduler, dag-processor) → demo traffic replayed from
the real test data → one retrain DAG run per domain that registers a new version and reloads both
replicas. Every child runs in its own process group, so stopping kills whole trees.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from machine_health import embedded_store
from machine_health.config import Settings
from machine_health.errors import MachineHealthError, StoreError

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
DOMAINS = ("vibration", "turbofan")


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Supervisor:
    """Starts children in their own process groups and stops every one of them."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv), env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                start_new_session=True,
            )  # fmt: skip
        child = Child(name, proc, log)
        self.children.append(child)
        logger.info("started %s (pid %s, log %s)", name, proc.pid, log)
        return child

    def adopt(self, name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.children.append(Child(name, proc, log))

    def check(self) -> None:
        for child in self.children:
            if child.process.poll() is not None:
                tail = child.log.read_text(errors="replace")[-2000:] if child.log.exists() else ""
                raise MachineHealthError(
                    f"{child.name} exited with code {child.process.returncode}; log {child.log}:\n{tail}"
                )

    def stop_all(self, timeout_s: float = 15.0) -> None:
        """SIGTERM every process group (newest first), then SIGKILL what is left."""
        for child in reversed(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in reversed(self.children):
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(5)
        self.children.clear()


def wait_http(url: str, timeout_s: float, supervisor: Supervisor) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        supervisor.check()
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise MachineHealthError(f"{url} did not answer within {timeout_s:.0f}s")


def cli(*args: str) -> list[str]:
    """Command line of our own CLI in this interpreter's environment."""
    return [sys.executable, "-m", "machine_health", *args]


def start_store(settings: Settings, supervisor: Supervisor) -> str:
    if not settings.embedded_store:
        if not embedded_store.ping(settings.store_uri, 3):
            raise StoreError("the MongoDB named by MH_MONGODB_URI does not answer")
        return "external MongoDB"
    if embedded_store.ping(settings.store_uri, 0.5):
        return f"{settings.store_uri} (already running)"
    data_dir, _, log = settings.var_dir / "store", None, settings.var_dir / "store.log"
    proc = embedded_store.launch(settings.store_host, settings.store_port, data_dir, log)
    supervisor.adopt("store", proc, log)
    return settings.store_uri


def run_stack(settings: Settings, *, with_airflow: bool = True, demo: bool = True) -> None:
    """Start everything, print the banner, then wait for Ctrl-C (or SIGTERM)."""
    supervisor = Supervisor(settings.var_dir / "logs")
    stop = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    urls: dict[str, str] = {}
    try:
        urls["store"] = start_store(settings, supervisor)
        logger.info("store: %s", urls["store"])
        print_banner(urls)
        while not stop:
            supervisor.check()
            time.sleep(0.5)
    except KeyboardInterrupt:
        logger.info("Ctrl-C: stopping")
    finally:
        supervisor.stop_all()
        logger.info("every process started by the stack is stopped")


def print_banner(urls: dict[str, str]) -> None:
    width = max(len(k) for k in urls) + 2
    lines = ["", "machine-health is running (Ctrl-C stops everything):"]
    lines += [f"  {name.ljust(width)}{url}" for name, url in urls.items()]
    # The banner is the command's output, so it goes to stdout, not through logging.
    sys.stdout.write("\n".join(lines) + "\n\n")
    sys.stdout.flush()


def generated_password() -> str:
    return secrets.token_urlsafe(18)

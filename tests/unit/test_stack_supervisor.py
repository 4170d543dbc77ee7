"""The `make run` supervisor stops whole process trees, reports a child that died, and leaves
nothing running when it is itself killed (SIGKILL, a closed terminal)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from machine_health.errors import MachineHealthError
from machine_health.stack import (
    STACK_ID_ENV,
    SWEEP_GRACE_S,
    Supervisor,
    marked_processes,
    sweep,
)
from tests.support.servers import free_port


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_stop_all_kills_grandchildren(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path)
    pid_file = tmp_path / "grandchild.pid"
    # A child that starts a grandchild and ignores SIGTERM: only a group kill gets both.
    script = (
        "import os, signal, subprocess, sys, time;"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']);"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid));"
        "time.sleep(300)"
    )
    child = supervisor.start("tree", [sys.executable, "-c", script], dict(os.environ))
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    assert alive(child.process.pid)
    assert alive(grandchild)

    supervisor.stop_all(timeout_s=1)

    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child.process.pid)
    assert not alive(grandchild)
    assert supervisor.children == []


def test_check_reports_a_dead_child_with_its_log(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path)
    child = supervisor.start(
        "crashy",
        [sys.executable, "-c", "print('boom happened'); raise SystemExit(3)"],
        dict(os.environ),
    )
    child.process.wait(10)
    with pytest.raises(MachineHealthError, match=r"(?s)crashy exited \(3\).*boom happened"):
        supervisor.check()
    supervisor.stop_all()


# --- nothing survives the supervisor ------------------------------------------------------------
# A reduced `make run`: the stack's own start path (`supervised`, `Supervisor.start`, the embedded
# store's `start_store`) with small children instead of the API replicas and Airflow.
REDUCED_STACK = """
import json, os, socket, sys, time
from pathlib import Path
from machine_health.config import Settings
from machine_health.stack import STACK_ID_ENV, start_store, supervised

var_dir, store_port, listen_port = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
settings = Settings(_env_file=None, var_dir=var_dir, store_port=store_port)
py = sys.executable
grandchild_pid = var_dir / "grandchild.pid"
tree = (
    "import signal, subprocess, sys, time;"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    "p = subprocess.Popen([sys.executable, '-c', 'import signal, time;"
    " signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'], start_new_session=True);"
    f"open({str(grandchild_pid)!r}, 'w').write(str(p.pid));"
    "time.sleep(600)"
)
listener = (
    "import socket, time; s = socket.socket();"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
    f"s.bind(('127.0.0.1', {listen_port})); s.listen(); time.sleep(600)"
)
try:
    with supervised(var_dir) as supervisor:
        start_store(settings, supervisor)
        sleeper = [py, "-c", "import time; time.sleep(600)"]
        children = [
            supervisor.start("sleeper", sleeper, dict(os.environ)),
            supervisor.start("tree", [py, "-c", tree], dict(os.environ)),
            supervisor.start("listener", [py, "-c", listener], dict(os.environ)),
            # No marker: its environment is gone (as with `env -i`, or a title written over it).
            supervisor.start("bare", ["env", "-i", py, "-c", "import time; time.sleep(600)"],
                             dict(os.environ)),
        ]
        while not grandchild_pid.exists():
            time.sleep(0.05)
        info = {
            "stack_id": supervisor.stack_id,
            "watchdog": supervisor.watchdog.pid,
            "children": [c.process.pid for c in supervisor.children],
            "grandchild": int(grandchild_pid.read_text()),
            "bare": children[-1].process.pid,
        }
        (var_dir / "started.json").write_text(json.dumps(info))
        while True:
            supervisor.check()
            time.sleep(0.2)
except KeyboardInterrupt:
    pass
"""


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_reduced_stack(tmp_path: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any], int, int]:
    store_port, listen_port = free_port(), free_port()
    var_dir = tmp_path / "var"
    var_dir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", REDUCED_STACK, str(var_dir), str(store_port), str(listen_port)],
        stdout=(tmp_path / "stack.log").open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    started = var_dir / "started.json"
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None, (tmp_path / "stack.log").read_text()
        assert time.monotonic() < deadline, "the reduced stack did not start"
        time.sleep(0.1)
    time.sleep(0.2)  # the file is written in one call; let it be complete
    return proc, json.loads(started.read_text()), store_port, listen_port


def wait_gone(stack_id: str, pids: list[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not marked_processes(stack_id) and not any(alive(p) for p in pids):
            return
        time.sleep(0.1)
    left = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:120] for p in marked_processes(stack_id)}
    raise AssertionError(f"survivors after {timeout_s}s: {left} / {[p for p in pids if alive(p)]}")


def test_nothing_survives_a_sigkill_of_the_supervisor(tmp_path: Path) -> None:
    proc, info, store_port, listen_port = start_reduced_stack(tmp_path)
    try:
        stack_id = info["stack_id"]
        marked = set(marked_processes(stack_id))
        store_pid = int((tmp_path / "var" / "store.pid").read_text())
        # every child, the grandchild in its own session and the store carry the marker, but
        # for the child that dropped its environment: the watchdog knows its session instead
        bare = info["bare"]
        assert {*info["children"], info["grandchild"], store_pid} - {bare} <= marked
        assert bare not in marked
        assert info["watchdog"] not in marked and proc.pid not in marked
        assert not port_free(store_port) and not port_free(listen_port)

        proc.kill()  # SIGKILL: no finally, no stop_all
        proc.wait(10)
        everything = [*info["children"], info["grandchild"], store_pid, info["watchdog"]]
        wait_gone(stack_id, everything, SWEEP_GRACE_S + 10)
        assert port_free(store_port) and port_free(listen_port)
        assert not (tmp_path / "var" / "store.pid").exists()
        log = (tmp_path / "var" / "logs" / "watchdog.log").read_text()
        assert f"stack {stack_id} ended" in log
    finally:
        if proc.poll() is None:
            proc.kill()
        sweep(info["stack_id"], grace_s=1) if "info" in locals() else None


def test_ctrl_c_stops_everything_and_the_watchdog_exits(tmp_path: Path) -> None:
    proc, info, store_port, listen_port = start_reduced_stack(tmp_path)
    try:
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(60) == 0, (tmp_path / "stack.log").read_text()
        everything = [*info["children"], info["grandchild"], info["watchdog"]]
        wait_gone(info["stack_id"], everything, 5)  # already gone when the supervisor returns
        assert port_free(store_port) and port_free(listen_port)
    finally:
        if proc.poll() is None:
            proc.kill()
        sweep(info["stack_id"], grace_s=1)


def test_a_new_stack_sweeps_what_a_killed_one_left(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    (var_dir / "stack").mkdir(parents=True)
    old_id = "killed-earlier-" + os.urandom(4).hex()
    (var_dir / "stack" / "id").write_text(old_id)
    leftover = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"],
        env={**os.environ, STACK_ID_ENV: old_id}, start_new_session=True,
    )  # fmt: skip
    try:
        supervisor = Supervisor(var_dir / "logs")
        new_id = supervisor.begin(var_dir)
        try:
            assert leftover.wait(SWEEP_GRACE_S + 5) is not None  # swept before anything starts
            assert (var_dir / "stack" / "id").read_text() == new_id != old_id
            assert os.environ[STACK_ID_ENV] == new_id
            with pytest.raises(MachineHealthError, match="another `machine-health stack`"):
                Supervisor(var_dir / "logs").begin(var_dir)  # one live stack per var dir
            watchdog = supervisor.watchdog
            assert watchdog is not None and watchdog.poll() is None
        finally:
            supervisor.stop_all()
            supervisor.end()
        assert watchdog.returncode == 0  # it exits after a clean stop
        assert STACK_ID_ENV not in os.environ
    finally:
        if leftover.poll() is None:
            leftover.kill()

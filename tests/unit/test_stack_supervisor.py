"""The `make run` supervisor stops whole process trees, and reports a child that died."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from machine_health.errors import MachineHealthError
from machine_health.stack import Supervisor


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

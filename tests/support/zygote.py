"""Real uvicorn servers forked from a process that has already imported them.

Starting `python -m uvicorn --factory machine_health.api.app:create_app` costs ~4 s of CPU
before the app does anything of its own: importing the app (MLflow, scikit-learn, pandas) and
Keras/TensorFlow for the turbofan model. A test session starts dozens of API servers, so
`start_uvicorn` asks this module's zygote instead: ONE process per session imports uvicorn, the
app and Keras once (nothing runs: no app is created, no settings are read, no thread of ours is
started) and then forks a child per server. The child takes the server's environment, working
directory and log file, and runs uvicorn's own command line (`uvicorn.main.main`, what
`python -m uvicorn` runs) with the same arguments, so the app factory, the lifespan, the
settings and the models are made in the child, exactly as in a fresh process; at its exit the
child runs the exit handlers a fresh interpreter would.

The child is the zygote's, not the test's: `ForkedProcess` gives the `subprocess.Popen` calls
the tests make (pid, poll, wait, terminate, kill, send_signal, returncode), the zygote reaping
its children and reporting their exit status. MH_TEST_FORK_SERVERS=0 starts every server as a
plain `python -m uvicorn` subprocess instead.

Run as a script, this module is the zygote: requests in, one JSON line each, on stdin; answers
out, one JSON line each, on stdout.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.paths import REPO

#: what the zygote imports before it forks (a server imports the rest itself)
PRELOAD = ("uvicorn.main", "machine_health.api.app", "keras")


class Zygote:
    """The test process's side: starts the zygote once, asks it to fork servers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self.log = Path(tempfile.gettempdir()) / f"mh-test-zygote-{os.getpid()}.log"
        atexit.register(self.close)

    def _started(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            with self.log.open("ab") as log:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "tests.support.zygote"], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1, cwd=REPO,
                )  # fmt: skip
        return self._proc

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            proc = self._started()
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(request) + "\n")
            line = proc.stdout.readline()
        if not line:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the server zygote exited ({proc.wait(5)}):\n{tail}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the server zygote failed: {answer['error']}")
        return answer

    def warm(self) -> None:
        """Start the zygote now (it imports in the background while tests run)."""
        with self._lock:
            self._started()

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)


_ZYGOTE = Zygote()


def enabled() -> bool:
    return os.environ.get("MH_TEST_FORK_SERVERS", "1") != "0"


def warm() -> None:
    if enabled():
        _ZYGOTE.warm()


class ForkedProcess:
    """A forked server, with the part of `subprocess.Popen` the tests use."""

    def __init__(self, pid: int, args: list[str]) -> None:
        self.pid, self.args = pid, args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = _ZYGOTE.ask({"op": "status", "pid": self.pid})["returncode"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)  # type: ignore[arg-type]
            time.sleep(0.05)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def fork_server(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> ForkedProcess:
    """`python -m uvicorn *argv` forked from the zygote, its output appended to `log`."""
    answer = _ZYGOTE.ask(
        {"op": "spawn", "argv": argv, "env": env, "cwd": str(cwd), "log": str(log)}
    )
    return ForkedProcess(answer["pid"], [sys.executable, "-m", "uvicorn", *argv])


# --- the zygote itself -------------------------------------------------------------------------
def _child(request: dict[str, Any]) -> None:
    """In the forked child: become the server process `request` describes; never returns."""
    code = 1
    try:
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)  # also closes the zygote's request and answer pipes here
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["uvicorn", *request["argv"]]
        import uvicorn.main

        try:
            uvicorn.main.main(args=request["argv"], prog_name="uvicorn")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # what an uncaught exception does to a fresh interpreter
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _serve() -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    exited: dict[int, int] = {}
    mine: set[int] = set()

    def reap() -> None:
        while mine:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            mine.discard(pid)
            exited[pid] = os.waitstatus_to_exitcode(status)

    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "spawn":
                sys.stdout.flush()
                pid = os.fork()
                if pid == 0:
                    _child(request)
                mine.add(pid)
                answer: dict[str, Any] = {"pid": pid}
            else:
                reap()
                answer = {"returncode": exited.get(request["pid"])}
        except Exception as exc:  # the test gets the message, the zygote goes on
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    # stdin closed: the test session is over; the servers are stopped by their tests


if __name__ == "__main__":
    _serve()

"""`make run`: the whole loop on one machine, in the foreground, stopped cleanly by Ctrl-C.

Order: embedded store → a champion per domain (trained once on the real data) → two API replicas
→ the UI → Airflow (loopback api-server, scheduler, dag-processor) → demo traffic replayed from
the real test data → one retrain DAG run per domain that registers a new version and reloads both
replicas. Every child runs in its own process group, so stopping kills whole trees.

Nothing may outlive the supervisor, even when it is killed hard (SIGKILL, a closed terminal):
every process the stack starts carries `MH_STACK_ID=<this run's id>` in its environment (and
so do their descendants: Airflow's task processes, the train steps), and a detached watchdog
holds the read end of a pipe whose write end only the supervisor holds. When the pipe reaches
end-of-file (the supervisor exited, by any means) the watchdog terminates every process whose
`/proc/<pid>/environ` carries the marker, then stops the embedded store by its pid file. The id
is kept in `var/stack/id`: a new stack first sweeps what an earlier one of the same var dir left.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from machine_health import embedded_store, local_airflow
from machine_health.config import Settings
from machine_health.domains import DOMAINS as REGISTERED_DOMAINS
from machine_health.errors import AlreadyExists, MachineHealthError, StoreError

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
#: the registered domains, in registry order: one champion and one retrain DAG run each
DOMAINS = tuple(REGISTERED_DOMAINS)
#: the environment variable that marks every process of one run of the stack
STACK_ID_ENV = "MH_STACK_ID"
#: how long a sweep waits after SIGTERM before SIGKILL
SWEEP_GRACE_S = 5.0


# --- processes marked with a stack id -----------------------------------------------------------
def marked_processes(stack_id: str) -> list[int]:
    """Pids of the live processes whose environment carries `MH_STACK_ID=<stack_id>`."""
    marker = f"{STACK_ID_ENV}={stack_id}".encode()
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _stat(pid: int | str) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (None when the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot): tells a process from a later one of its pid."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def session_members(sessions: set[int]) -> list[int]:
    """Pids of the live processes in one of `sessions`.

    The environment marker is not enough: a process may replace its environment (`env -i`) or
    overwrite it with its title (setproctitle, which Airflow's api-server uses). Every child of
    the supervisor leads a session of its own, which its descendants keep unless they start one.
    """
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        fields = _stat(entry.name)
        if fields and fields[0] != "Z" and int(fields[3]) in sessions:
            found.append(int(entry.name))
    return found


def stack_processes(stack_id: str, sessions: set[int] | None = None) -> list[int]:
    """The processes of one stack: marked with its id, or in a session one of its children led."""
    return sorted(set(marked_processes(stack_id)) | set(session_members(sessions or set())))


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def sweep(
    stack_id: str, grace_s: float = SWEEP_GRACE_S, sessions: set[int] | None = None
) -> list[int]:
    """SIGTERM every process of `stack_id` (and `sessions`), SIGKILL what is left after
    `grace_s`; their pids.

    Scans again while it waits: a process shutting down may still start others.
    """
    sessions = set(sessions or ())
    seen: set[int] = set()
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        pids = stack_processes(stack_id, sessions)
        if not pids:
            return sorted(seen)
        _signal_all([p for p in pids if p not in seen], signal.SIGTERM)
        seen.update(pids)
        time.sleep(0.2)
    for _ in range(20):  # SIGKILL cannot be ignored; a fork racing the scan is caught next round
        pids = stack_processes(stack_id, sessions)
        if not pids:
            break
        logger.warning("stack %s: SIGKILL %s (still running %.0fs after SIGTERM)",
                       stack_id, pids, grace_s)  # fmt: skip
        _signal_all(pids, signal.SIGKILL)
        seen.update(pids)
        time.sleep(0.2)
    return sorted(seen)


def _live_sessions(sessions_file: Path) -> set[int]:
    """The recorded sessions whose leader still runs, the same process (not a reused pid)."""
    live = set()
    with contextlib.suppress(OSError):
        for line in sessions_file.read_text().splitlines():
            pid, _, started = line.partition(" ")
            if pid.isdigit() and started.isdigit() and start_time(int(pid)) == int(started):
                live.add(int(pid))
    return live


def _stop_marked_store(var_dir: Path, stack_id: str) -> None:
    """Stop the embedded store of `var_dir` if this stack started it (its pid file)."""
    pid_file = var_dir / "store.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    if pid in marked_processes(stack_id):
        embedded_store.terminate(pid, SWEEP_GRACE_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, 0)
        return  # still running: not ours (another stack's store or `store start`)
    pid_file.unlink(missing_ok=True)


def watchdog(read_fd: int, stack_id: str, var_dir: str) -> None:
    """Block until the supervisor's end of the pipe closes, then sweep its stack id.

    Runs in its own session (a closed terminal's SIGHUP does not reach it) with no marker.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s watchdog %(message)s")
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    received = b""
    while True:  # the supervisor writes the pid of every child it starts, one per line
        try:
            chunk = os.read(read_fd, 4096)
        except InterruptedError:
            continue
        if not chunk:
            break  # EOF: the supervisor is gone (or stopped cleanly and closed its end)
        received += chunk
    sessions = {int(line) for line in received.split() if line.isdigit()}
    killed = sweep(stack_id, sessions=sessions)
    _stop_marked_store(Path(var_dir), stack_id)
    logger.info("stack %s ended; stopped %d leftover process(es) %s", stack_id, len(killed),
                killed)  # fmt: skip


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
    #: set by `begin`: the marker every child carries in its environment
    stack_id: str | None = None
    watchdog: subprocess.Popen[bytes] | None = None
    _pipe: int | None = None
    _lock: Any = None
    _sessions_file: Path | None = None

    def begin(self, var_dir: Path) -> str:
        """Own `var_dir` for one run: refuse a second live stack, sweep what a killed one left,
        mark this process's environment (inherited by every child) and start the watchdog."""
        state = var_dir / "stack"
        state.mkdir(parents=True, exist_ok=True)
        lock = (state / "lock").open("a")  # not inherited by children (O_CLOEXEC)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise MachineHealthError(
                f"another `machine-health stack` runs with {var_dir}: stop it first"
            ) from None
        self._lock = lock
        id_file = state / "id"
        with contextlib.suppress(OSError):
            previous = id_file.read_text().strip()
            if previous:
                left = sweep(previous, sessions=_live_sessions(state / "sessions"))
                if left:
                    logger.warning("stopped %d process(es) left by an earlier stack: %s",
                                   len(left), left)  # fmt: skip
                _stop_marked_store(var_dir, previous)
        self.stack_id = uuid.uuid4().hex
        id_file.write_text(self.stack_id)
        self._sessions_file = state / "sessions"
        self._sessions_file.write_text("")
        os.environ[STACK_ID_ENV] = self.stack_id  # inherited by every child and its children
        self._start_watchdog(var_dir)
        return self.stack_id

    def _start_watchdog(self, var_dir: Path) -> None:
        read_fd, write_fd = os.pipe()  # both non-inheritable; the reader is passed explicitly
        env = {k: v for k, v in os.environ.items() if k != STACK_ID_ENV}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        code = (
            "import sys; from machine_health.stack import watchdog; "
            "watchdog(int(sys.argv[1]), sys.argv[2], sys.argv[3])"
        )
        with (self.log_dir / "watchdog.log").open("ab") as out:
            self.watchdog = subprocess.Popen(
                [sys.executable, "-c", code, str(read_fd), str(self.stack_id), str(var_dir)],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                pass_fds=(read_fd,), start_new_session=True, cwd=REPO,
            )  # fmt: skip
        os.close(read_fd)
        self._pipe = write_fd

    def end(self, timeout_s: float = 30.0) -> None:
        """After `stop_all`: close the pipe (the watchdog sweeps stragglers and exits)."""
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None
        if self.watchdog is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.watchdog.wait(timeout_s)
            self.watchdog = None
        if os.environ.get(STACK_ID_ENV) == self.stack_id:
            del os.environ[STACK_ID_ENV]
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        if self.stack_id is not None:
            env = {**env, STACK_ID_ENV: self.stack_id}
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv), env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                start_new_session=True,
            )  # fmt: skip
        child = Child(name, proc, log)
        self.children.append(child)
        self._record_session(proc.pid)
        logger.info("started %s (pid %s, log %s)", name, proc.pid, log)
        return child

    def adopt(self, name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.children.append(Child(name, proc, log))
        self._record_session(proc.pid)

    def _record_session(self, pid: int) -> None:
        """Tell the watchdog (and a later stack, through var/stack/sessions) of a new session."""
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                os.write(self._pipe, f"{pid}\n".encode())
        if self._sessions_file is not None:
            with self._sessions_file.open("a") as out:
                out.write(f"{pid} {start_time(pid)}\n")

    def check(self) -> None:
        for child in self.children:
            if child.process.poll() is not None:
                tail = child.log.read_text(errors="replace")[-2000:] if child.log.exists() else ""
                code = child.process.returncode
                raise MachineHealthError(f"{child.name} exited ({code}); {child.log}:\n{tail}")

    def stop_all(self, timeout_s: float = 15.0) -> None:
        """SIGTERM every process group (newest first), then SIGKILL what is left."""
        for child in reversed(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in reversed(self.children):
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(5)
        self.children.clear()


@contextlib.contextmanager
def supervised(var_dir: Path) -> Iterator[Supervisor]:
    """A supervisor owning `var_dir` for one run; every process it started is stopped at exit,
    and by its watchdog if this process is killed before it can do so."""
    supervisor = Supervisor(var_dir / "logs")
    supervisor.begin(var_dir)
    try:
        yield supervisor
    finally:
        supervisor.stop_all()
        supervisor.end()


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
    proc = embedded_store.launch_managed(settings)
    supervisor.adopt("store", proc, settings.var_dir / "store.log")
    return settings.store_uri


def ensure_champions(settings: Settings, supervisor: Supervisor) -> None:
    """Train and register version 1 of each domain that has no champion yet (first run only)."""
    from machine_health import registry

    for domain in DOMAINS:
        if registry.CHAMPION in registry.aliases(settings, domain):
            continue
        logger.info("no %s champion yet: training one on the real data (first run only)", domain)
        child = supervisor.start(f"train-{domain}", cli("train", domain), child_env(settings))
        if child.process.wait() != 0:
            raise MachineHealthError(f"training {domain} failed; see {child.log}")
        supervisor.children.remove(child)


LOCAL_USERS = {"admin": "admin", "demo-operator": "operator"}  # name -> role


def ensure_users(settings: Settings) -> dict[str, str]:
    """A local admin and the demo's operator, with passwords generated once (never defaults).

    The passwords are kept under var/secrets/ (written before the users, so a crash cannot lose
    them); a user missing from the store (a first run, a wiped store) is created again with its
    kept password.
    """
    from machine_health.archive.client import open_db
    from machine_health.archive.users import create_user_sync
    from machine_health.security import hash_password

    path = settings.var_dir / "secrets" / "local-users.json"
    if path.exists():
        passwords = json.loads(path.read_text())
    else:
        passwords = {name: generated_password() for name in LOCAL_USERS}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(passwords))
    with open_db(settings) as db:
        for name, role in LOCAL_USERS.items():
            with contextlib.suppress(AlreadyExists):
                create_user_sync(db, name, hash_password(passwords[name]), role)
    return passwords


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {**os.environ, **settings.as_env(), **extra}


def start_replicas(settings: Settings, supervisor: Supervisor, count: int = 2) -> list[str]:
    """`count` API replicas on consecutive ports, each knowing all of them (reload fan-out)."""
    urls = [f"http://{settings.api_host}:{settings.api_port + i}" for i in range(count)]
    for i in range(count):
        env = child_env(
            settings, MH_REPLICA_NAME=f"replica-{i + 1}", MH_SERVING_URLS=",".join(urls)
        )
        port = str(settings.api_port + i)
        supervisor.start(
            f"api-{i + 1}", cli("serve", "--host", settings.api_host, "--port", port), env
        )
    for url in urls:
        wait_http(f"{url}/ready", 180, supervisor)
    return urls


def run_stack(settings: Settings, *, with_airflow: bool = True, demo: bool = True) -> None:
    """Start everything, print the banner, then wait for Ctrl-C (or SIGTERM)."""
    stop = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    urls: dict[str, str] = {}
    # Before any port is bound: a stack killed earlier is swept first.
    with supervised(settings.var_dir) as supervisor:
        try:
            _run(settings, supervisor, urls, with_airflow=with_airflow, demo=demo,
                 stopped=lambda: stop)  # fmt: skip
        except KeyboardInterrupt:
            logger.info("Ctrl-C: stopping")
    logger.info("every process started by the stack is stopped")


def _run(
    settings: Settings,
    supervisor: Supervisor,
    urls: dict[str, str],
    *,
    with_airflow: bool,
    demo: bool,
    stopped: Callable[[], bool],
) -> None:
    """The stack's start order, then the wait until `stopped()` (or Ctrl-C)."""
    urls["store"] = start_store(settings, supervisor)
    logger.info("store: %s", urls["store"])
    ensure_champions(settings, supervisor)
    users = ensure_users(settings)
    replicas = start_replicas(settings, supervisor)
    settings = settings.model_copy(update={"serving_urls": replicas})
    for i, url in enumerate(replicas):
        urls[f"api replica {i + 1}"] = f"{url}/docs"
    urls["ui"] = start_ui(settings, supervisor, replicas[0])
    urls["mlflow store"] = settings.tracking_uri
    urls["admin login"] = f"admin / {users['admin']}  (generated, var/secrets/)"
    airflow = None
    if with_airflow:
        airflow = local_airflow.start(settings, supervisor, REPO, child_env(settings))
        urls["airflow"] = f"{airflow.base_url}  (admin / {airflow.password})"
    print_banner(urls)
    if demo:
        run_demo(settings, supervisor, replicas[0], users, airflow)
    print_banner({"logs": str(supervisor.log_dir), **urls})
    while not stopped():
        supervisor.check()
        time.sleep(0.5)


def start_ui(settings: Settings, supervisor: Supervisor, api_url: str) -> str:
    url = f"http://127.0.0.1:{settings.ui_port}"
    supervisor.start("ui", cli("ui"), child_env(settings, MH_API_URL=api_url))
    wait_http(f"{url}/_stcore/health", 120, supervisor)
    return url


def run_demo(
    settings: Settings,
    supervisor: Supervisor,
    api_url: str,
    users: dict[str, str],
    airflow: local_airflow.LocalAirflow | None,
) -> None:
    """Replay real test data, then retrain each domain and show the replicas reload."""
    env = child_env(settings, MH_SIMULATOR_PASSWORD=users["demo-operator"])
    args = ["simulate", "--api-url", api_url, "--username", "demo-operator"]
    args += ["--password-env", "MH_SIMULATOR_PASSWORD"]
    child = supervisor.start("simulate", cli(*args), env)
    logger.info("demo traffic: replaying real test data into %s (log %s)", api_url, child.log)
    if child.process.wait() != 0:
        raise MachineHealthError(f"the traffic simulator failed; see {child.log}")
    supervisor.children.remove(child)
    if airflow is None:
        return
    for domain in DOMAINS:
        before = versions(settings.serving_urls)
        state = airflow.retrain(domain)
        after = versions(settings.serving_urls)
        logger.info("retrain_%s: %s; served versions %s -> %s", domain, state, before, after)


def versions(urls: list[str]) -> dict[str, Any]:
    """Per replica, the model versions it reports on GET /version."""
    out: dict[str, Any] = {}
    for url in urls:
        try:
            body = httpx.get(f"{url}/version", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            out[url] = "unreachable"
            continue
        models = body.get("models", body)
        out[url] = {d: (m or {}).get("version") for d, m in models.items() if isinstance(m, dict)}
    return out


def print_banner(urls: dict[str, str]) -> None:
    width = max(len(k) for k in urls) + 2
    lines = ["", "machine-health is running (Ctrl-C stops everything):"]
    lines += [f"  {name.ljust(width)}{url}" for name, url in urls.items()]
    # The banner is the command's output, so it goes to stdout, not through logging.
    sys.stdout.write("\n".join(lines) + "\n\n")
    sys.stdout.flush()


def generated_password() -> str:
    return secrets.token_urlsafe(18)

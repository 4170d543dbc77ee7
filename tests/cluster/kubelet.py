"""A local stand-in for the kubelet: run a rendered pod's containers the way a node would.

No cluster runs here, so `make cluster-check` holds the chart to its promises another way. For a
Pod spec taken from `helm template` (or from the retrain DAGs' KubernetesPodOperator), each
container's command runs from the project's own environment (.venv stands in for the image's
/opt/venv) under exactly the constraints the manifest declares:

- its own network namespace with one address on a bridge (the pod IP; never loopback), so a
  listener bound to 127.0.0.1 cannot be reached by the probes, Services or other pods;
- a read-only root (bubblewrap) in which only the declared volumes are writable: emptyDir =
  a fresh tmpfs, a PersistentVolumeClaim = a host folder of this cluster, a ConfigMap volume =
  its files, read-only; the service-account token folder only where the pod automounts it;
- the declared user and groups (runAsUser, runAsGroup, fsGroup) with every capability dropped
  and no_new_privs (allowPrivilegeEscalation: false);
- ONLY the environment the manifest gives: the image's ENV (docker/*.Dockerfile), envFrom and
  env, with ConfigMap / Secret references resolved from the rendered objects (a missing required
  key fails the pod, as the kubelet would), fieldRefs, and the Kubernetes service variables.

Services get a ClusterIP on the node and a round-robin TCP forwarder to their ready endpoints
(what kube-proxy does), and names resolve through an /etc/hosts of the cluster (what CoreDNS
does). What is NOT faithful is written down in docs/CLUSTER-CHECK.md.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
BRIDGE = "mhbr0"
SUBNET = "10.213"  # pods 10.213.0.x, Services 10.213.1.x; only inside namespaces made here
NODE_IP = f"{SUBNET}.0.1"
API_SERVER_PORT = 6443
SA_DIR = "/run/secrets/kubernetes.io/serviceaccount"  # /var/run links to /run

#: What the images set (docker/serving.Dockerfile, docker/ui.Dockerfile), with .venv for /opt/venv.
IMAGE_ENV = {
    "PATH": f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "HOME": "/home/app",
    "MPLCONFIGDIR": "/tmp/matplotlib",
    "KERAS_HOME": "/tmp/keras",
    "MH_ENV": "prod",
    "MH_VAR_DIR": "/var/lib/machine-health",
    # The image installs this checkout's package; .venv's editable install may point at another.
    "PYTHONPATH": str(REPO / "src"),
}
IMAGE_WORKDIR = "/home/app"
IMAGE_DIRS = ("/home/app", "/var/lib/machine-health", "/airflow/xcom")

Manifest = dict[str, Any]


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=60)


class PodFailed(AssertionError):
    """A container exited, failed its probe or could not be started as declared."""


# --- objects ---------------------------------------------------------------------------------
class Objects:
    """The rendered objects, looked up by kind and name (the API server's store, read-only)."""

    def __init__(self, docs: list[Manifest]) -> None:
        self.docs = [d for d in docs if d]

    def get(self, kind: str, name: str) -> Manifest | None:
        for doc in self.docs:
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
        return None

    def of_kind(self, kind: str) -> list[Manifest]:
        return [d for d in self.docs if d["kind"] == kind]

    def config_data(self, kind: str, name: str) -> dict[str, str] | None:
        doc = self.get(kind, name)
        if doc is None:
            return None
        data = {k: str(v) for k, v in (doc.get("data") or {}).items()}
        if kind == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
            data.update({k: str(v) for k, v in (doc.get("stringData") or {}).items()})
        return data


# --- the node's network ----------------------------------------------------------------------
class Network:
    """A bridge in this process's own network namespace; one veth and netns per pod."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._next_pod = itertools.count(2)
        self._next_service = itertools.count(1)
        self.namespaces: list[str] = []

    def up(self) -> None:
        run("ip", "link", "set", "lo", "up")
        # A fixed address: a bridge otherwise takes the lowest one of its ports, so each new
        # pod's veth could change it and leave every pod's ARP entry of the node stale (their
        # connections to the node and the Services stall until it expires).
        run("ip", "link", "add", BRIDGE, "address", "02:00:00:00:00:01", "type", "bridge")
        run("ip", "addr", "add", f"{NODE_IP}/16", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        # Pod namespaces of an earlier check whose process is gone (named mhc<pid>-<n>).
        for line in run("ip", "netns", "list").stdout.splitlines():
            name = line.split()[0] if line.split() else ""
            owner = name.removeprefix("mhc").partition("-")[0]
            if name.startswith("mhc") and owner.isdigit() and not Path(f"/proc/{owner}").exists():
                run("ip", "netns", "delete", name, check=False)

    def pod_namespace(self, name: str) -> tuple[str, str]:
        """A new network namespace wired to the bridge: (namespace name, pod IP)."""
        index = next(self._next_pod)
        netns, ip = f"{self.prefix}-{index}", f"{SUBNET}.0.{index}"
        host_end, pod_end = f"mhv{index}", f"mhp{index}"
        run("ip", "netns", "add", netns)
        self.namespaces.append(netns)
        run("ip", "link", "add", host_end, "type", "veth", "peer", "name", pod_end)
        run("ip", "link", "set", host_end, "master", BRIDGE, "up")
        run("ip", "link", "set", pod_end, "netns", netns)
        inside = ("ip", "netns", "exec", netns, "ip")
        run(*inside, "link", "set", "lo", "up")
        run(*inside, "link", "set", pod_end, "name", "eth0")
        run(*inside, "addr", "add", f"{ip}/16", "dev", "eth0")
        run(*inside, "link", "set", "eth0", "up")
        run(*inside, "route", "add", "default", "via", NODE_IP)
        return netns, ip

    def service_ip(self) -> str:
        ip = f"{SUBNET}.1.{next(self._next_service)}"
        run("ip", "addr", "add", f"{ip}/32", "dev", BRIDGE)
        return ip

    def down(self) -> None:
        for netns in self.namespaces:
            run("ip", "netns", "delete", netns, check=False)
        run("ip", "link", "delete", BRIDGE, check=False)


# --- pods ------------------------------------------------------------------------------------
@dataclass
class Container:
    name: str
    argv: list[str]
    env: dict[str, str]
    spec: Manifest
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None


@dataclass
class Pod:
    name: str
    manifest: Manifest
    ip: str
    netns: str
    root: Path
    bwrap: list[str]
    user: list[str]
    containers: list[Container] = field(default_factory=list)
    ready: bool = False

    @property
    def labels(self) -> dict[str, str]:
        return self.manifest["metadata"].get("labels") or {}

    def container(self, name: str | None = None) -> Container:
        return next(c for c in self.containers if name in (None, c.name))

    def port(self, port: int | str, container: Container | None = None) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for c in [container] if container else self.containers:
            for declared in c.spec.get("ports") or []:
                if declared.get("name") == port:
                    return int(declared["containerPort"])
        raise PodFailed(f"{self.name}: no container port named {port!r}")

    def exec(
        self, argv: list[str], *, container: str | None = None, stdin: str | None = None,
        timeout: float = 900, env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """`kubectl exec`: the command in the container's sandbox (same netns, env, volumes)."""
        c = self.container(container)
        full_env = {**c.env, **(env or {})}
        command = [*self._sandbox(c), *resolve_executable(argv[:1], full_env), *argv[1:]]
        return subprocess.run(command, input=stdin, capture_output=True, text=True,
                              timeout=timeout, check=False, env=full_env)  # fmt: skip

    def _sandbox(self, c: Container) -> list[str]:
        """The sandbox's command line. The environment is the process's own (`env=` of Popen),
        passed through nsenter, bwrap and setpriv: no secret value on a command line."""
        args = ["nsenter", f"--net=/run/netns/{self.netns}", "bwrap", *self.bwrap[c.name]]
        return [*args, "--", *self.user]

    def command(self, c: Container) -> list[str]:
        """The container's own command in its sandbox (run it with `env=c.env` only)."""
        return [*self._sandbox(c), *resolve_executable(c.argv[:1], c.env), *c.argv[1:]]

    def logs(self, container: str | None = None) -> str:
        c = self.container(container)
        return c.log.read_text(errors="replace") if c.log and c.log.exists() else ""


_OWN_MOUNTS = ("proc", "dev", "tmp", "home", "sys", "root", "run")


def _read_only_tree(
    folder: Path, targets: list[Path], skip: tuple[str, ...] = ()
) -> tuple[list[str], list[Path]]:
    """bwrap arguments showing `folder`'s entries read-only, with room for `targets`.

    A mount point that does not exist on this machine (the image creates /var/lib/machine-health,
    /workspace ...) cannot be made inside a read-only bind: the folder above it becomes a tmpfs
    holding read-only binds of its entries, remounted read-only once the mounts are made.
    """
    args: list[str] = []
    remount: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.name in skip:
            continue
        if entry.is_symlink():
            args += ["--symlink", os.readlink(entry), str(entry)]
            continue
        if not entry.is_dir():
            args += ["--ro-bind", str(entry), str(entry)]
            continue
        inside = [t for t in targets if t.is_relative_to(entry) and t != entry]
        if any(not t.exists() for t in inside):
            args += ["--perms", "0755", "--tmpfs", str(entry)]
            sub_args, sub_remount = _read_only_tree(entry, inside)
            args += sub_args
            remount += [*sub_remount, entry]
        else:
            args += ["--ro-bind", str(entry), str(entry)]
    return args, remount


def resolve_executable(argv: list[str], env: dict[str, str]) -> list[str]:
    """The image's PATH lookup of the entrypoint (the sandbox's own PATH is the same)."""
    found = shutil.which(argv[0], path=env.get("PATH")) if argv else None
    if argv and found is None:
        raise PodFailed(f"{argv[0]!r} is not on the image's PATH")
    return [found] if found else []


class Kubelet:
    """Runs pods on this node; remembers them for Services and the recorded API answers."""

    def __init__(self, objects: Objects, network: Network, workdir: Path, namespace: str) -> None:
        self.objects = objects
        self.network = network
        self.workdir = workdir
        self.namespace = namespace
        self.pods: list[Pod] = []
        self.hosts_file = workdir / "hosts"
        self.hosts: dict[str, str] = {}
        self.claims = workdir / "claims"
        self.sa_dir = workdir / "serviceaccount"
        self.extra_env: dict[str, str] = {}
        self._write_hosts()

    # --- cluster DNS ----------------------------------------------------------------------
    def add_host(self, ip: str, *names: str) -> None:
        for name in names:
            self.hosts[name] = ip
        self._write_hosts()

    def _write_hosts(self) -> None:
        lines = ["127.0.0.1 localhost"] + [f"{ip} {name}" for name, ip in self.hosts.items()]
        self.hosts_file.write_text("\n".join(lines) + "\n")

    def service_names(self, name: str) -> list[str]:
        ns = self.namespace
        return [name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"]

    # --- pods -----------------------------------------------------------------------------
    def start(self, manifest: Manifest, name: str, *, containers: list[str] | None = None) -> Pod:
        """Start the pod's containers (`containers`: a subset, e.g. without a sidecar)."""
        spec = manifest["spec"]
        netns, ip = self.network.pod_namespace(name)
        root = self.workdir / "pods" / name
        root.mkdir(parents=True, exist_ok=True)
        pod = Pod(name, manifest, ip, netns, root, {}, self._user(spec))
        self.add_host(ip, name)
        for c_spec in spec["containers"]:
            if containers is not None and c_spec["name"] not in containers:
                continue
            env = self._env(pod, c_spec)
            argv = [*(c_spec.get("command") or ["machine-health"]), *(c_spec.get("args") or [])]
            pod.bwrap[c_spec["name"]] = self._mounts(pod, spec, c_spec)
            container = Container(c_spec["name"], argv, env, c_spec)
            pod.containers.append(container)
        for container in pod.containers:
            container.log = root / f"{container.name}.log"
            with container.log.open("ab") as out:
                container.process = subprocess.Popen(
                    pod.command(container), stdout=out, env=container.env,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
        self.pods.append(pod)
        return pod

    def _user(self, spec: Manifest) -> list[str]:
        pod_ctx = spec.get("securityContext") or {}
        ctx = {**pod_ctx, **((spec["containers"][0].get("securityContext")) or {})}
        uid = ctx.get("runAsUser")
        if uid is None or uid == 0:
            raise PodFailed("the pod does not declare a non-root runAsUser")
        gid = ctx.get("runAsGroup", uid)
        groups = [str(g) for g in [gid, pod_ctx.get("fsGroup")] if g is not None]
        user = ["setpriv", f"--reuid={uid}", f"--regid={gid}", f"--groups={','.join(groups)}",
                "--inh-caps=-all", "--bounding-set=-all"]  # fmt: skip
        if ctx.get("allowPrivilegeEscalation") is False:
            user.append("--no-new-privs")
        return user

    def _mounts(self, pod: Pod, spec: Manifest, c_spec: Manifest) -> list[str]:
        ctx = {**(spec.get("securityContext") or {}), **(c_spec.get("securityContext") or {})}
        if not ctx.get("readOnlyRootFilesystem"):
            raise PodFailed(f"{pod.name}/{c_spec['name']}: the root filesystem is not read-only")
        targets = [Path(m["mountPath"]) for m in c_spec.get("volumeMounts") or []]
        targets += [Path(d) for d in IMAGE_DIRS]
        args, remount = _read_only_tree(Path("/"), targets, skip=_OWN_MOUNTS)
        args += ["--dev", "/dev", "--proc", "/proc", "--ro-bind", "/sys", "/sys"]
        # The container runtime gives every container a writable /dev/shm (64 MiB in containerd).
        args += ["--perms", "1777", "--tmpfs", "/dev/shm"]
        args += ["--ro-bind", str(self.hosts_file), "/etc/hosts"]
        args += ["--tmpfs", "/home"]
        for folder in IMAGE_DIRS:  # what the image's Dockerfile creates, read-only
            args += ["--perms", "0755", "--dir", folder]
        # An image's root home is empty; the interpreter of .venv may live below /root (pyenv),
        # which the image's user could not enter: only that installation is shown there.
        args += ["--tmpfs", "/root"]
        prefix = Path(sys.base_prefix)
        if prefix.is_relative_to("/root"):
            for parent in reversed(prefix.parents[:-2]):  # /root/.pyenv, /root/.pyenv/versions
                args += ["--perms", "0755", "--dir", str(parent)]
            args += ["--ro-bind", str(prefix), str(prefix)]
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for mount in c_spec.get("volumeMounts") or []:
            volume = volumes.get(mount["name"])
            if volume is None:
                raise PodFailed(f"{pod.name}: volumeMount {mount['name']!r} has no volume")
            path = mount["mountPath"]
            read_only = bool(mount.get("readOnly"))
            if "emptyDir" in volume:  # one tmpfs per pod in the kubelet; per container here
                shared = pod.root / "emptydir" / volume["name"]
                shared.mkdir(parents=True, exist_ok=True)
                shared.chmod(0o777)
                args += ["--ro-bind" if read_only else "--bind", str(shared), path]
            elif "persistentVolumeClaim" in volume:
                claim = self.claims / volume["persistentVolumeClaim"]["claimName"]
                claim.mkdir(parents=True, exist_ok=True)
                claim.chmod(0o777)  # local-path volumes are world-writable folders
                args += ["--ro-bind" if read_only else "--bind", str(claim), path]
            elif "configMap" in volume or "secret" in volume:
                kind = "ConfigMap" if "configMap" in volume else "Secret"
                ref = volume.get("configMap") or volume.get("secret")
                ref_name = ref.get("name") or ref.get("secretName")
                data = self.objects.config_data(kind, ref_name)
                if data is None:
                    raise PodFailed(f"{pod.name}: {kind} {ref_name!r} of a volume does not exist")
                folder = pod.root / "volumes" / volume["name"]
                folder.mkdir(parents=True, exist_ok=True)
                for key, value in data.items():
                    (folder / key).write_text(value)
                args += ["--ro-bind", str(folder), path]
            else:
                raise PodFailed(f"{pod.name}: volume kind of {volume['name']!r} not supported")
        args += ["--tmpfs", "/run"]  # an image's /run is empty (/var/run links to it)
        if spec.get("automountServiceAccountToken", True) is not False:
            for parent in ("/run/secrets", "/run/secrets/kubernetes.io"):
                args += ["--perms", "0755", "--dir", parent]
            args += ["--ro-bind", str(self.sa_dir), SA_DIR]
        for folder in [*remount, "/home", "/root", "/run", "/"]:
            args += ["--remount-ro", str(folder)]
        args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", pod.name,
                 "--die-with-parent", "--new-session", "--chdir", IMAGE_WORKDIR]  # fmt: skip
        return args

    def _env(self, pod: Pod, c_spec: Manifest) -> dict[str, str]:
        env = dict(IMAGE_ENV)
        env.update(self.extra_env)  # the KUBERNETES_SERVICE_* variables every pod gets
        for source in c_spec.get("envFrom") or []:
            kind = "ConfigMap" if "configMapRef" in source else "Secret"
            ref = source.get("configMapRef") or source.get("secretRef")
            data = self.objects.config_data(kind, ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise PodFailed(f"{pod.name}: {kind} {ref['name']!r} (envFrom) does not exist")
            env.update({source.get("prefix", "") + k: v for k, v in data.items()})
        for var in c_spec.get("env") or []:
            if "value" in var:
                env[var["name"]] = str(var["value"])
                continue
            source = var.get("valueFrom") or {}
            if "fieldRef" in source:
                env[var["name"]] = self._field(pod, source["fieldRef"]["fieldPath"])
                continue
            kind = "ConfigMap" if "configMapKeyRef" in source else "Secret"
            ref = source.get("configMapKeyRef") or source.get("secretKeyRef")
            data = self.objects.config_data(kind, ref["name"]) or {}
            if ref["key"] not in data:
                if ref.get("optional"):
                    continue
                raise PodFailed(f"{pod.name}: {kind} {ref['name']}/{ref['key']} does not exist")
            env[var["name"]] = data[ref["key"]]
        return env

    def _field(self, pod: Pod, path: str) -> str:
        fields = {"metadata.name": pod.name, "metadata.namespace": self.namespace,
                  "status.podIP": pod.ip, "spec.nodeName": "node-0"}  # fmt: skip
        if path not in fields:
            raise PodFailed(f"{pod.name}: fieldRef {path} not supported here")
        return fields[path]

    # --- probes ---------------------------------------------------------------------------
    def probe(self, pod: Pod, kind: str = "readinessProbe") -> bool:
        """One probe of every container of the pod, as the kubelet runs it."""
        for container in pod.containers:
            if container.process is not None and container.process.poll() is not None:
                raise PodFailed(
                    f"{pod.name}/{container.name} exited with {container.process.returncode}:\n"
                    f"{pod.logs(container.name)[-3000:]}"
                )
            spec = container.spec.get(kind)
            if spec is None:
                continue
            timeout = float(spec.get("timeoutSeconds", 1))
            if "httpGet" in spec:
                get = spec["httpGet"]
                url = f"http://{pod.ip}:{pod.port(get['port'], container)}{get.get('path', '/')}"
                try:
                    if not 200 <= httpx.get(url, timeout=timeout).status_code < 400:
                        return False
                except httpx.HTTPError:
                    return False
            elif "tcpSocket" in spec:
                port = pod.port(spec["tcpSocket"]["port"], container)
                try:
                    socket.create_connection((pod.ip, port), timeout=timeout).close()
                except OSError:
                    return False
            elif "exec" in spec:
                out = pod.exec(spec["exec"]["command"], container=container.name,
                               timeout=max(timeout, 30))  # fmt: skip
                if out.returncode != 0:
                    return False
        return True

    def wait_ready(self, pod: Pod, timeout_s: float = 300) -> float:
        """Probe until ready (PodFailed on exit or time-out); returns the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.probe(pod):
                pod.ready = True
                return time.monotonic() - started
            time.sleep(1)
        raise PodFailed(f"{pod.name} not ready after {timeout_s:.0f}s:\n{pod.logs()[-3000:]}")

    def run_to_completion(self, manifest: Manifest, name: str, container: str,
                          timeout_s: float = 1800) -> tuple[int, Pod]:  # fmt: skip
        """A step pod: its main container to the end (the XCom sidecar is not started)."""
        pod = self.start(manifest, name, containers=[container])
        process = pod.container(container).process
        assert process is not None
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop(pod)
            raise
        return code, pod

    def stop(self, pod: Pod, timeout_s: float = 15) -> None:
        for container in pod.containers:
            if container.process and container.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(container.process.pid, signal.SIGTERM)
        for container in pod.containers:
            if container.process:
                try:
                    container.process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(container.process.pid, signal.SIGKILL)
                    container.process.wait(timeout=5)
        pod.ready = False

    def stop_all(self) -> None:
        for pod in reversed(self.pods):
            self.stop(pod)

    def matching(self, selector: dict[str, str]) -> list[Pod]:
        return [p for p in self.pods if all(p.labels.get(k) == v for k, v in selector.items())]


# --- Services (kube-proxy) -------------------------------------------------------------------
class ServiceProxy:
    """A ClusterIP: connections to (ip, port) go round-robin to the ready pods' targetPort."""

    def __init__(self, kubelet: Kubelet, ip: str, port: int, selector: dict[str, str],
                 target: int | str) -> None:  # fmt: skip
        self.kubelet, self.ip, self.port = kubelet, ip, port
        self.selector, self.target = selector, target
        self._turn = itertools.count()
        self._server = socket.create_server((ip, port))
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            ready = [p for p in self.kubelet.matching(self.selector) if p.ready]
            if not ready:
                client.close()
                continue
            pod = ready[next(self._turn) % len(ready)]
            try:
                upstream = socket.create_connection((pod.ip, pod.port(self.target)), timeout=5)
            except OSError:
                client.close()
                continue
            # The 5 s was for the connect only: an idle keep-alive connection must stay open
            # both ways (a timed-out direction would leave the client waiting for an answer).
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._stopped = True
        self._server.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def expose_services(kubelet: Kubelet) -> list[ServiceProxy]:
    """Every rendered ClusterIP Service: an IP, its DNS names and a forwarder per port."""
    proxies = []
    for service in kubelet.objects.of_kind("Service"):
        spec = service["spec"]
        if spec.get("clusterIP") == "None":
            continue
        ip = kubelet.network.service_ip()
        kubelet.add_host(ip, *kubelet.service_names(service["metadata"]["name"]))
        for port in spec.get("ports") or []:
            target = port.get("targetPort", port["port"])
            proxies.append(ServiceProxy(kubelet, ip, int(port["port"]), spec["selector"], target))
    return proxies

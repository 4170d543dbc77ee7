"""The local "cluster": the chart rendered and its workloads run as a node would (the session's
cluster is the `cluster` fixture of tests/cluster/conftest.py; this module is what it runs).

Run by `make cluster-check`, which starts pytest in a network namespace of its own
(`unshare --net`): the bridge, the pod addresses and the Services live only there, and all of
it is gone with the process. Order, as docs/INSTALL-K3S.md installs it: MongoDB (nx-27017
standing in for the Bitnami chart, in its own pod network namespace), the chart (MLflow, the
toolbox, the API replicas, the UI), the data copied into the workspace, the first training in
the toolbox, the first admin user, then the retrain DAGs' step pods.

MH_CLUSTER_FULL=1 (`make bench`'s full run) trains the served turbofan ensemble; the default
(`make test`) retrains turbofan with the tree model, the same code path at a fraction of the
time. Both run the chart's default values: values-production.yaml is rendered, linted and
schema-checked by `make helm-check` and tests/helm, not run here.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from machine_health.domains import DOMAINS
from tests.cluster.apiserver import RecordedApiServer
from tests.cluster.kubelet import (
    REPO,
    VENV_BIN,
    Kubelet,
    Objects,
    Pod,
    ServiceProxy,
)

HELM = REPO / "tools" / "bin" / "helm"
CHART = REPO / "kubernetes" / "chart" / "machine-health"
RELEASE = NAMESPACE = "machine-health"
DATA = Path(os.environ.get("MH_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
STORE_HOST = "mongodb-0.mongodb-headless"
FULL = os.environ.get("MH_CLUSTER_FULL") == "1"
#: `make test` trains turbofan's tree model (the same code path, a fraction of the time); the
#: full run (MH_CLUSTER_FULL=1) trains what is served.
FAST_TRAIN: dict[str, list[str]] = {} if FULL else {"turbofan": ["--model", "hgb"]}
TOOLS = ("bwrap", "setpriv", "nsenter", "ip", "unshare")


def in_own_network_namespace() -> bool:
    """`unshare --net` gives a namespace with nothing but `lo`: the bridge may be added there."""
    import socket

    return [name for _, name in socket.if_nameindex()] == ["lo"]


@dataclass
class Cluster:
    kubelet: Kubelet
    objects: Objects
    workdir: Path
    admin_password: str
    timings: dict[str, float] = field(default_factory=dict)
    proxies: list[ServiceProxy] = field(default_factory=list)
    api_server: RecordedApiServer | None = None
    store: Store | None = None
    simulated: str = ""

    def pods(self, component: str) -> list[Pod]:
        return self.kubelet.matching({"app.kubernetes.io/component": component})

    def deployment(self, component: str) -> dict[str, Any]:
        for doc in self.objects.of_kind("Deployment"):
            labels = doc["spec"]["template"]["metadata"]["labels"]
            if labels.get("app.kubernetes.io/component") == component:
                return doc
        raise KeyError(component)

    def token(self, base_url: str) -> str:
        response = httpx.post(f"{base_url}/token",
                              data={"username": "admin", "password": self.admin_password},
                              timeout=30)  # fmt: skip
        response.raise_for_status()
        return response.json()["access_token"]


def helm_template(*args: str) -> list[dict[str, Any]]:
    if not HELM.is_file():
        pytest.fail("tools/bin/helm is missing: `make cluster-check` installs it (make helm-check)")
    out = subprocess.run(
        [str(HELM), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        pytest.fail(f"helm template failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def render(workdir: Path) -> Objects:
    """The chart with fresh secrets, the toolbox on (the install's first training needs it)."""
    values = {
        "secrets.jwtSecret": secrets.token_urlsafe(40),
        "secrets.serviceToken": secrets.token_urlsafe(40),
        "secrets.mongodbUri": f"mongodb://{STORE_HOST}:27017/machine_health",
        "toolbox.enabled": "true",
    }
    if not FULL:
        values["config.extraEnv.MH_RETRAIN_TURBOFAN_MODEL"] = "hgb"
    args = [a for k, v in values.items() for a in ("--set", f"{k}={v}")]
    docs = helm_template(*args)
    (workdir / "rendered.yaml").write_text(yaml.safe_dump_all(docs))
    return Objects(docs)


def pod_from(deployment: dict[str, Any], index: int) -> tuple[dict[str, Any], str]:
    template = deployment["spec"]["template"]
    name = f"{deployment['metadata']['name']}-{index}"
    manifest = {"kind": "Pod", "metadata": {**template["metadata"], "name": name},
                "spec": template["spec"]}  # fmt: skip
    return manifest, name


class Store:
    """MongoDB's stand-in (not a workload of this chart): nx-27017 in a pod network namespace."""

    def __init__(self, kubelet: Kubelet, workdir: Path) -> None:
        self.netns, self.ip = kubelet.network.pod_namespace("mongodb-0")
        kubelet.add_host(self.ip, STORE_HOST, f"{STORE_HOST}.{NAMESPACE}.svc.cluster.local")
        self.data = workdir / "mongodb"
        self.data.mkdir()
        self.log = workdir / "mongodb.log"
        self.pid_file = workdir / "mongodb.nxpid"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import pymongo

        self.process = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.netns}", str(VENV_BIN / "nx-27017"),
             "--host", "0.0.0.0", "--port", "27017", "--data-dir", str(self.data),
             "--log-file", str(self.log), "--pid-file", str(self.pid_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            client = pymongo.MongoClient(f"mongodb://{self.ip}:27017/",
                                         serverSelectionTimeoutMS=500)  # fmt: skip
            try:
                client.admin.command("ping")
                return
            except pymongo.errors.PyMongoError:
                time.sleep(0.2)
            finally:
                client.close()
        self.stop()
        pytest.fail(f"the store did not start:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)
        self.process = None


def exec_ok(pod: Pod, argv: list[str], **kwargs: Any) -> str:
    out = pod.exec(argv, **kwargs)
    if out.returncode != 0:
        pytest.fail(f"`{' '.join(argv)}` in {pod.name} failed ({out.returncode}):\n"
                    f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")  # fmt: skip
    return out.stdout


def install(cluster: Cluster) -> None:
    """docs/INSTALL-K3S.md, from the chart on: MLflow, toolbox, data, training, API, user, UI."""
    kubelet, timings = cluster.kubelet, cluster.timings
    mlflow, name = pod_from(cluster.deployment("mlflow"), 0)
    timings["mlflow_ready_s"] = kubelet.wait_ready(kubelet.start(mlflow, name), 120)
    toolbox_manifest, name = pod_from(cluster.deployment("toolbox"), 0)
    toolbox = kubelet.start(toolbox_manifest, name)
    kubelet.wait_ready(toolbox, 120)
    # `kubectl cp` of the data sets into the workspace claim (linked here: same bytes).
    workspace = toolbox_manifest["spec"]["volumes"]
    claim = next(v["persistentVolumeClaim"]["claimName"] for v in workspace
                 if "persistentVolumeClaim" in v)  # fmt: skip
    data = kubelet.claims / claim / "data"
    data.mkdir(parents=True, exist_ok=True)
    for source in sorted(DATA.iterdir()):
        if source.is_dir():
            (data / source.name).symlink_to(source)
    for domain in sorted(DOMAINS):  # an API pod is ready only once every domain is served
        started = time.monotonic()
        exec_ok(toolbox, ["machine-health", "train", domain, *FAST_TRAIN.get(domain, [])])
        timings[f"train_{domain}_s"] = round(time.monotonic() - started, 1)
    api = cluster.deployment("api")
    pods = [kubelet.start(*pod_from(api, i)) for i in range(int(api["spec"]["replicas"]))]
    for pod in pods:
        timings[f"{pod.name}_ready_s"] = round(kubelet.wait_ready(pod, 300), 1)
    exec_ok(pods[0], ["machine-health", "users", "create", "admin", "--role", "admin",
                      "--password-env", "MH_ADMIN_PASSWORD"],
            env={"MH_ADMIN_PASSWORD": cluster.admin_password})  # fmt: skip
    ui, name = pod_from(cluster.deployment("ui"), 0)
    kubelet.start(ui, name)  # its readiness is a test of its own: the install goes on without
    # Demo traffic through the API's Service (round-robin over the replicas), labels included:
    # what the retrain DAGs then learn from.
    started = time.monotonic()
    service = kubelet.hosts["machine-health-api"]
    out = subprocess.run(
        [str(VENV_BIN / "machine-health"), "simulate", "--api-url", f"http://{service}:8000",
         "--username", "admin", "--password-env", "MH_SIMULATOR_PASSWORD", "--units", "4",
         "--limit", "110", "--data-dir", str(DATA)],
        env={**os.environ, "MH_SIMULATOR_PASSWORD": cluster.admin_password, "MH_LOG_JSON": "0"},
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        pytest.fail(
            f"simulate through the Service failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
        )
    cluster.simulated = out.stdout
    timings["simulate_s"] = round(time.monotonic() - started, 1)

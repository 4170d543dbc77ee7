"""The chart's workloads and the DAGs' step pods, run the way the cluster runs them.

See tests/cluster/kubelet.py for the constraints and docs/CLUSTER-CHECK.md for what is and is
not faithful. Each workload must pass its own readiness probe on its pod IP; the retrain DAG of
each domain runs its rendered step pods end to end, and its reload reaches every API replica.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import jinja2
import pytest
import yaml

from machine_health.domains import DOMAINS
from tests.cluster.kubelet import REPO
from tests.cluster.rig import DATA, Cluster

RENDER_PODS = REPO / "scripts" / "render_dag_pods.py"


def test_every_workload_passes_its_readiness_probe(cluster: Cluster) -> None:
    for component in ("api", "ui", "mlflow", "toolbox"):
        pods = cluster.pods(component)
        assert pods, f"no {component} pod ran"
        for pod in pods:
            cluster.timings[f"{pod.name}_ready_s"] = round(cluster.kubelet.wait_ready(pod, 120), 1)
    assert len(cluster.pods("api")) >= 2


def test_api_answers_through_its_service_with_a_token(cluster: Cluster) -> None:
    """What `helm test` does: a token, then a prediction through the Service's name."""
    service = cluster.kubelet.hosts["machine-health-api"]
    base = f"http://{service}:8000"
    token = cluster.token(base)
    window = [0.01 * ((i * 37) % 101 - 50) for i in range(2048)]
    body = {"asset_id": "cluster-motor", "sample_rate": 48000.0, "rpm": 1797.0, "samples": window}
    answer = httpx.post(f"{base}/predict/vibration", json=body, timeout=60,
                        headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.json()["archived"] == "archived"


def test_containers_run_read_only_as_their_declared_user(cluster: Cluster) -> None:
    """The root filesystem refuses writes; the process has the manifest's uid and gid.

    (A listener bound to loopback only is caught by the readiness test: probes go to the pod IP.)
    """
    api = cluster.pods("api")[0]
    out = api.exec(["python", "-c", "open('/home/app/x', 'w')"])
    assert out.returncode != 0 and "Read-only file system" in out.stderr
    out = api.exec(["python", "-c", "import os; print(os.getuid(), os.getgid(), os.getgroups())"])
    assert out.stdout.split()[:2] == ["10001", "10001"], out.stdout


def _step_pods(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """The DAGs' KubernetesPodOperator pods, built by the real Airflow from this render."""
    out_dir = cluster.workdir / "pod-specs"
    if not out_dir.exists():
        done = subprocess.run(
            [str(REPO / ".venv" / "bin" / "python"), str(RENDER_PODS),
             str(cluster.workdir / "rendered.yaml"), str(out_dir)],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    return {p.stem: yaml.safe_load(p.read_text()) for p in sorted(out_dir.glob("*.yaml"))}


def _render_args(args: list[str], run_id: str, moment: str) -> list[str]:
    """What Airflow's templating makes of the arguments (a manual run: no data interval)."""
    context = {"run_id": run_id, "params": {"force": True},
               "dag_run": {"run_after": _Instant(moment)}}  # fmt: skip
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701 - argv
    return [env.from_string(a).render(context) for a in args]


class _Instant:
    def __init__(self, text: str) -> None:
        self.text = text

    def isoformat(self) -> str:
        return self.text


def _run_step(cluster: Cluster, manifest: dict[str, Any], name: str) -> dict[str, Any]:
    spec = manifest["spec"]
    base = next(c for c in spec["containers"] if c["name"] == "base")
    code, pod = cluster.kubelet.run_to_completion(manifest, name, "base")
    assert code == 0, f"step pod {name} failed ({code}):\n{pod.logs('base')[-4000:]}"
    mounts = {m["mountPath"]: m["name"] for m in base.get("volumeMounts") or []}
    xcom = pod.root / "emptydir" / mounts["/airflow/xcom"] / "return.json"
    assert xcom.is_file(), f"{name} wrote no XCom:\n{pod.logs('base')[-2000:]}"
    return json.loads(xcom.read_text())


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_retrain_dag_step_pods_end_to_end_reach_every_replica(
    cluster: Cluster, domain: str
) -> None:
    pods = _step_pods(cluster)
    steps = ["check", "extract", "validate", "rescale", "train", "evaluate", "register", "reload"]
    run_id = f"manual__cluster-{domain}"
    moment = datetime.now(UTC).isoformat()  # a manual run's run_after: when it was triggered
    results: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    for step in steps:
        manifest = pods[f"retrain_{domain}.{step}"]
        base = next(c for c in manifest["spec"]["containers"] if c["name"] == "base")
        base["args"] = _render_args(base["args"], run_id, moment)
        step_started = time.monotonic()
        results[step] = _run_step(cluster, manifest, f"{domain}-{step}")
        cluster.timings[f"dag_{domain}_{step}_s"] = round(time.monotonic() - step_started, 1)
        if step == "check":
            assert results["check"]["retrain"], results["check"]
    cluster.timings[f"dag_{domain}_s"] = round(time.monotonic() - started, 1)
    assert not results["train"].get("skipped"), f"nothing was trained: {results['train']}"
    reload = results["reload"]
    version = str(results["register"]["version"])
    # the reload step found the replicas through the Kubernetes API (the recorded-answer mock)
    assert cluster.api_server is not None
    assert any("endpointslices" in path for path in cluster.api_server.requests)
    replicas = cluster.pods("api")
    if results["register"].get("promoted") and reload.get("replicas"):
        assert sorted(reload["replicas"]) == sorted(f"http://{p.ip}:8000" for p in replicas)
        for pod in replicas:
            served = httpx.get(f"http://{pod.ip}:8000/version", timeout=10).json()
            assert str(served["models"][domain]["version"]) == version
    else:
        pytest.fail(f"the retrained {domain} model was not promoted and reloaded: {results}")


def test_step_pods_hold_no_signing_key(cluster: Cluster) -> None:
    for name, manifest in _step_pods(cluster).items():
        text = json.dumps(manifest)
        assert "MH_JWT_SECRET" not in text, f"{name} gets the JWT signing key"


def _fd001_unit(cycles: int) -> list[dict[str, Any]]:
    """The first `cycles` cycles of the longest FD001 test unit, as /predict/turbofan bodies."""
    from machine_health.domains.turbofan.data import load_subset

    test = load_subset(DATA, "FD001").test
    unit = test.groupby("unit").size().idxmax()
    rows = test[test["unit"] == unit].sort_values("cycle").head(cycles)
    return [
        {"cycle": int(r["cycle"]),
         "settings": [float(r[f"setting_{i}"]) for i in range(1, 4)],
         "sensors": [float(r[f"sensor_{i}"]) for i in range(1, 22)]}
        for _, r in rows.iterrows()
    ]  # fmt: skip


def test_any_replica_serves_any_unit(cluster: Cluster) -> None:
    """One unit's cycles alternately on both replicas = the same cycles on one replica."""
    first, second = (f"http://{p.ip}:8000" for p in cluster.pods("api")[:2])
    headers = {"Authorization": f"Bearer {cluster.token(first)}"}
    suffix = secrets.token_hex(3)
    answers: dict[str, list[Any]] = {"alternating": [], "one": []}
    with httpx.Client(headers=headers, timeout=60) as client:
        for i, body in enumerate(_fd001_unit(200)):
            for mode, url in (("alternating", (first, second)[i % 2]), ("one", first)):
                response = client.post(
                    f"{url}/predict/turbofan", json={**body, "unit_id": f"{mode}-{suffix}"}
                )
                assert response.status_code == 200, (mode, body["cycle"], response.text)
                answers[mode].append(response.json()["prediction"])
    differ = [i for i, (a, b) in enumerate(zip(*answers.values(), strict=True)) if a != b]
    assert not differ, f"{len(differ)} of 200 answers differ, first at cycle {differ[0] + 1}"


def test_replicas_stay_ready_and_spool_while_the_store_is_down(cluster: Cluster) -> None:
    """Readiness = can answer /predict: a store outage keeps the replicas in the Service."""
    assert cluster.store is not None
    api = cluster.pods("api")
    base = f"http://{api[0].ip}:8000"
    headers = {"Authorization": f"Bearer {cluster.token(base)}"}
    window = [0.01 * ((i * 37) % 101 - 50) for i in range(2048)]
    cluster.store.stop()
    try:
        time.sleep(3)  # longer than the replicas' store check
        for pod in api:
            assert cluster.kubelet.probe(pod), f"{pod.name} went unready with the store down"
        body = {"asset_id": "outage-motor", "sample_rate": 48000.0, "samples": window}
        answer = httpx.post(f"{base}/predict/vibration", json=body, headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["archived"] == "spooled"
    finally:
        cluster.store.start()

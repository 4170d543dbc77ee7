"""The retrain DAGs, parsed by the REAL Airflow of `.venv-airflow` (a subprocess: the test venv
has no Airflow, and the Airflow venv has no machine_health)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from machine_health.domains import DOMAINS

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_PYTHON = REPO / ".venv-airflow" / "bin" / "python"
PROBE = Path(__file__).with_name("airflow_probe.py")
STEPS = ["extract", "validate", "rescale", "train", "evaluate", "register", "reload"]

SIDECAR = json.dumps(
    {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}
)
# What the chart's pipeline ConfigMap publishes (kubernetes/chart/.../pipeline-configmap.yaml).
CHART_ENV = {
    "MH_PIPELINE_NAMESPACE": "mh-test",
    "MH_PIPELINE_IMAGE": "registry.example.com/machine-health/pipeline:1.2.3",
    "MH_PIPELINE_IMAGE_PULL_POLICY": "Always",
    "MH_PIPELINE_IMAGE_PULL_SECRETS": json.dumps(["registry-credentials"]),
    "MH_PIPELINE_SERVICE_ACCOUNT": "mh-pipeline-sa",
    "MH_PIPELINE_CONFIG_MAP": "mh-config",
    "MH_PIPELINE_SECRET_NAME": "mh-secret",
    "MH_PIPELINE_WORKSPACE_CLAIM": "mh-workspace",
    "MH_PIPELINE_WORKSPACE_MOUNT": "/workspace",
    "MH_PIPELINE_VAR_DIR": "/workspace/var",
    "MH_PIPELINE_TMP_SIZE_LIMIT": "1Gi",
    "MH_PIPELINE_POD_LABELS": json.dumps(
        {"app.kubernetes.io/name": "machine-health", "app.kubernetes.io/component": "pipeline"}
    ),
    "MH_PIPELINE_RESOURCES": json.dumps(
        {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "6Gi"}}
    ),
    "MH_PIPELINE_SECURITY_CONTEXT": json.dumps(
        {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    ),
    "MH_PIPELINE_POD_SECURITY_CONTEXT": json.dumps({"runAsUser": 10001, "fsGroup": 10001}),
    # The connection KubernetesPodOperator uses: in-cluster, and its XCom sidecar's resources.
    "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(
        {
            "conn_type": "kubernetes",
            "extra": {
                "in_cluster": True,
                "xcom_sidecar_container_image": "registry.example.com/alpine:3.24.2",
                "xcom_sidecar_container_resources": SIDECAR,
            },
        }
    ),
}


def probe(
    tmp_path: Path, *args: str, mode: str = "local", extra_env: dict[str, str] | None = None
) -> dict:
    if not AIRFLOW_PYTHON.exists():
        pytest.fail(f"{AIRFLOW_PYTHON} is missing: run `make install`")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "airflow" / "dags"),
        # The dag-processor puts the DAG bundle on sys.path; a bare DagBag needs it here.
        "PYTHONPATH": str(REPO / "airflow" / "dags"),
        "MH_EXECUTION_MODE": mode,
        **(CHART_ENV if mode == "kubernetes" else {}),
        **(extra_env or {}),
    }
    out = subprocess.run(
        [str(AIRFLOW_PYTHON), str(PROBE), *args], env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["local", "kubernetes"])
def test_dagbag_has_tagged_retrying_dags(tmp_path: Path, mode: str) -> None:
    result = probe(tmp_path, "dagbag", mode=mode)
    assert result["import_errors"] == {}
    dags = result["dags"]
    # one scheduled DAG file per registered domain, and the on-demand one
    assert set(dags) == {f"retrain_{d}" for d in DOMAINS} | {"retrain_on_demand"}
    expected_operator = "KubernetesPodOperator" if mode == "kubernetes" else "BashOperator"
    for dag_id, dag in dags.items():
        assert dag["tags"] and "machine-health" in dag["tags"], dag_id
        assert min(dag["retries"].values()) >= 2, dag_id
        assert dag["catchup"] is False and dag["max_active_runs"] == 1
        assert dag["doc_md"]
        # check -> short-circuit -> the seven steps, in order.
        assert dag["tasks"] == ["check", "enough_new_data", *STEPS]
        assert dag["upstream"]["extract"] == ["enough_new_data"]
        assert dag["operators"]["enough_new_data"] == "ShortCircuitOperator"
        assert {dag["operators"][s] for s in ["check", *STEPS]} == {expected_operator}
    assert dags["retrain_vibration"]["schedule"] == "@daily"
    assert "domain" in dags["retrain_on_demand"]["params"]


def test_schedule_comes_from_the_environment(tmp_path: Path) -> None:
    dags = probe(tmp_path, "dagbag", extra_env={"MH_RETRAIN_SCHEDULE": "0 3 * * 1"})["dags"]
    assert dags["retrain_turbofan"]["schedule"] == "0 3 * * 1"
    assert dags["retrain_on_demand"]["schedule"] in ("None", "")


def test_rendered_pod_of_every_step(tmp_path: Path) -> None:
    """Each step's pod: image, command, env, volumes, service account; YAML to var/pod-specs/."""
    out_dir = REPO / "var" / "pod-specs"
    result = probe(tmp_path, "pods", str(out_dir), mode="kubernetes")
    assert result["import_errors"] == {}
    pods = result["pods"]
    for dag_id, domain in ((f"retrain_{d}", d) for d in DOMAINS):
        for step in ["check", *STEPS]:
            pod = pods[f"{dag_id}.{step}"]
            spec = pod["spec"]
            assert pod["metadata"]["namespace"] == "mh-test"
            assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "pipeline"
            assert spec["serviceAccountName"] == "mh-pipeline-sa"
            assert spec["securityContext"] == {"runAsUser": 10001, "fsGroup": 10001}
            base = next(c for c in spec["containers"] if c["name"] == "base")
            assert base["image"] == CHART_ENV["MH_PIPELINE_IMAGE"]
            assert base["imagePullPolicy"] == "Always"
            assert base["command"] == ["machine-health"]
            assert base["args"][:4] == ["pipeline", step, "--domain", domain]
            assert {"--run-id", "--interval-start", "--interval-end"} <= set(base["args"])
            assert base["resources"]["limits"] == {"cpu": "2", "memory": "6Gi"}
            assert base["securityContext"]["runAsNonRoot"] is True
            env = {e["name"]: e["value"] for e in base["env"] if "value" in e}
            assert env == {
                "MH_VAR_DIR": "/workspace/var",
                "MH_EXECUTION_MODE": "kubernetes",
                "TMPDIR": "/tmp",
                "MPLCONFIGDIR": "/tmp/matplotlib",
            }
            sources = {(k, v["name"]) for s in base["envFrom"] for k, v in s.items()}
            assert sources == {("configMapRef", "mh-config")}
            mounts = {m["name"]: m["mountPath"] for m in base["volumeMounts"]}
            assert mounts["workspace"] == "/workspace" and mounts["xcom"] == "/airflow/xcom"
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert volumes["workspace"]["persistentVolumeClaim"]["claimName"] == "mh-workspace"
            sidecar = next(c for c in spec["containers"] if c["name"] != "base")
            assert sidecar["securityContext"]["runAsNonRoot"] is True
            assert sidecar["resources"]["limits"] == {"cpu": "100m", "memory": "64Mi"}
        yaml_file = out_dir / f"{dag_id}.train.yaml"
        assert yaml_file.exists() and "kind: Pod" in yaml_file.read_text()
    # The on-demand DAG takes its domain from the trigger's params.
    assert pods["retrain_on_demand.train"]["spec"]["containers"][0]["args"][3] == (
        "{{ params.domain }}"
    )


def test_pods_built_from_the_charts_own_configmap(tmp_path: Path) -> None:
    """The DAGs fed the pipeline ConfigMap the chart renders (real helm) build pods that use the
    chart's own objects, with limits on every container, the XCom sidecar included."""
    from tests.support.helm import EXISTING_SECRET, template

    rendered = template(
        *EXISTING_SECRET,
        *("--set", "imagePullSecrets[0].name=regcred"),
        *("--set", "pipeline.xcomSidecarImage=registry.local/mirror/alpine:3.24.2"),
    )
    by_kind: dict[str, list[dict]] = {}
    for doc in rendered:
        by_kind.setdefault(doc["kind"], []).append(doc)
    config = next(c for c in by_kind["ConfigMap"] if "MH_PIPELINE_IMAGE" in c["data"])["data"]
    result = probe(tmp_path, "pods", str(tmp_path / "pods"), mode="kubernetes", extra_env=config)
    assert result["import_errors"] == {}
    claims = {c["metadata"]["name"] for c in by_kind["PersistentVolumeClaim"]}
    accounts = {a["metadata"]["name"] for a in by_kind["ServiceAccount"]}
    configmaps = {c["metadata"]["name"]: c["data"] for c in by_kind["ConfigMap"]}
    api_service = next(s for s in by_kind["Service"] if s["metadata"]["name"].endswith("-api"))
    for name, pod in result["pods"].items():
        spec = pod["spec"]
        assert pod["metadata"]["namespace"] == "machine-health", name
        assert spec["serviceAccountName"] in accounts, name
        assert spec["imagePullSecrets"] == [{"name": "regcred"}], name
        sidecar = next(c for c in spec["containers"] if c["name"] != "base")
        assert sidecar["image"] == "registry.local/mirror/alpine:3.24.2", name
        base = next(c for c in spec["containers"] if c["name"] == "base")
        # The environment the kubelet would give the step: the main ConfigMap, resolved.
        (source,) = base["envFrom"]
        main = configmaps[source["configMapRef"]["name"]]
        assert main["MH_SERVING_SERVICE"] == api_service["metadata"]["name"], name
        env = {e["name"]: e for e in base["env"]}
        assert env["MH_KUBERNETES_NAMESPACE"]["valueFrom"]["fieldRef"] == {
            "fieldPath": "metadata.namespace"
        }, name
        secret_names = {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in env.values()
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert secret_names == {"machine-health-secrets"}, name
        assert "MH_JWT_SECRET" not in env, name
        workspace = next(v for v in spec["volumes"] if v["name"] == "workspace")
        assert workspace["persistentVolumeClaim"]["claimName"] in claims, name
        for container in spec["containers"]:
            limits = container["resources"]["limits"]
            assert {"cpu", "memory"} <= set(limits), f"{name}/{container['name']}"
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


# --- step pods: writable /tmp, kept failures, least secrets, namespace, pull secrets -----------


@pytest.fixture(scope="module")
def step_pods(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("step-pods")
    result = probe(tmp, "pods", str(tmp / "pods"), mode="kubernetes")
    assert result["import_errors"] == {}
    return result


def base_container(pod: dict) -> dict:
    return next(c for c in pod["spec"]["containers"] if c["name"] == "base")


def test_step_pods_have_a_writable_tmp_and_keep_failed_pods(step_pods: dict) -> None:
    """Read-only root: /tmp is an emptyDir with a size limit, and TMPDIR / MPLCONFIGDIR point
    there (tempfile, matplotlib). Failed pods stay for inspection; successful ones go."""
    for name, pod in step_pods["pods"].items():
        base = base_container(pod)
        assert base["securityContext"].get("readOnlyRootFilesystem") in (None, True), name
        mounts = {m["mountPath"]: m["name"] for m in base["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes[mounts["/tmp"]]["emptyDir"] == {"sizeLimit": "1Gi"}, name
        env = {e["name"]: e.get("value") for e in base["env"]}
        assert env["TMPDIR"] == "/tmp", name
        assert env["MPLCONFIGDIR"].startswith("/tmp/"), name
        assert step_pods["operators"][name]["on_finish_action"] == "delete_succeeded_pod", name


def test_step_pods_get_only_the_secret_keys_they_need(step_pods: dict) -> None:
    """No envFrom of the whole Secret: the API's JWT signing key never reaches a step pod."""
    for name, pod in step_pods["pods"].items():
        base = base_container(pod)
        assert "MH_JWT_SECRET" not in json.dumps(pod), name
        assert all("secretRef" not in source for source in base["envFrom"]), name
        refs = {
            e["name"]: e["valueFrom"]["secretKeyRef"]
            for e in base["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert set(refs) == {
            "MH_MONGODB_URI",
            "MH_SERVICE_TOKEN",
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
        }, name
        assert {ref["name"] for ref in refs.values()} == {"mh-secret"}, name
        assert all(ref["key"] == key for key, ref in refs.items()), name
        assert not refs["MH_MONGODB_URI"].get("optional"), name
        assert not refs["MH_SERVICE_TOKEN"].get("optional"), name
        assert refs["MLFLOW_TRACKING_USERNAME"]["optional"] is True, name
        assert refs["MLFLOW_TRACKING_PASSWORD"]["optional"] is True, name


def test_step_pods_know_their_namespace(step_pods: dict) -> None:
    """The reload step reads MH_KUBERNETES_NAMESPACE (config.py's kubernetes_namespace)."""
    for name, pod in step_pods["pods"].items():
        env = {e["name"]: e for e in base_container(pod)["env"]}
        assert "MH_K8S_NAMESPACE" not in env, name
        field = env["MH_KUBERNETES_NAMESPACE"]["valueFrom"]["fieldRef"]
        assert field["fieldPath"] == "metadata.namespace", name


def test_step_pods_pull_with_the_charts_secrets_and_sidecar_image(step_pods: dict) -> None:
    for name, pod in step_pods["pods"].items():
        assert pod["spec"]["imagePullSecrets"] == [{"name": "registry-credentials"}], name
        sidecar = next(c for c in pod["spec"]["containers"] if c["name"] != "base")
        assert sidecar["image"] == "registry.example.com/alpine:3.24.2", name


# --- the pipeline ConfigMap as a volume: a new image without restarting Airflow ----------------


def write_configmap_volume(directory: Path, data: dict[str, str], version: int) -> None:
    """The layout the kubelet gives a ConfigMap volume: `key -> ..data/key`, `..data` a symlink
    to a timestamped directory, swapped atomically on every update (no subPath)."""
    directory.mkdir(exist_ok=True)
    payload = directory / f"..2026_01_01_00_00_0{version}.000000000"
    payload.mkdir()
    for key, value in data.items():
        (payload / key).write_text(value, encoding="utf-8")
    link = directory / "..data_tmp"
    link.symlink_to(payload.name)
    link.replace(directory / "..data")
    for key in data:
        if not (directory / key).is_symlink():
            (directory / key).symlink_to(f"..data/{key}")


def test_a_changed_config_file_changes_the_pods(tmp_path: Path) -> None:
    """The DAGs read MH_PIPELINE_* from MH_PIPELINE_CONFIG_DIR first: after a `helm upgrade`
    the kubelet rewrites the files, and the next parse builds pods with the new image, while
    the environment Airflow started with (extraEnvFrom) still names the old one."""
    config_dir = tmp_path / "pipeline-config"
    old, new = "machine-health/pipeline:1.0.0", "machine-health/pipeline:1.1.0"
    files = {k: v for k, v in CHART_ENV.items() if k.startswith("MH_PIPELINE_")}
    write_configmap_volume(config_dir, {**files, "MH_PIPELINE_IMAGE": old}, version=1)
    stale_env = {"MH_PIPELINE_CONFIG_DIR": str(config_dir), "MH_PIPELINE_IMAGE": "stale:0.0.1"}

    def images() -> set[str]:
        result = probe(tmp_path, "pods", str(tmp_path / "pods"), mode="kubernetes",
                       extra_env=stale_env)  # fmt: skip
        assert result["import_errors"] == {}
        return {base_container(pod)["image"] for pod in result["pods"].values()}

    assert images() == {old}
    write_configmap_volume(config_dir, {**files, "MH_PIPELINE_IMAGE": new}, version=2)
    assert images() == {new}


def test_without_a_config_dir_the_environment_still_configures_the_pods(step_pods: dict) -> None:
    """Local runs (and scripts without the volume) keep working from the environment alone."""
    assert {base_container(p)["image"] for p in step_pods["pods"].values()} == {
        CHART_ENV["MH_PIPELINE_IMAGE"]
    }

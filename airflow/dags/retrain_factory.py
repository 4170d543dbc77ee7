"""One factory for the retraining DAGs (orchestration only: no ML code, no machine_health import).

Every step is the SAME command line, `machine-health pipeline <step> --domain D --run-id R
--interval-start T0 --interval-end T1`, run either
- `MH_EXECUTION_MODE=kubernetes`: as a KubernetesPodOperator pod of the pipeline image, configured
  by the chart's pipeline ConfigMap (`MH_PIPELINE_*`: namespace, image, pull secrets,
  ServiceAccount, Secret and ConfigMap names, workspace claim, labels, resources, security
  contexts), read from the files of MH_PIPELINE_CONFIG_DIR (the ConfigMap mounted as a volume,
  refreshed by the kubelet) or else from the environment, or
- `MH_EXECUTION_MODE=local` (default): on this machine with the project's CLI
  (`MH_PIPELINE_CLI`, default `<repo>/.venv/bin/machine-health`).

The first task, `check`, answers whether enough new labelled data arrived (or the monitoring
triggers fired: drift, live performance); `enough_new_data` short-circuits the run otherwise.
Everything here is read at parse time (environment, config files); nothing calls a database.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param
from step_names import STEPS as PIPELINE_STEPS

#: `check` decides whether the run goes on (`enough_new_data`); the other steps follow in order.
CHECK, *STEPS = PIPELINE_STEPS
#: the domains with a scheduled DAG file here (`retrain_<domain>.py`), the on-demand DAG's choices.
#: Found by file name: the Airflow environment never imports the ML package (or its registry).
DOMAINS = tuple(
    sorted(
        path.stem.removeprefix("retrain_")
        for path in Path(__file__).parent.glob("retrain_*.py")
        if path.stem not in ("retrain_factory", "retrain_on_demand")
    )
)
REPO = Path(__file__).resolve().parents[2]
RETRIES = 2
#: generous per-step limits: a hung step must not hold the only active run forever.
TIMEOUTS = {"train": timedelta(hours=2), "evaluate": timedelta(minutes=30)}
DEFAULT_TIMEOUT = timedelta(minutes=20)

# Jinja of the run's keys: a manual run in Airflow 3 (UI, REST API with no logical date) has no
# data interval, and then `data_interval_*` are not even defined in the context (strict
# undefined): the run's own fixed `run_after` stands in (never "now": a retried task must see
# the same instant).
RUN_ID = "{{ run_id }}"
_INTERVAL = (
    "{{ (data_interval_%s if data_interval_%s is defined and data_interval_%s "
    "else dag_run.run_after).isoformat() }}"
)
INTERVAL_START = _INTERVAL % (("start",) * 3)
INTERVAL_END = _INTERVAL % (("end",) * 3)
FORCE = "{{ '--force' if params.force else '--no-force' }}"


def execution_mode() -> str:
    mode = os.environ.get("MH_EXECUTION_MODE", "local").strip().lower()
    if mode not in ("local", "kubernetes"):
        raise ValueError(f"MH_EXECUTION_MODE must be local or kubernetes, not {mode!r}")
    return mode


def schedule() -> str | None:
    value = os.environ.get("MH_RETRAIN_SCHEDULE", "@daily").strip()
    return None if value.lower() in ("", "none", "manual") else value


def retry_delay() -> timedelta:
    return timedelta(seconds=float(os.environ.get("MH_RETRY_DELAY_S", "120")))


def step_arguments(step: str, domain: str, *, force: bool = False) -> list[str]:
    """The CLI arguments of one step (after the `machine-health` executable)."""
    args = ["pipeline", step, "--domain", domain, "--run-id", RUN_ID,
            "--interval-start", INTERVAL_START, "--interval-end", INTERVAL_END]  # fmt: skip
    return [*args, FORCE] if force else args


# --- local mode ------------------------------------------------------------------------------
def local_task(step: str, domain: str, *, force: bool = False) -> Any:
    """The step as a shell command on this machine; its last stdout line (JSON) is the XCom."""
    from airflow.providers.standard.operators.bash import BashOperator

    cli = os.environ.get("MH_PIPELINE_CLI", str(REPO / ".venv" / "bin" / "machine-health"))
    # Values reach the command through the environment, quoted: a run id can hold anything.
    env = {"MH_STEP_DOMAIN": domain, "MH_STEP_RUN_ID": RUN_ID,
           "MH_STEP_START": INTERVAL_START, "MH_STEP_END": INTERVAL_END}  # fmt: skip
    command = (
        f'\'{cli}\' pipeline {step} --domain "$MH_STEP_DOMAIN" --run-id "$MH_STEP_RUN_ID" '
        '--interval-start "$MH_STEP_START" --interval-end "$MH_STEP_END"'
    )
    if force:
        env["MH_STEP_FORCE"] = FORCE
        command += ' "$MH_STEP_FORCE"'
    return BashOperator(
        task_id=step,
        bash_command=command,
        env=env,
        append_env=True,
        cwd=str(REPO),
        do_xcom_push=True,
        execution_timeout=TIMEOUTS.get(step, DEFAULT_TIMEOUT),
    )


# --- kubernetes mode -------------------------------------------------------------------------
#: the Secret keys a step needs, as single variables (never the whole Secret: the API's JWT
#: signing key stays out of the step pods). Optional = absent with the in-cluster MLflow.
STEP_SECRET_KEYS = ("MH_MONGODB_URI", "MH_SERVICE_TOKEN")
STEP_OPTIONAL_SECRET_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
#: the step pod's own emptyDir (the root filesystem is read-only), not a shared /tmp.
POD_TMP = "/tmp"  # noqa: S108


def pipeline_setting(name: str, default: str | None = None) -> str | None:
    """One `MH_PIPELINE_*` value: the file `name` in MH_PIPELINE_CONFIG_DIR, else the env var.

    In the cluster the chart's pipeline ConfigMap is mounted as that directory (one file per
    key): the kubelet refreshes the files after a `helm upgrade`, and each parse of the DAG
    files reads them again, so a new pipeline image is used without restarting Airflow. The
    environment serves local runs and anything the directory does not hold.
    """
    directory = os.environ.get("MH_PIPELINE_CONFIG_DIR", "").strip()
    if directory:
        path = Path(directory) / name
        if path.is_file():
            return path.read_text(encoding="utf-8").strip()
    return os.environ.get(name, default)


def _json_setting(name: str, default: Any) -> Any:
    raw = pipeline_setting(name)
    return json.loads(raw) if raw else default


def pod_settings() -> dict[str, Any]:
    """What the chart's pipeline ConfigMap publishes (defaults match the chart's names)."""

    def text(name: str, default: str) -> str:
        return pipeline_setting(name, default) or default

    return {
        "namespace": text("MH_PIPELINE_NAMESPACE", "machine-health"),
        "image": text("MH_PIPELINE_IMAGE", "machine-health/pipeline:0.1.0"),
        "pull_policy": text("MH_PIPELINE_IMAGE_PULL_POLICY", "IfNotPresent"),
        "pull_secrets": _json_setting("MH_PIPELINE_IMAGE_PULL_SECRETS", []),
        "service_account": text("MH_PIPELINE_SERVICE_ACCOUNT", "machine-health-pipeline"),
        "config_map": text("MH_PIPELINE_CONFIG_MAP", "machine-health-config"),
        "secret": text("MH_PIPELINE_SECRET_NAME", "machine-health-secrets"),
        "claim": text("MH_PIPELINE_WORKSPACE_CLAIM", "machine-health-workspace"),
        "mount": text("MH_PIPELINE_WORKSPACE_MOUNT", "/workspace"),
        "var_dir": text("MH_PIPELINE_VAR_DIR", "/workspace/var"),
        "tmp_size_limit": text("MH_PIPELINE_TMP_SIZE_LIMIT", "2Gi"),
        "labels": _json_setting("MH_PIPELINE_POD_LABELS", {}),
        "resources": _json_setting(
            "MH_PIPELINE_RESOURCES",
            {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
        ),
        "security_context": _json_setting("MH_PIPELINE_SECURITY_CONTEXT", None),
        "pod_security_context": _json_setting("MH_PIPELINE_POD_SECURITY_CONTEXT", None),
    }


def step_env(pod: dict[str, Any]) -> list[Any]:
    """The step container's variables besides the main ConfigMap: paths, the namespace, and
    the few Secret keys a step uses."""
    from kubernetes.client import models as k8s

    def secret(key: str, *, optional: bool = False) -> Any:
        ref = k8s.V1SecretKeySelector(name=pod["secret"], key=key, optional=optional or None)
        return k8s.V1EnvVar(name=key, value_from=k8s.V1EnvVarSource(secret_key_ref=ref))

    namespace = k8s.V1EnvVarSource(
        field_ref=k8s.V1ObjectFieldSelector(field_path="metadata.namespace")
    )
    return [
        k8s.V1EnvVar(name="MH_VAR_DIR", value=pod["var_dir"]),
        k8s.V1EnvVar(name="MH_EXECUTION_MODE", value="kubernetes"),
        # The root filesystem is read-only: temporary files and matplotlib's cache go to /tmp.
        k8s.V1EnvVar(name="TMPDIR", value=POD_TMP),
        k8s.V1EnvVar(name="MPLCONFIGDIR", value=f"{POD_TMP}/matplotlib"),
        # Where the reload step looks for the API replicas (with MH_SERVING_SERVICE of the
        # main ConfigMap): the pod's own namespace, the release's.
        k8s.V1EnvVar(name="MH_KUBERNETES_NAMESPACE", value_from=namespace),
        *(secret(key) for key in STEP_SECRET_KEYS),
        *(secret(key, optional=True) for key in STEP_OPTIONAL_SECRET_KEYS),
    ]


def kubernetes_task(step: str, domain: str, *, force: bool = False) -> Any:
    """The step as one pod of the pipeline image; /airflow/xcom/return.json is the XCom."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    pod = pod_settings()
    resources = pod["resources"]
    return KubernetesPodOperator(
        task_id=step,
        name=f"mh-{step}",
        namespace=pod["namespace"],
        image=pod["image"],
        image_pull_policy=pod["pull_policy"],
        image_pull_secrets=[k8s.V1LocalObjectReference(name=n) for n in pod["pull_secrets"]],
        cmds=["machine-health"],
        arguments=step_arguments(step, domain, force=force),
        service_account_name=pod["service_account"],
        env_from=[
            k8s.V1EnvFromSource(config_map_ref=k8s.V1ConfigMapEnvSource(name=pod["config_map"]))
        ],
        env_vars=step_env(pod),
        volumes=[
            k8s.V1Volume(
                name="workspace",
                persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                    claim_name=pod["claim"]
                ),
            ),
            k8s.V1Volume(
                name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=pod["tmp_size_limit"])
            ),
        ],
        volume_mounts=[
            k8s.V1VolumeMount(name="workspace", mount_path=pod["mount"]),
            k8s.V1VolumeMount(name="tmp", mount_path=POD_TMP),
        ],
        container_resources=k8s.V1ResourceRequirements(
            requests=resources.get("requests"), limits=resources.get("limits")
        ),
        labels={**pod["labels"], "machine-health/step": step},
        security_context=pod["pod_security_context"],
        container_security_context=pod["security_context"],
        xcom_sidecar_container_security_context=pod["security_context"],
        get_logs=True,
        # A failed step's pod stays for `kubectl logs` / `describe`; successful ones go.
        on_finish_action="delete_succeeded_pod",
        do_xcom_push=True,
        execution_timeout=TIMEOUTS.get(step, DEFAULT_TIMEOUT),
    )


# --- the DAG ---------------------------------------------------------------------------------
def retrain_decision(ti: Any) -> bool:
    """Continue only when `check` said so (its XCom: a dict from a pod, a JSON line locally).

    The monitoring issue's drift and performance triggers are already part of `check`'s answer
    (`machine_health.pipeline.check`): a new trigger plugs in there, not here.
    """
    value = ti.xcom_pull(task_ids=CHECK)
    if isinstance(value, str):
        value = json.loads(value.strip().splitlines()[-1])
    return bool(value and value.get("retrain"))


DOC = """
### Retrain `{domain}`

`check` (enough new labelled predictions, or a drift / live-performance trigger) →
extract → validate → rescale → train → evaluate (gate vs the champion) → register →
reload (every serving replica). Steps run as `{mode}` tasks; each one is
`machine-health pipeline <step>`, safe to re-run for the same run id and data interval.
Trigger with `force=true` to retrain whatever the amount of new data.
"""


def build_retrain_dag(
    dag_id: str,
    *,
    domain: str | None,
    schedule_value: str | None,
    force_default: bool = False,
) -> DAG:
    """A retrain DAG for one domain (or, with `domain=None`, for the `domain` param)."""
    mode = execution_mode()
    make_task = kubernetes_task if mode == "kubernetes" else local_task
    domain_expr = domain or "{{ params.domain }}"
    params: dict[str, Param] = {
        "force": Param(force_default, type="boolean", description="Retrain without new data.")
    }
    if domain is None:
        params["domain"] = Param(DOMAINS[0], enum=list(DOMAINS), description="Domain to retrain.")
    from airflow.providers.standard.operators.python import ShortCircuitOperator

    with DAG(
        dag_id=dag_id,
        schedule=schedule_value,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        default_args={"retries": RETRIES, "retry_delay": retry_delay()},
        tags=["machine-health", "retrain", domain or "on-demand", mode],
        doc_md=DOC.format(domain=domain or "a domain chosen at trigger time", mode=mode),
        params=params,
        render_template_as_native_obj=False,
    ) as dag:
        check = make_task(CHECK, domain_expr, force=True)
        decide = ShortCircuitOperator(task_id="enough_new_data", python_callable=retrain_decision)
        previous = decide
        check >> decide
        for step in STEPS:
            task = make_task(step, domain_expr)
            previous >> task
            previous = task
    return dag

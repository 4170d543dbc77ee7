"""The chart, as the real helm renders it: lint, schema, secrets, availability, RBAC, selectors."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.helm import (
    CHART,
    EVERYTHING,
    EXISTING_SECRET,
    KUBE_VERSION,
    PRODUCTION_VALUES,
    VALIDATE,
    Manifest,
    find,
    one,
    random_secrets,
    run_helm,
    selector_matches,
    set_args,
    template,
    template_error,
)

# --- lint and schema -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(lambda: set_args(random_secrets()), id="default+secrets"),
        pytest.param(lambda: ["-f", str(PRODUCTION_VALUES)], id="production"),
        pytest.param(lambda: EVERYTHING, id="everything"),
    ],
)
def test_helm_lint_strict_passes(args) -> None:
    result = run_helm("lint", "--strict", CHART, *args())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("kube_version", [KUBE_VERSION, "1.33.0"])
def test_every_builtin_object_validates_strictly(
    everything_render: list[Manifest], kube_version: str, tmp_path: Path
) -> None:
    builtin = [d for d in everything_render if "monitoring.coreos.com" not in d["apiVersion"]]
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(builtin))
    result = subprocess.run(
        [str(VALIDATE), "--strict", "-k", kube_version, str(rendered)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Couldn't find schema" not in output
    assert output.count("passed for resource") == len(builtin)


@pytest.mark.parametrize(
    ("setting", "why"),
    [
        ("api.replicaCount=two", "a string where an integer belongs"),
        ("api.replicaCount=1", "fewer than two API replicas"),
        ("images.serving.tag=latest", "an unpinned image"),
        ("ingress.enabled=maybe", "a string where a boolean belongs"),
        ("api.resources.limits=null", "a container without limits"),
        ("containerSecurityContext.allowPrivilegeEscalation=true", "privilege escalation"),
        ("secrets.jwtSecret=short", "a JWT key shorter than 32 characters"),
        ("api.unknownKey=1", "a misspelt key"),
    ],
)
def test_values_schema_refuses(setting: str, why: str) -> None:
    error = template_error(*EXISTING_SECRET, "--set", setting)
    assert "schema" in error.lower(), f"{why} was not refused by values.schema.json:\n{error}"


# --- secrets -----------------------------------------------------------------------------------


def test_rendering_without_secrets_fails_with_a_required_message() -> None:
    error = template_error()
    assert "secrets.jwtSecret is required" in error
    assert "existingSecret" in error


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("secrets.serviceToken", "secrets.serviceToken is required"),
        ("secrets.mongodbUri", "secrets.mongodbUri is required"),
    ],
)
def test_each_required_secret_is_required(missing: str, message: str) -> None:
    values = random_secrets()
    del values[missing]
    assert message in template_error(*set_args(values))


def test_chart_defaults_hold_no_secret() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert all(value == "" for value in defaults["secrets"].values()), defaults["secrets"]


def test_secrets_appear_only_base64_in_the_secret(
    default_render: list[Manifest], generated_secrets: dict[str, str]
) -> None:
    secret = one(default_render, "Secret")
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded["MH_JWT_SECRET"] == generated_secrets["secrets.jwtSecret"]
    assert decoded["MH_SERVICE_TOKEN"] == generated_secrets["secrets.serviceToken"]
    assert decoded["MH_MONGODB_URI"] == generated_secrets["secrets.mongodbUri"]
    assert "stringData" not in secret
    plain = yaml.safe_dump_all([d for d in default_render if d["kind"] != "Secret"])
    for value in generated_secrets.values():
        assert value not in plain
        assert base64.b64encode(value.encode()).decode() not in plain


def test_existing_secret_is_referenced_not_created() -> None:
    docs = template(*EXISTING_SECRET)
    assert find(docs, "Secret") == []
    api = one(docs, "Deployment", "-api")["spec"]["template"]["spec"]["containers"][0]
    secret_refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in api["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert {v["name"] for v in secret_refs.values()} == {"machine-health-secrets"}
    assert {"MH_JWT_SECRET", "MH_SERVICE_TOKEN", "MH_MONGODB_URI"} <= set(secret_refs)
    assert not any(secret_refs[k].get("optional") for k in ("MH_JWT_SECRET", "MH_MONGODB_URI"))


@pytest.mark.parametrize("scenario", ["default", "everything", "production"])
def test_no_secret_in_plain_env_or_configmaps(
    renders: dict[str, list[Manifest]], scenario: str
) -> None:
    suspicious = ("SECRET", "TOKEN", "PASSWORD", "MONGODB_URI")
    for doc in renders[scenario]:
        if doc["kind"] == "ConfigMap":
            # Names of Secrets may be published (MH_PIPELINE_SECRET_NAME); their content never.
            for key in doc["data"]:
                assert not key.endswith(suspicious), f"{doc['metadata']['name']}: {key}"
        for container in containers_of(doc):
            for env in container.get("env", []):
                if env["name"].endswith(suspicious):
                    assert "value" not in env, f"{container['name']}: {env['name']} in plain text"


# --- containers ----------------------------------------------------------------------------------


def pod_spec_of(doc: Manifest) -> Manifest | None:
    if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return doc["spec"]["template"]["spec"]
    if doc["kind"] == "Pod":
        return doc["spec"]
    return None


def containers_of(doc: Manifest) -> list[Manifest]:
    spec = pod_spec_of(doc)
    return [] if spec is None else spec.get("initContainers", []) + spec["containers"]


def workloads(renders: dict[str, list[Manifest]]) -> list[tuple[str, Manifest]]:
    return [
        (f"{scenario}/{doc['kind']}/{doc['metadata']['name']}", doc)
        for scenario, docs in renders.items()
        for doc in docs
        if pod_spec_of(doc) is not None
    ]


def test_every_workload_template_is_rendered(renders: dict[str, list[Manifest]]) -> None:
    names = {name.split("/", 1)[1] for name, _ in workloads(renders)}
    assert names == {
        "Deployment/machine-health-api",
        "Deployment/machine-health-ui",
        "Deployment/machine-health-mlflow",
        "Deployment/machine-health-toolbox",
        "Pod/machine-health-test-api",  # the `helm test` hook
    }


def test_every_container_is_pinned_non_root_read_only_with_resources_and_probes(
    renders: dict[str, list[Manifest]],
) -> None:
    checked = 0
    for name, doc in workloads(renders):
        pod = pod_spec_of(doc)
        assert pod is not None
        pod_ctx = pod.get("securityContext", {})
        assert pod_ctx.get("runAsNonRoot") is True, name
        assert pod_ctx.get("runAsUser", 1) != 0, name
        for container in containers_of(doc):
            where = f"{name}/{container['name']}"
            assert_pinned(container["image"], where)
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["capabilities"]["drop"] == ["ALL"], where
            assert ctx.get("runAsUser", 1) != 0, where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), where
            if not is_hook(doc):  # a test pod runs to completion: no probes
                assert "livenessProbe" in container, where
                assert "readinessProbe" in container, where
            # A read-only root needs somewhere to write temporary files.
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}, where
            checked += 1
    # default: api ui mlflow test; everything: + toolbox; production: api ui test
    assert checked == 4 + 5 + 3


def is_hook(doc: Manifest) -> bool:
    return "helm.sh/hook" in doc["metadata"].get("annotations", {})


def test_the_mlflow_server_sends_no_telemetry(default_render: list[Manifest]) -> None:
    (server,) = containers_of(one(default_render, "Deployment", "-mlflow"))
    assert {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"} in server["env"]


def assert_pinned(image: str, where: str) -> None:
    if "@sha256:" in image:
        return
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag, f"{where}: image {image} has no tag"
    assert tag.lower() != "latest", f"{where}: image {image} is not pinned"


def test_api_writes_only_to_its_volumes(default_render: list[Manifest]) -> None:
    api = one(default_render, "Deployment", "-api")["spec"]["template"]["spec"]
    config = one(default_render, "ConfigMap", "-config")["data"]
    mounts = {m["mountPath"]: m["name"] for m in api["containers"][0]["volumeMounts"]}
    assert config["MH_VAR_DIR"] in mounts, "the spool directory must be a writable volume"
    volumes = {v["name"]: v for v in api["volumes"]}
    assert "emptyDir" in volumes[mounts[config["MH_VAR_DIR"]]]


def test_pod_specs_rendered_by_the_dags_follow_the_same_rules() -> None:
    """`make helm-check` renders the DAGs' pods into var/pod-specs/; each must be hardened too."""
    from tests.support.helm import pod_spec_files

    files = pod_spec_files()
    if not files:
        pytest.fail("no var/pod-specs/: `make helm-check` renders the DAGs' step pods there")
    for path in files:
        text = path.read_text()
        docs = [json.loads(text)] if path.suffix == ".json" else list(yaml.safe_load_all(text))
        for doc in filter(None, docs):
            for container in containers_of(doc):
                where = f"{path.name}/{container['name']}"
                assert_pinned(container["image"], where)
                assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
                assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where


# --- availability --------------------------------------------------------------------------------


def test_api_deployment_keeps_serving_through_updates_and_drains(
    default_render: list[Manifest],
) -> None:
    deployment = one(default_render, "Deployment", "-api")
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    container = spec["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    pod_labels = spec["template"]["metadata"]["labels"]

    pdb = one(default_render, "PodDisruptionBudget", "-api")
    assert selector_matches(pdb["spec"]["selector"], pod_labels)
    assert 1 <= pdb["spec"]["minAvailable"] < spec["replicas"]

    anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert selector_matches(term["labelSelector"], pod_labels)


def test_hard_anti_affinity_on_request(everything_render: list[Manifest]) -> None:
    spec = one(everything_render, "Deployment", "-api")["spec"]["template"]["spec"]
    terms = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms[0]["topologyKey"] == "kubernetes.io/hostname"


def test_api_service_balances_every_request(default_render: list[Manifest]) -> None:
    # Any replica serves any unit (state in the store); Traefik bypasses Service affinity anyway.
    assert one(default_render, "Service", "-api")["spec"]["sessionAffinity"] == "None"


def test_pdb_that_blocks_every_drain_is_refused() -> None:
    error = template_error(*EXISTING_SECRET, "--set", "api.pdb.minAvailable=2")
    assert "api.pdb.minAvailable must be lower than api.replicaCount" in error


# --- selectors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["default", "everything", "production"])
def test_each_selector_matches_its_own_pods_only(
    renders: dict[str, list[Manifest]], scenario: str
) -> None:
    docs = renders[scenario]
    pods = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in find(docs, "Deployment")
    }
    for deployment in find(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        matched = {
            p
            for p, labels in pods.items()
            if selector_matches(deployment["spec"]["selector"], labels)
        }
        assert matched == {name}, f"{name} selects {matched}"
    for service in find(docs, "Service"):
        matched = {
            p for p, labels in pods.items() if selector_matches(service["spec"]["selector"], labels)
        }
        assert matched == {service["metadata"]["name"]}, f"Service {service['metadata']['name']}"


def test_api_and_ui_selectors_are_disjoint(default_render: list[Manifest]) -> None:
    api = one(default_render, "Deployment", "-api")
    ui = one(default_render, "Deployment", "-ui")
    api_labels = api["spec"]["template"]["metadata"]["labels"]
    ui_labels = ui["spec"]["template"]["metadata"]["labels"]
    assert not selector_matches(api["spec"]["selector"], ui_labels)
    assert not selector_matches(ui["spec"]["selector"], api_labels)
    assert api["spec"]["selector"]["matchLabels"] != ui["spec"]["selector"]["matchLabels"]


# --- RBAC ----------------------------------------------------------------------------------------


def test_pipeline_rbac_allows_only_reading_serving_pods_and_endpointslices(
    default_render: list[Manifest],
) -> None:
    assert find(default_render, "ClusterRole") == []
    assert find(default_render, "ClusterRoleBinding") == []
    role = one(default_render, "Role")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    read = ("get", "list", "watch")
    assert granted == {("", "pods", v) for v in read} | {
        ("discovery.k8s.io", "endpointslices", v) for v in read
    }
    assert all("resourceNames" not in rule for rule in role["rules"])

    binding = one(default_render, "RoleBinding")
    account = one(default_render, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": "machine-health",
        }
    ]


def test_only_pipeline_pods_get_a_kubernetes_token(everything_render: list[Manifest]) -> None:
    account = one(everything_render, "ServiceAccount")["metadata"]["name"]
    for deployment in find(everything_render, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        if pod.get("serviceAccountName") == account:
            # the toolbox acts as the pipeline (finds and reloads the API replicas)
            assert pod["automountServiceAccountToken"] is True
            continue
        assert pod["automountServiceAccountToken"] is False, deployment["metadata"]["name"]


# --- network -------------------------------------------------------------------------------------


def test_only_api_and_pipeline_pods_reach_mongodb(everything_render: list[Manifest]) -> None:
    policy = one(everything_render, "NetworkPolicy", "-mongodb")
    mongo_labels = {"app.kubernetes.io/name": "mongodb", "app.kubernetes.io/instance": "mongodb"}
    assert selector_matches(policy["spec"]["podSelector"], mongo_labels)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    store_rule = policy["spec"]["ingress"][0]
    assert store_rule["ports"] == [{"port": 27017, "protocol": "TCP"}]
    admitted = store_rule["from"][0]["podSelector"]

    pipeline = json.loads(
        one(everything_render, "ConfigMap", "-pipeline")["data"]["MH_PIPELINE_POD_LABELS"]
    )
    labels_of = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in find(everything_render, "Deployment")
    }
    assert selector_matches(admitted, labels_of["machine-health-api"])
    assert selector_matches(admitted, pipeline)
    assert not selector_matches(admitted, labels_of["machine-health-ui"])
    assert not selector_matches(admitted, labels_of["machine-health-mlflow"])
    # The other rules admit no application pod on the store port.
    for rule in policy["spec"]["ingress"][1:]:
        for peer in rule["from"]:
            if "podSelector" in peer:
                assert not selector_matches(peer["podSelector"], labels_of["machine-health-ui"])


# --- wiring --------------------------------------------------------------------------------------


def test_pipeline_configmap_names_objects_that_exist(everything_render: list[Manifest]) -> None:
    data = one(everything_render, "ConfigMap", "-pipeline")["data"]
    names = {(d["kind"], d["metadata"]["name"]) for d in everything_render}
    assert ("ServiceAccount", data["MH_PIPELINE_SERVICE_ACCOUNT"]) in names
    assert ("PersistentVolumeClaim", data["MH_PIPELINE_WORKSPACE_CLAIM"]) in names
    assert ("ConfigMap", data["MH_PIPELINE_CONFIG_MAP"]) in names
    assert data["MH_PIPELINE_SECRET_NAME"] == "machine-health-secrets"
    assert_pinned(data["MH_PIPELINE_IMAGE"], "pipeline image")
    assert json.loads(data["MH_PIPELINE_RESOURCES"])["limits"]["memory"]


def test_ui_reaches_the_api_through_its_service(default_render: list[Manifest]) -> None:
    config = one(default_render, "ConfigMap", "-config")["data"]
    service = one(default_render, "Service", "-api")
    assert (
        config["MH_API_URL"]
        == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    )
    assert config["MH_ENV"] == "prod"
    selector = dict(pair.split("=") for pair in config["MH_SERVING_LABEL_SELECTOR"].split(","))
    assert selector == service["spec"]["selector"]


def test_ingress_hosts_and_tls_come_from_values(production_render: list[Manifest]) -> None:
    values = yaml.safe_load(PRODUCTION_VALUES.read_text())
    ingress = one(production_render, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "traefik"
    hosts = {
        rule["host"]: {path["backend"]["service"]["name"] for path in rule["http"]["paths"]}
        for rule in ingress["spec"]["rules"]
    }
    api_host, ui_host = values["ingress"]["api"]["host"], values["ingress"]["ui"]["host"]
    assert hosts == {api_host: {"machine-health-api"}, ui_host: {"machine-health-ui"}}
    assert ingress["spec"]["tls"] == [
        {"secretName": values["ingress"]["tls"]["secretName"], "hosts": [api_host, ui_host]}
    ]


def test_production_uses_the_existing_secret_and_dagshub(production_render: list[Manifest]) -> None:
    assert find(production_render, "Secret") == []
    assert find(production_render, "Deployment", "-mlflow") == []
    config = one(production_render, "ConfigMap", "-config")["data"]
    assert config["MH_MLFLOW_TRACKING_URI"].startswith("https://dagshub.com/")
    assert one(production_render, "Deployment", "-api")["spec"]["replicas"] >= 3

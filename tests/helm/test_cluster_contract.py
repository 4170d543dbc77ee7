"""What the rendered chart promises a real K3s cluster: rollouts that can finish, CRD-guarded
monitoring, routing through Traefik, listeners where probes and Services point, the variables
the code reads, the `helm test` hook (its script run against a live HTTP server), and the
install documents the chart points to."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.helm import (
    CHART,
    EVERYTHING,
    EXISTING_SECRET,
    MONITORING_API,
    NAMESPACE,
    PRODUCTION_VALUES,
    RELEASE,
    REPO,
    Manifest,
    find,
    one,
    run_helm,
    template,
    template_error,
)

INSTALL = REPO / "docs" / "INSTALL-K3S.md"
README = CHART / "README.md"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}


def containers(doc: Manifest) -> list[Manifest]:
    spec = doc["spec"]["template"]["spec"] if "template" in doc["spec"] else doc["spec"]
    return spec["containers"]


def env_of(container: Manifest) -> dict[str, Manifest]:
    return {e["name"]: e for e in container.get("env", [])}


# --- 8. rollouts that can finish ------------------------------------------------------------


def test_production_rollout_fits_one_replica_per_node(production_render: list[Manifest]) -> None:
    """3 replicas, hard anti-affinity, 3 nodes: a surge pod could never be scheduled, so the
    rollout replaces in place, and the PDB still lets it (and a node drain) evict one."""
    spec = one(production_render, "Deployment", "-api")["spec"]
    pod = spec["template"]["spec"]
    assert pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    rolling = spec["strategy"]["rollingUpdate"]
    assert rolling == {"maxSurge": 0, "maxUnavailable": 1}
    nodes = replicas = spec["replicas"]
    assert replicas + rolling["maxSurge"] <= nodes, "a surge pod would stay Pending"
    min_available = one(production_render, "PodDisruptionBudget", "-api")["spec"]["minAvailable"]
    assert min_available < replicas
    assert replicas - rolling["maxUnavailable"] >= min_available


def test_soft_anti_affinity_keeps_surging(default_render: list[Manifest]) -> None:
    rolling = one(default_render, "Deployment", "-api")["spec"]["strategy"]["rollingUpdate"]
    assert rolling == {"maxSurge": 1, "maxUnavailable": 0}


# --- 3. monitoring only when the cluster has its CRDs -----------------------------------------


def test_monitoring_resources_need_the_crds() -> None:
    without = template(*EXISTING_SECRET, "--set", "monitoring.enabled=true")
    assert not [d for d in without if d["kind"] in MONITORING_KINDS]
    assert find(without, "ConfigMap", "-dashboard"), "the dashboard needs no CRD"
    with_crds = template(*EXISTING_SECRET, "--set", "monitoring.enabled=true", *MONITORING_API)
    assert {d["kind"] for d in with_crds} >= MONITORING_KINDS


def test_production_values_install_on_a_cluster_without_the_crds(
    production_render: list[Manifest],
) -> None:
    assert not [d for d in production_render if d["kind"] in MONITORING_KINDS]


def notes(*args: str) -> str:
    result = run_helm(
        "install", RELEASE, CHART, "--namespace", NAMESPACE, "--dry-run=client", *args
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split("NOTES:", 1)[1]


def test_notes_warn_when_monitoring_has_no_crds() -> None:
    # (`helm install --dry-run` takes no --api-versions: the CRD case is the template's guard,
    # the same `.Capabilities.APIVersions.Has`, tested above.)
    args = [*EXISTING_SECRET, "--set", "monitoring.enabled=true"]
    assert "ServiceMonitor and PrometheusRule were NOT installed" in notes(*args)
    assert "NOT installed" not in notes(*EXISTING_SECRET)


# --- 4. pull secrets and the XCom sidecar image reach the step pods ----------------------------


def test_pipeline_configmap_publishes_pull_secrets_and_sidecar_image(
    production_render: list[Manifest],
) -> None:
    data = one(production_render, "ConfigMap", "-pipeline")["data"]
    values = yaml.safe_load(PRODUCTION_VALUES.read_text())
    names = [s["name"] for s in values["imagePullSecrets"]]
    assert json.loads(data["MH_PIPELINE_IMAGE_PULL_SECRETS"]) == names
    extra = json.loads(data["AIRFLOW_CONN_KUBERNETES_DEFAULT"])["extra"]
    assert extra["xcom_sidecar_container_image"] == VALUES["pipeline"]["xcomSidecarImage"]
    assert extra["in_cluster"] is True


def test_sidecar_default_is_the_providers_own() -> None:
    """The chart pins the image the pinned cncf.kubernetes provider would use anyway."""
    module = "site-packages/airflow/providers/cncf/kubernetes/utils/xcom_sidecar.py"
    sources = list((REPO / ".venv-airflow").glob(f"lib/python*/{module}"))
    assert sources, "no cncf.kubernetes provider in .venv-airflow: run `make install`"
    default = re.search(r'XCOM_SIDECAR_IMAGE = "([^"]+)"', sources[0].read_text())
    assert default and default.group(1) == VALUES["pipeline"]["xcomSidecarImage"]


# --- 6. the variable names the code reads ------------------------------------------------------

#: set by the chart for a setting another change adds to config.py (`machine-health ui` binds
#: MH_UI_HOST); the test passes either way once it lands.
AWAITED_SETTINGS = {"MH_UI_HOST"}


@pytest.mark.parametrize("scenario", ["default", "everything", "production"])
def test_every_mh_variable_is_a_setting(renders: dict[str, list[Manifest]], scenario: str) -> None:
    from machine_health.config import Settings

    known = {f"MH_{name.upper()}" for name in Settings.model_fields} | AWAITED_SETTINGS
    names: set[str] = set()
    for doc in renders[scenario]:
        if doc["kind"] == "ConfigMap" and not doc["metadata"]["name"].endswith("-pipeline"):
            names |= {k for k in doc["data"] if k.startswith("MH_")}
        if doc["kind"] in {"Deployment", "Pod"}:
            for container in containers(doc):
                names |= {n for n in env_of(container) if n.startswith("MH_")}
    # MH_PIPELINE_* is for the DAGs, MH_TEST_* for the helm test script: not settings.
    names = {n for n in names if not n.startswith(("MH_PIPELINE_", "MH_TEST_"))}
    assert names - known == set()
    assert "MH_KUBERNETES_NAMESPACE" in names


def test_no_template_names_the_old_namespace_variable() -> None:
    for path in [*CHART.rglob("*"), *REPO.joinpath("airflow").rglob("*.py")]:
        if path.is_file():
            assert "MH_K8S_NAMESPACE" not in path.read_text(errors="replace"), path


# --- 7. the toolbox reloads the replicas through the Kubernetes API ----------------------------


def test_toolbox_runs_in_kubernetes_mode_with_rights_to_find_replicas(
    everything_render: list[Manifest],
) -> None:
    toolbox = one(everything_render, "Deployment", "-toolbox")
    pod = toolbox["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert env_of(container)["MH_EXECUTION_MODE"]["value"] == "kubernetes"
    assert pod["automountServiceAccountToken"] is True
    account = pod["serviceAccountName"]
    binding = one(everything_render, "RoleBinding")
    assert {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE} in binding[
        "subjects"
    ]
    role = one(everything_render, "Role", binding["roleRef"]["name"])
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert {("discovery.k8s.io", "endpointslices", "list"), ("", "pods", "list")} <= granted
    namespace_env = env_of(container)["MH_KUBERNETES_NAMESPACE"]["valueFrom"]["fieldRef"]
    assert namespace_env["fieldPath"] == "metadata.namespace"


# --- 9. sticky sessions where they work: Traefik's cookie on the UI ---------------------------


def test_ui_service_is_sticky_only_with_several_replicas(
    default_render: list[Manifest], production_render: list[Manifest]
) -> None:
    single = one(default_render, "Service", "-ui")["metadata"].get("annotations", {})
    assert not any(k.startswith("traefik.ingress.kubernetes.io/service.sticky") for k in single)
    annotations = one(production_render, "Service", "-ui")["metadata"]["annotations"]
    assert annotations["traefik.ingress.kubernetes.io/service.sticky.cookie"] == "true"
    assert (
        annotations["traefik.ingress.kubernetes.io/service.sticky.cookie.name"]
        == VALUES["ui"]["service"]["stickyCookieName"]
    )
    assert annotations["traefik.ingress.kubernetes.io/service.sticky.cookie.secure"] == "true"
    assert one(production_render, "Service", "-api")["spec"]["sessionAffinity"] == "None"


# --- 10. listeners where probes and Services point; the UI holds no secret --------------------


def test_servers_listen_on_the_pod_ip(everything_render: list[Manifest]) -> None:
    api = one(everything_render, "Deployment", "-api")
    (api_c,) = containers(api)
    assert api_c["args"][api_c["args"].index("--host") + 1] == "0.0.0.0"
    (mlflow_c,) = containers(one(everything_render, "Deployment", "-mlflow"))
    assert "--host=0.0.0.0" in mlflow_c["args"]
    assert f"--port={VALUES['mlflow']['port']}" in mlflow_c["args"]
    (ui_c,) = containers(one(everything_render, "Deployment", "-ui"))
    assert env_of(ui_c)["MH_UI_HOST"]["value"] == "0.0.0.0"
    for doc in find(everything_render, "Deployment"):
        for container in containers(doc):
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if "httpGet" in container.get(probe, {}):
                    assert container[probe]["httpGet"]["port"] in ports, doc["metadata"]["name"]


@pytest.mark.parametrize("scenario", ["default", "everything", "production"])
def test_ui_gets_no_secret(renders: dict[str, list[Manifest]], scenario: str) -> None:
    (ui,) = containers(one(renders[scenario], "Deployment", "-ui"))
    assert all("secretRef" not in s for s in ui.get("envFrom", []))
    assert not [e for e in ui["env"] if "secretKeyRef" in e.get("valueFrom", {})]


# --- 11. MLflow on SQLite, the Ingress, TLS ------------------------------------------------------


def test_mlflow_on_sqlite_runs_one_worker(default_render: list[Manifest]) -> None:
    (server,) = containers(one(default_render, "Deployment", "-mlflow"))
    assert "--workers=1" in server["args"]
    assert any(a.startswith("--backend-store-uri=sqlite:") for a in server["args"])
    assert "schema" in template_error(*EXISTING_SECRET, "--set", "mlflow.workers=2").lower()


def api_paths(docs: list[Manifest]) -> dict[str, str]:
    ingress = one(docs, "Ingress")
    host = VALUES["ingress"]["api"]["host"]
    (rule,) = [r for r in ingress["spec"]["rules"] if r["host"] == host]
    return {p["path"]: p["pathType"] for p in rule["http"]["paths"]}


def app_routes() -> set[str]:
    """Every route path the API declares (src/machine_health/api/routes/)."""
    routes: set[str] = set()
    for path in (REPO / "src" / "machine_health" / "api" / "routes").glob("*.py"):
        text = path.read_text()
        routes |= set(re.findall(r'@router\.(?:get|post|put|delete|patch)\(\s*"([^"]+)"', text))
        routes |= {r.replace("{name}", "{domain}") for r in re.findall(r'f"(/[^"]+)"', text)}
        routes |= set(re.findall(r'"(/predict[^"]*\{domain\}[^"]*)"', text))
    return routes


def published(route: str, paths: dict[str, str]) -> bool:
    return any(route == p or route.startswith(p.rstrip("/") + "/") for p in paths)


def test_ingress_publishes_the_api_routes_only(default_render: list[Manifest]) -> None:
    paths = api_paths(default_render)
    assert set(paths.values()) == {"Prefix"}
    not_public = {"/", "/metrics", "/reload", "/echo", "/register"}
    routes = app_routes()
    assert {"/token", "/predictions", "/health", "/models"} <= routes
    for route in routes - not_public:
        assert published(route, paths), f"{route} is not routed by the Ingress"
    for route in [*not_public, "/docs", "/openapi.json", "/redoc"]:
        assert not published(route, paths), f"{route} must not be public"


def test_docs_and_registration_only_on_request() -> None:
    docs = template(
        *EXISTING_SECRET,
        *("--set", "ingress.api.publishDocs=true"),
        *("--set", "config.selfRegistration=true"),
    )
    paths = api_paths(docs)
    assert {"/docs", "/openapi.json", "/register"} <= set(paths)
    assert not published("/metrics", paths)


def test_tls_is_on_by_default(default_render: list[Manifest]) -> None:
    ingress = one(default_render, "Ingress")
    hosts = [VALUES["ingress"]["api"]["host"], VALUES["ingress"]["ui"]["host"]]
    assert ingress["spec"]["tls"] == [{"secretName": "machine-health-tls", "hosts": hosts}]
    plain = template(*EXISTING_SECRET, "--set", "ingress.tls.enabled=false")
    assert "tls" not in one(plain, "Ingress")["spec"]


# --- 11/12. the documents the chart and the values files point to ------------------------------


def install_headings() -> dict[int, str]:
    return {
        int(n): title.strip()
        for n, title in re.findall(r"^## (\d+)\. (.+)$", INSTALL.read_text(), re.M)
    }


def test_install_steps_are_numbered_consistently() -> None:
    numbers = list(install_headings())
    assert numbers == list(range(1, len(numbers) + 1))
    text = INSTALL.read_text()
    for number in re.findall(r"\b[Ss]teps? (\d+)\b", text):
        assert int(number) in install_headings(), f"INSTALL-K3S.md names a missing step {number}"


REFERRING = [
    *sorted((REPO / "kubernetes").glob("values-*.yaml")),
    CHART / "values.yaml",
    *sorted(p for p in (CHART / "templates").rglob("*") if p.is_file()),
    README,
]


@pytest.mark.parametrize("path", REFERRING, ids=lambda p: str(p.relative_to(REPO)))
def test_step_references_name_existing_headings(path: Path) -> None:
    """Every `step N` outside INSTALL-K3S.md carries the step's title, and both match."""
    if not path.is_file():
        pytest.fail(f"{path.relative_to(REPO)} is missing")
    headings = install_headings()
    text = path.read_text()
    for match in re.finditer(r"\bstep (\d+)\b", text, re.I):
        title = re.match(r' "([^"]+)"', text[match.end() :])
        where = f"{path.name}: {text[match.start() : match.end() + 40]!r}"
        assert title, f"{where}: name the step's title too"
        assert headings.get(int(match.group(1))) == title.group(1), where


def test_install_docs_import_every_image() -> None:
    text = INSTALL.read_text()
    images = re.search(r"^## 2\. Images$(.+?)^## 3\.", text, re.M | re.S)
    assert images, "step 2 is the images step"
    section = images.group(1)
    for name in ("serving", "pipeline", "ui", "airflow"):
        assert f"machine-health/{name}" in section, name
    assert VALUES["pipeline"]["xcomSidecarImage"] in section
    assert "k3s ctr images import" in section
    assert "helm test" in text


# --- 13. the helm test hook ---------------------------------------------------------------------


def hook_pod(docs: list[Manifest]) -> Manifest:
    (pod,) = [d for d in docs if d["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    return pod


def test_helm_test_pod_is_hardened_like_the_api(default_render: list[Manifest]) -> None:
    pod = hook_pod(default_render)
    api = one(default_render, "Deployment", "-api")["spec"]["template"]["spec"]
    assert pod["spec"]["securityContext"] == api["securityContext"]
    (container,) = pod["spec"]["containers"]
    assert container["securityContext"] == api["containers"][0]["securityContext"]
    assert container["image"] == api["containers"][0]["image"]
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["restartPolicy"] == "Never"
    secrets = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert secrets == {"MH_JWT_SECRET"}


def test_helm_test_with_credentials_holds_no_key(everything_render: list[Manifest]) -> None:
    (container,) = hook_pod(everything_render)["spec"]["containers"]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert set(refs) == {"MH_TEST_USERNAME", "MH_TEST_PASSWORD"}
    assert {r["name"] for r in refs.values()} == {"machine-health-test-user"}


class FakeApi(BaseHTTPRequestHandler):
    """The API's contract for the test: /health, /token, /predict-test/vibration with a bearer
    token the REAL machine_health security code accepts and a body the REAL input model takes."""

    jwt_secret = ""
    calls: list[str] = []

    def log_message(self, *args: Any) -> None:
        pass

    def reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.calls.append(f"GET {self.path}")
        self.reply(200, {"status": "ok"})

    def do_POST(self) -> None:
        self.calls.append(f"POST {self.path}")
        from machine_health.api.security import create_access_token, decode_access_token
        from machine_health.config import Settings
        from machine_health.domains.vibration.domain import VibrationInput

        settings = Settings(env="dev", _env_file=None, jwt_secret=self.jwt_secret)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/token":
            form = urllib.parse.parse_qs(body.decode())
            if form != {"username": ["tester"], "password": ["a-long-password"]}:
                return self.reply(401, {"detail": "incorrect username or password"})
            token, _ = create_access_token(settings, "tester", "operator")
            return self.reply(200, {"access_token": token, "role": "operator"})
        claims = decode_access_token(settings, self.headers["Authorization"].split()[1])
        VibrationInput(**json.loads(body))
        self.reply(200, {"archived": "not_archived", "model": {"user": claims["sub"]}})


@pytest.fixture
def fake_api() -> Iterator[str]:
    FakeApi.jwt_secret = "k" * 48
    FakeApi.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def run_hook(docs: list[Manifest], api_url: str, secrets: dict[str, str], cwd: Path) -> str:
    """The hook pod's command, with only the environment its manifest gives (ConfigMap and
    Secret references resolved), the API URL pointed at the live test server."""
    (container,) = hook_pod(docs)["spec"]["containers"]
    configmaps = {d["metadata"]["name"]: d["data"] for d in find(docs, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container["envFrom"]:
        env.update(configmaps[source["configMapRef"]["name"]])
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            env[item["name"]] = secrets[item["valueFrom"]["secretKeyRef"]["key"]]
    env["MH_API_URL"] = api_url
    assert container["command"] == ["python", "-c"]
    result = subprocess.run(
        [sys.executable, "-c", *container["args"]], env=env, cwd=cwd,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_helm_test_script_mints_a_token_the_api_accepts(
    default_render: list[Manifest], fake_api: str, tmp_path: Path
) -> None:
    out = run_hook(default_render, fake_api, {"MH_JWT_SECRET": FakeApi.jwt_secret}, tmp_path)
    assert json.loads(out.splitlines()[-1])["ok"] is True
    assert FakeApi.calls == ["GET /health", "POST /predict-test/vibration"]


def test_helm_test_script_logs_in_with_the_credentials_secret(
    everything_render: list[Manifest], fake_api: str, tmp_path: Path
) -> None:
    secrets = {"username": "tester", "password": "a-long-password"}
    out = run_hook(everything_render, fake_api, secrets, tmp_path)
    assert json.loads(out.splitlines()[-1])["model"] == {"user": "tester"}
    assert FakeApi.calls == ["GET /health", "POST /token", "POST /predict-test/vibration"]


# --- 14. the chart README -------------------------------------------------------------------------


def test_readme_documents_every_value_and_the_lifecycle() -> None:
    text = README.read_text()
    table = {m.group(1) for m in re.finditer(r"^\| `([A-Za-z]+)` \|", text, re.M)}
    assert set(VALUES) <= table, set(VALUES) - table
    lifecycle = ["helm install", "helm upgrade", "helm uninstall", "helm test"]
    survivors = ["resource-policy: keep", "existingSecret", "MH_PIPELINE_CONFIG_DIR"]
    for phrase in [*lifecycle, *survivors]:
        assert phrase in text, phrase


def test_everything_scenario_matches_the_check_script() -> None:
    """scripts/helm_check.sh renders the same `everything` as these tests."""
    script = (REPO / "scripts" / "helm_check.sh").read_text()
    assert "--api-versions monitoring.coreos.com/v1" in script
    for value in EVERYTHING[1::2]:
        assert value in script, value

"""The values files for the other charts (MongoDB, Airflow, kube-prometheus-stack).

Those charts cannot be fetched here (their registries are out of reach), so these tests check
what can go wrong on our side: the files parse, name the objects our chart really renders, pin
their images and carry no password.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.helm import CHART, REPO, Manifest, one

KUBERNETES = REPO / "kubernetes"
VALUES_FILES = sorted(KUBERNETES.glob("values-*.yaml"))


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((KUBERNETES / name).read_text())


def leaves(tree: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, dict):
        return [leaf for k, v in tree.items() for leaf in leaves(v, f"{path}.{k}".strip("."))]
    if isinstance(tree, list):
        return [leaf for i, v in enumerate(tree) for leaf in leaves(v, f"{path}[{i}]")]
    return [(path, tree)]


def test_the_expected_values_files_exist() -> None:
    assert {p.name for p in VALUES_FILES} == {
        "values-airflow.yaml",
        "values-kube-prometheus-stack.yaml",
        "values-mongodb.yaml",
        "values-production.yaml",
    }


@pytest.mark.parametrize("path", VALUES_FILES, ids=lambda p: p.name)
def test_no_password_or_key_in_a_values_file(path: Path) -> None:
    for key, value in leaves(yaml.safe_load(path.read_text())):
        last = key.rsplit(".", 1)[-1].lower()
        if re.search(r"(password|secret|token|fernetkey|key)$", last) and not re.search(
            r"(existingsecret|secretname|secretkeysecretname|userkey|passwordkey)$", last
        ):
            assert value in ("", None, False), f"{path.name}: {key} holds a value"


@pytest.mark.parametrize("path", VALUES_FILES, ids=lambda p: p.name)
def test_no_image_is_latest(path: Path) -> None:
    for key, value in leaves(yaml.safe_load(path.read_text())):
        if key.lower().endswith("tag"):
            assert str(value).lower() != "latest", f"{path.name}: {key}"


def test_airflow_runs_steps_as_pods_with_the_charts_settings(
    default_render: list[Manifest],
) -> None:
    values = load("values-airflow.yaml")
    env = {e["name"]: e["value"] for e in values["env"]}
    assert env["MH_EXECUTION_MODE"] == "kubernetes"
    assert values["allowPodLaunching"] is True
    env_from = yaml.safe_load(values["extraEnvFrom"])
    pipeline = one(default_render, "ConfigMap", "-pipeline")
    assert env_from == [{"configMapRef": {"name": pipeline["metadata"]["name"]}}]
    assert values["createUserJob"]["defaultUser"]["enabled"] is False
    assert values["images"]["airflow"]["repository"] == "machine-health/airflow"
    assert values["dags"]["gitSync"]["enabled"] is False  # DAGs are baked into the image


def test_mongodb_release_is_what_the_network_policy_protects(
    default_render: list[Manifest],
) -> None:
    values = load("values-mongodb.yaml")
    assert values["architecture"] == "replicaset"
    # w="majority" needs a majority of data-bearing members: three of them, no arbiter, so one
    # pod down never stalls the API's writes (two + an arbiter would).
    assert values["replicaCount"] == 3 and values["arbiter"]["enabled"] is False
    assert values["auth"]["existingSecret"]
    assert values["metrics"]["enabled"] is True
    assert values["networkPolicy"]["enabled"] is False, "our chart owns the MongoDB policy"
    policy = one(default_render, "NetworkPolicy", "-mongodb")
    # The docs install the Bitnami chart as release "mongodb"; its pods carry these labels.
    bitnami_pod = {"app.kubernetes.io/name": "mongodb", "app.kubernetes.io/instance": "mongodb"}
    assert policy["spec"]["podSelector"]["matchLabels"] == bitnami_pod
    assert policy["spec"]["ingress"][0]["ports"][0]["port"] == 27017
    assert values["auth"]["databases"] == [
        one(default_render, "ConfigMap", "-config")["data"]["MH_MONGODB_DB"]
    ]


def test_prometheus_and_grafana_find_the_charts_monitoring() -> None:
    values = load("values-kube-prometheus-stack.yaml")
    spec = values["prometheus"]["prometheusSpec"]
    assert spec["serviceMonitorSelectorNilUsesHelmValues"] is False
    assert spec["ruleSelectorNilUsesHelmValues"] is False
    sidecar = values["grafana"]["sidecar"]["dashboards"]
    chart_defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert {sidecar["label"]: sidecar["labelValue"]} == chart_defaults["monitoring"]["dashboard"][
        "labels"
    ]
    assert sidecar["searchNamespace"] == "ALL"
    assert values["grafana"]["admin"]["existingSecret"]


def test_airflow_mounts_the_pipeline_configmap_as_a_refreshing_volume(
    default_render: list[Manifest],
) -> None:
    """Every Airflow component that parses the DAG files reads MH_PIPELINE_* from the pipeline
    ConfigMap mounted as a volume without subPath (the kubelet refreshes only those)."""
    values = load("values-airflow.yaml")
    env = {e["name"]: e["value"] for e in values["env"]}
    pipeline = one(default_render, "ConfigMap", "-pipeline")["metadata"]["name"]
    for component in ("scheduler", "dagProcessor", "workers", "triggerer"):
        volumes = {v["name"]: v for v in values[component]["extraVolumes"]}
        (mount,) = [
            m for m in values[component]["extraVolumeMounts"]
            if volumes.get(m["name"], {}).get("configMap", {}).get("name") == pipeline
        ]  # fmt: skip
        assert "subPath" not in mount, component
        assert mount["mountPath"] == env["MH_PIPELINE_CONFIG_DIR"], component

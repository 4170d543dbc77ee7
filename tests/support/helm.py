"""Render the chart with the real helm binary (tools/bin/helm, installed by `make helm-check`).

Used by tests/helm (whose conftest makes the session's renders) and tests/dags.

A missing binary is a failed test with the command that fixes it, never a skip: the chart is
proven only by the real tool.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.paths import HELM, REPO

CHART = REPO / "kubernetes" / "chart" / "machine-health"
PRODUCTION_VALUES = REPO / "kubernetes" / "values-production.yaml"
VALIDATE = REPO / ".venv" / "bin" / "kubernetes-validate"
POD_SPECS = REPO / "var" / "pod-specs"
RELEASE = "machine-health"
NAMESPACE = "machine-health"
KUBE_VERSION = "1.35.0"

Manifest = dict[str, Any]


def helm_binary() -> Path:
    if not HELM.is_file():
        pytest.fail(f"{HELM.relative_to(REPO)} is missing: run `make helm-check` first")
    return HELM


def run_helm(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm_binary()), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def template(*args: str | Path) -> list[Manifest]:
    """`helm template` of the chart; fails the test with helm's message on an error."""
    result = run_helm(
        "template", RELEASE, CHART, "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, *args
    )
    if result.returncode != 0:
        pytest.fail(f"helm template failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def template_error(*args: str | Path) -> str:
    """`helm template` that must fail; returns helm's error output."""
    result = run_helm("template", RELEASE, CHART, "--namespace", NAMESPACE, *args)
    assert result.returncode != 0, f"helm accepted {args}:\n{result.stdout[:2000]}"
    return result.stderr


def random_secrets() -> dict[str, str]:
    """Fresh random secrets for one render: nothing in the repo holds one."""
    token = secrets.token_urlsafe
    host = "mongodb-0.mongodb-headless:27017"
    return {
        "secrets.jwtSecret": token(40),
        "secrets.serviceToken": token(40),
        "secrets.mongodbUri": f"mongodb://machine-health:{token(24)}@{host}/machine_health"
        "?replicaSet=rs0",
        "secrets.mlflowTrackingPassword": token(24),
    }


def set_args(values: dict[str, str]) -> list[str]:
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


EXISTING_SECRET = ["--set", "secrets.existingSecret=machine-health-secrets"]
EVERYTHING = [
    *EXISTING_SECRET,
    *("--set", "monitoring.enabled=true"),
    *("--set", "toolbox.enabled=true"),
    *("--set", "api.antiAffinity=hard"),
    *("--set", "ui.replicaCount=2"),
    *("--set", "ingress.api.publishDocs=true"),
    *("--set", "tests.credentialsSecret=machine-health-test-user"),
]
#: what `helm template` is told about a cluster that has the kube-prometheus-stack CRDs (helm
#: lint takes no such flag; scripts/helm_check.sh passes the same to its `everything` scenario).
MONITORING_API = ["--api-versions", "monitoring.coreos.com/v1"]


def pod_spec_files() -> list[Path]:
    """Pods the DAGs rendered for KubernetesPodOperator (issue 6), when present."""
    if not POD_SPECS.is_dir():
        return []
    return sorted(p for p in POD_SPECS.iterdir() if p.suffix in {".yaml", ".yml", ".json"})


def find(docs: list[Manifest], kind: str, name_suffix: str = "") -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]


def one(docs: list[Manifest], kind: str, name_suffix: str = "") -> Manifest:
    found = find(docs, kind, name_suffix)
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, found {len(found)}"
    return found[0]


def selector_matches(selector: Manifest, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels + matchExpressions) or a plain map."""
    is_label_selector = "matchLabels" in selector or "matchExpressions" in selector
    match_labels = selector.get("matchLabels", {}) if is_label_selector else selector
    if any(labels.get(key) != value for key, value in match_labels.items()):
        return False
    operators: dict[str, Callable[[dict[str, Any]], bool]] = {
        "In": lambda e: labels.get(e["key"]) in e["values"],
        "NotIn": lambda e: labels.get(e["key"]) not in e["values"],
        "Exists": lambda e: e["key"] in labels,
        "DoesNotExist": lambda e: e["key"] not in labels,
    }
    return all(operators[e["operator"]](e) for e in selector.get("matchExpressions", []))

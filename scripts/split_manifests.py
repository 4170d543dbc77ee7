"""Split rendered manifests into what kubernetes-validate can check and what it cannot.

    python scripts/split_manifests.py RENDERED.yaml OUT_DIR

Writes OUT_DIR/core.yaml (objects of the Kubernetes API itself) and prints one line per object
of a custom resource (ServiceMonitor, PrometheusRule: monitoring.coreos.com), whose schemas ship
with their operator's CRDs and not with kubernetes-validate. Those are checked structurally by
tests/helm/test_monitoring.py instead; nothing is dropped without saying so.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

# API groups whose schemas kubernetes-validate carries: the core group and the built-in ones.
# (A group missing here only moves an object to the "custom" list, and helm_check.sh fails if
# kubernetes-validate ever reports a schema it could not find, so nothing passes unchecked.)
BUILTIN_GROUPS = {
    "",
    "apps",
    "batch",
    "policy",
    "autoscaling",
    "discovery.k8s.io",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "certificates.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "node.k8s.io",
    "resource.k8s.io",
}


def api_group(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def is_builtin(doc: dict) -> bool:
    group = api_group(doc.get("apiVersion", ""))
    return group in BUILTIN_GROUPS


def main(rendered: Path, out_dir: Path) -> int:
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    core = [d for d in docs if is_builtin(d)]
    custom = [d for d in docs if not is_builtin(d)]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "core.yaml").write_text(yaml.safe_dump_all(core, sort_keys=False))
    for doc in custom:
        sys.stdout.write(
            f"  skip schema: {doc['kind']}/{doc['metadata']['name']} ({doc['apiVersion']}): "
            "no schema in kubernetes-validate (a CRD); checked by tests/helm/test_monitoring.py\n"
        )
    sys.stdout.write(f"  {len(core)} built-in object(s) to validate, {len(custom)} custom\n")
    return 0 if core else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))

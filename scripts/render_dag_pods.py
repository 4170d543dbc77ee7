"""Render the retrain DAGs' KubernetesPodOperator pods from the chart's own pipeline ConfigMap.

    python scripts/render_dag_pods.py RENDERED_CHART.yaml OUT_DIR

Reads the pipeline ConfigMap out of a `helm template` output, gives its data to the DAGs the
two ways Airflow gets it in the cluster (kubernetes/values-airflow.yaml): as files, one per key,
in the directory MH_PIPELINE_CONFIG_DIR (the ConfigMap volume the DAGs read first) and as the
environment (`extraEnvFrom`, which carries the kubernetes_default connection), and has the REAL
Airflow of
`.venv-airflow` build every step's pod (`build_pod_request_obj(dry_run=True)`, through
tests/dags/airflow_probe.py) into OUT_DIR/<dag>.<task>.yaml, for `kubernetes-validate`.
Run by scripts/helm_check.sh; no cluster is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
AIRFLOW_PYTHON = REPO / ".venv-airflow" / "bin" / "python"
PROBE = REPO / "tests" / "dags" / "airflow_probe.py"


def pipeline_config(rendered: Path) -> dict[str, str]:
    for doc in yaml.safe_load_all(rendered.read_text()):
        if doc and doc.get("kind") == "ConfigMap" and "MH_PIPELINE_IMAGE" in doc.get("data", {}):
            return {str(k): str(v) for k, v in doc["data"].items()}
    raise SystemExit(f"{rendered}: no pipeline ConfigMap (MH_PIPELINE_IMAGE) in the chart")


def main(rendered: Path, out_dir: Path) -> int:
    config = pipeline_config(rendered)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mh-airflow-") as home:
        config_dir = Path(home) / "pipeline-config"
        config_dir.mkdir()
        for key, value in config.items():
            (config_dir / key).write_text(value, encoding="utf-8")
        env = {
            "PATH": os.environ.get("PATH", ""),
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "airflow" / "dags"),
            "PYTHONPATH": str(REPO / "airflow" / "dags"),
            "MH_EXECUTION_MODE": "kubernetes",
            "MH_PIPELINE_CONFIG_DIR": str(config_dir),
            **config,
        }
        out = subprocess.run(
            [str(AIRFLOW_PYTHON), str(PROBE), "pods", str(out_dir)],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        return 1
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["import_errors"]:
        sys.stderr.write(f"DAG import errors: {result['import_errors']}\n")
        return 1
    if not result["pods"]:
        sys.stderr.write("the DAGs built no KubernetesPodOperator pod in kubernetes mode\n")
        return 1
    print(f"  {len(result['pods'])} step pods -> {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))

"""Where things are: the repository, the real data sets, the tools the suite needs."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: the real data sets (the shared/ folder beside the repository)
DATA_DIR = (REPO / ".." / "shared" / "data").resolve()
VENV_BIN = REPO / ".venv" / "bin"
AIRFLOW_BIN = REPO / ".venv-airflow" / "bin"
HELM = REPO / "tools" / "bin" / "helm"

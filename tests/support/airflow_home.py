"""Airflow homes of the tests: `airflow db migrate` runs ONCE per session into a template home;
each test gets a copy of its metadata database (a fresh, migrated home of its own)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.paths import AIRFLOW_BIN, REPO

#: the metadata database of a migrated home (SQLite); airflow.cfg is written on first use
METADATA_DB = "airflow.db"


def base_env(home: Path) -> dict[str, str]:
    """The environment of an Airflow process whose home is `home`, parsing the project's DAGs."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "airflow" / "dags"),
        # The dag-processor puts the DAG bundle on sys.path; a bare DagBag needs it here.
        "PYTHONPATH": str(REPO / "airflow" / "dags"),
    }


def migrate(home: Path) -> Path:
    """`airflow db migrate` into `home`; the migrated metadata database."""
    if not (AIRFLOW_BIN / "airflow").exists():
        raise RuntimeError(f"{AIRFLOW_BIN / 'airflow'} is missing: run `make install`")
    done = subprocess.run(
        [str(AIRFLOW_BIN / "airflow"), "db", "migrate"], env=base_env(home), capture_output=True,
        text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{done.stderr[-3000:]}")
    return home / METADATA_DB


def airflow_home(root: Path, migrated: Path | None = None) -> dict[str, str]:
    """A migrated Airflow home of its own under `root`; the environment that uses it.

    `migrated`: a migrated metadata database (`migrate`) copied in instead of migrating again.
    """
    home = root / "airflow"
    if migrated is None:
        migrate(home)
    else:
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(migrated, home / METADATA_DB)
    # a failing step is retried (retries stay 2) without a wait
    return {**base_env(home), "MH_RETRY_DELAY_S": "1"}

"""What the suite needs installed, and the make target that installs each: checked once, before
any test runs, so a machine that skipped an install step fails at once and says what to run
(instead of passing because an earlier run left the tool behind, or failing deep in a test)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from tests.support.paths import AIRFLOW_BIN, HELM, REPO, VENV_BIN

#: scripts/fetch_helm.sh's pinned binary
HELM_SHA_SOURCE = REPO / "scripts" / "fetch_helm.sh"


def _stamp(venv: Path, *defining: str) -> Path:
    """The Makefile's install stamp of `venv`: keyed on the content of the files defining it."""
    content = b"".join((REPO / name).read_bytes() for name in defining)
    return venv / f".installed-{hashlib.sha256(content).hexdigest()[:16]}"


def _pinned_helm_sha() -> str:
    for line in HELM_SHA_SOURCE.read_text().splitlines():
        if line.startswith("HELM_SHA256="):
            return line.split("=", 1)[1].split("#")[0].strip().strip('"')
    raise RuntimeError(f"no HELM_SHA256 in {HELM_SHA_SOURCE}")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def missing_install_steps() -> list[str]:
    """One line per missing piece: what is missing and the make target that installs it."""
    missing = []
    app_stamp = _stamp(VENV_BIN.parent, "requirements.txt", "pyproject.toml")
    if not app_stamp.exists():
        missing.append(f"{app_stamp.relative_to(REPO)} (.venv not installed from the current "
                       "requirements.txt/pyproject.toml): run `make install`")  # fmt: skip
    airflow_stamp = _stamp(AIRFLOW_BIN.parent, "requirements-airflow.txt")
    if not airflow_stamp.exists() or not (AIRFLOW_BIN / "airflow").exists():
        missing.append(f"{airflow_stamp.relative_to(REPO)} (the Airflow venv): run `make install`")
    for tool in ("kubernetes-validate", "hadolint", "nx-27017"):
        if not (VENV_BIN / tool).exists():
            missing.append(f".venv/bin/{tool}: run `make install`")
    if not HELM.is_file():
        missing.append(f"{HELM.relative_to(REPO)}: run `make helm-check`")
    elif _sha256(HELM) != _pinned_helm_sha():
        missing.append(f"{HELM.relative_to(REPO)} is not the pinned build: run `make helm-check`")
    if shutil.which("promtool") is None:
        missing.append("promtool (Debian's prometheus package): run `make promtool`")
    for tool, package in (("bwrap", "bubblewrap"), ("ip", "iproute2")):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (Debian's {package} package): run `make bwrap`")
    for tool in ("unshare", "nsenter", "setpriv"):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (util-linux): install util-linux")
    return missing

"""The Dockerfiles: hadolint (the real binary), pinned bases, non-root, health checks, context.

No Docker engine runs here, so the images are checked the way a reviewer would: by their
Dockerfiles, and for the slim UI image by checking that everything the UI imports is installed.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
HADOLINT = REPO / ".venv" / "bin" / "hadolint"
DOCKERFILES = sorted(DOCKER.glob("*Dockerfile*"))
PACKAGE = REPO / "src" / "machine_health"


def stages(path: Path) -> list[list[str]]:
    """Instructions per build stage, line continuations joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    result: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(line)
    return result


def build_args(path: Path) -> dict[str, str]:
    return dict(re.findall(r'^ARG (\w+)="?([^"\n]*)"?$', path.read_text(), re.M))


def test_every_image_has_a_dockerfile() -> None:
    assert {p.name for p in DOCKERFILES} == {
        "serving.Dockerfile",
        "ui.Dockerfile",
        "airflow.Dockerfile",
    }


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned(dockerfile: Path) -> None:
    args = build_args(dockerfile)
    stage_names: set[str] = set()
    for stage in stages(dockerfile):
        parts = stage[0].split()
        image = parts[1]
        if image.startswith("${"):
            image = args[image.strip("${}")]
        if len(parts) >= 4 and parts[2].upper() == "AS":
            stage_names.add(parts[3])
        if image in stage_names - {parts[-1]}:
            continue  # FROM an earlier stage
        if "@sha256:" in image:
            continue
        tag = image.rpartition(":")[2]
        assert ":" in image and tag != "latest", f"{dockerfile.name}: {image} is not pinned"
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{dockerfile.name}: {image}: exact version tag"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_runs_as_an_unprivileged_numeric_user(dockerfile: Path) -> None:
    users = [i.split()[1] for stage in stages(dockerfile) for i in stage if i.startswith("USER ")]
    assert users, f"{dockerfile.name} never leaves root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0, f"{dockerfile.name}: USER {users[-1]}"


@pytest.mark.parametrize("name", ["serving.Dockerfile", "ui.Dockerfile"])
def test_application_images_are_multi_stage_with_a_health_check(name: str) -> None:
    built = stages(DOCKER / name)
    assert len(built) >= 2, "build tools and caches stay in the build stage"
    runtime = next(s for s in built if " AS serving" in s[0] or " AS ui" in s[0])
    healthchecks = [i for i in runtime if i.startswith("HEALTHCHECK ")]
    assert healthchecks and "NONE" not in healthchecks[0]
    assert any(i.startswith("COPY --from=build") for i in runtime)


def test_airflow_image_installs_only_prebuilt_wheels() -> None:
    built = stages(DOCKER / "airflow.Dockerfile")
    assert len(built) == 2
    install = next(i for i in built[-1] if i.startswith("RUN ") and "pip install" in i)
    assert "--mount=type=bind,from=wheels" in install and "--no-index" in install
    assert "apache-airflow==${AIRFLOW_VERSION}" in install, "pip must not move Airflow itself"


def test_no_secret_or_local_state_enters_the_build_context() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "**", "exclude everything, then allow what the images need"
    allowed = [line[1:] for line in lines if line.startswith("!")]
    for private in ("var", ".env", ".venv", ".git", "data", "models", "tools"):
        assert not any(a.rstrip("/") == private or a.startswith(private + "/") for a in allowed)
    for dockerfile in DOCKERFILES:
        for stage in stages(dockerfile):
            for instruction in stage:
                if instruction.startswith(("COPY ", "ADD ")) and "--from=" not in instruction:
                    sources = [s for s in instruction.split()[1:-1] if not s.startswith("--")]
                    for source in sources:
                        assert any(source.rstrip("/").startswith(a.rstrip("/")) for a in allowed), (
                            f"{dockerfile.name}: {source} is outside the build context"
                        )


# --- the slim UI image carries everything the UI imports -----------------------------------------


def closure(distributions: list[str]) -> set[str]:
    """The distributions pip installs for these (base requirements, no extras)."""
    seen: set[str] = set()
    todo = [canonicalize_name(d) for d in distributions]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in md.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            todo.append(canonicalize_name(requirement.name))
    return seen


def imported_top_levels(modules: list[str]) -> set[str]:
    """Top-level names imported by these package modules, following the package's own imports.

    cli.py only counts at module level (its commands import their heavy modules lazily); UI
    modules count everywhere.
    """
    found: set[str] = set()
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        relative = Path(*module.split(".")[1:])
        path = PACKAGE / relative.with_suffix(".py")
        if not path.exists():
            path = PACKAGE / relative / "__init__.py"
        if not path.exists():
            continue
        tree = ast.parse(path.read_text())
        nodes = tree.body if module == "machine_health.cli" else list(ast.walk(tree))
        for node in nodes:
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.startswith("machine_health"):
                    todo.append(name)
                else:
                    found.add(name.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"__future__"}


def test_ui_image_installs_everything_the_ui_imports() -> None:
    packages = build_args(DOCKER / "ui.Dockerfile")["UI_PACKAGES"].split()
    installed = closure(packages)
    ui_modules = [
        "machine_health." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts)
        for p in (PACKAGE / "ui").rglob("*.py")
    ]
    wanted = imported_top_levels(["machine_health.cli", *ui_modules])
    providers = md.packages_distributions()
    missing = {
        name: providers.get(name, ["?"])
        for name in wanted
        if not {canonicalize_name(d) for d in providers.get(name, [])} & installed
    }
    assert not missing, f"add to UI_PACKAGES in docker/ui.Dockerfile: {missing}"

"""The models page over a registry whose version 2 went through the pipeline's gate: the gate
report shown is the registry's artifact, and an admin's promote / rollback really move the
`champion` alias in the MLflow store (read back with machine_health.registry).

The registry is private to this module (the seeded API's registry is the session's, shared with
other tests): version 1 is the session's real vibration model; version 2 is that model as the
train step leaves a challenger (logged, not registered), then the REAL extract (the seeded
archive), evaluate (both scored on the CWRU test windows) and register steps. A second API
(uvicorn) serves that registry over the seeded archive, with the same users and tokens.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from machine_health import registry
from machine_health.config import Settings
from machine_health.pipeline import evaluate, extract
from machine_health.pipeline import register as register_step
from machine_health.pipeline.workspace import Workspace
from tests.support.models import TrainedModels, register_version
from tests.support.servers import start_uvicorn
from tests.support.ui import SeededApi, app_as, metrics

pytestmark = pytest.mark.slow
DOMAIN = "vibration"


@dataclasses.dataclass(frozen=True)
class GatedRegistry:
    api: SeededApi  # the UI's API: the private registry over the seeded archive
    settings: Settings
    first: str  # the session's model, registered outside the pipeline (no gate report)
    gated: str  # registered by the pipeline's register step, after its gate


@pytest.fixture(scope="module")
def gated(
    seeded: SeededApi, pristine_models: TrainedModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatedRegistry]:
    tmp = tmp_path_factory.mktemp("ui-models")
    settings = seeded.settings.model_copy(
        update={"var_dir": tmp / "var", "mlflow_tracking_uri": None}
    )
    bundle, _ = registry.load(seeded.settings, DOMAIN, version=pristine_models.vibration_version)
    first = register_version(
        settings, bundle, "initial-vibration", "vibration", aliases=(registry.CHAMPION,)
    )
    with registry.start_run(settings, run_name="retrain-vibration") as run:
        logged = registry.log_bundle(settings, bundle, register=False)
    end = datetime.now(UTC) + timedelta(minutes=1)  # after every seeded label
    keys = {"settings": settings, "domain": DOMAIN, "run_id": f"manual__{end.isoformat()}",
            "interval_start": end - timedelta(days=1), "interval_end": end}  # fmt: skip
    ws = Workspace.open(**keys)
    bundle.save(ws.file("challenger"))
    ws.record("train", {"mlflow_run_id": run.info.run_id, "model_uri": logged.source,
                        "bundle": str(ws.file("challenger"))})  # fmt: skip
    extract.run(**keys)
    evaluate.run(**keys)
    registered = register_step.run(**keys)
    assert registered["promoted"], registered  # the same model: within the gate's tolerance
    server = start_uvicorn(settings, tmp / "logs")
    try:
        api = dataclasses.replace(seeded, url=server.url, settings=settings)
        yield GatedRegistry(api, settings, first, registered["version"])
    finally:
        server.stop()


def _served(gated: GatedRegistry) -> str:
    return httpx.get(f"{gated.api.url}/version", timeout=10).json()["models"][DOMAIN]["version"]


def _tab(at: object, label: str) -> object:
    return next(t for t in at.tabs if t.label == label)  # type: ignore[attr-defined]


def test_gate_report_shown_is_the_registrys(gated: GatedRegistry) -> None:
    at = app_as(gated.api, "viewer", "models")
    at.selectbox(key=f"gate_{DOMAIN}").select(gated.gated).run()
    tab = _tab(at, DOMAIN)
    artifacts = registry.run_artifact_texts(gated.settings, DOMAIN, gated.gated, "gate")
    assert set(artifacts) == {"gate/gate.json", "gate/gate.md"}
    report = json.loads(artifacts["gate/gate.json"])
    assert [json.loads(j.value) for j in tab.json] == [report]
    shown = [m.value for m in tab.markdown if m.value.startswith("#### Gate report")]
    assert shown == ["###" + artifacts["gate/gate.md"].strip()]  # the title one level down
    assert report["passed"] and report["champion_version"] == gated.first
    # Both slices, every metric with its values, difference and interval, as the table shows
    # them (the same model on both sides: no difference at all).
    assert {r["slice"] for r in report["metrics"]} == {"reference", "field"}
    for row in report["metrics"]:
        cells = f"| {row['slice']} | {row['metric']} | {row['better']} |"
        if row["champion"] is not None:
            cells += f" {row['champion']:.4g} | {row['challenger']:.4g} |"
        assert cells in shown[0], cells
        if row.get("interval"):
            assert row["difference"] == 0.0 and row["interval"] == [0.0, 0.0]
    assert report["reference"]["windows"] > 0  # the carve-out of the CWRU training portion
    assert report["headline"]["facts"]["eval_windows"] > 0  # the test windows, information only
    at.selectbox(key=f"gate_{DOMAIN}").select(gated.first).run()
    assert any(f"v{gated.first} has no gate report" in i.value for i in _tab(at, DOMAIN).info)


def test_promote_and_rollback_move_the_champion_alias(gated: GatedRegistry) -> None:
    settings, first, second = gated.settings, gated.first, gated.gated
    viewer = app_as(gated.api, "viewer", "models")
    assert not [b for b in viewer.button if b.key and b.key.startswith(("promote", "rollback"))]
    assert registry.aliases(settings, DOMAIN)[registry.CHAMPION] == second

    admin = app_as(gated.api, "admin", "models")
    admin.button(key=f"rollback_{DOMAIN}").click().run()
    assert any(f"champion {second} -> {first}" in s.value for s in admin.success)
    aliases = registry.aliases(settings, DOMAIN)
    assert (aliases[registry.CHAMPION], aliases[registry.PREVIOUS]) == (first, second)
    admin.run()
    assert metrics(_tab(admin, DOMAIN))["Champion"] == [f"v{first}"]
    assert _served(gated) == second  # the API serves what it loaded until a reload
    admin.button(key=f"reload_{DOMAIN}").click().run()
    assert _served(gated) == first

    admin.selectbox(key=f"promote_v_{DOMAIN}").select(second).run()
    admin.button(key=f"promote_{DOMAIN}").click().run()
    assert any(f"champion {first} -> {second}" in s.value for s in admin.success)
    aliases = registry.aliases(settings, DOMAIN)
    assert (aliases[registry.CHAMPION], aliases[registry.PREVIOUS]) == (second, first)
    admin.button(key=f"reload_{DOMAIN}").click().run()
    assert _served(gated) == second


def _shadow_served(gated: GatedRegistry) -> str | None:
    shadow = httpx.get(f"{gated.api.url}/version", timeout=10).json()["shadows"][DOMAIN]
    return None if shadow is None else shadow["version"]


def test_shadow_started_refused_and_dropped_from_the_page(gated: GatedRegistry) -> None:
    settings = gated.settings
    champion = registry.aliases(settings, DOMAIN)[registry.CHAMPION]
    other = gated.first if champion == gated.gated else gated.gated
    viewer = app_as(gated.api, "viewer", "models")
    assert not [b for b in viewer.button if b.key and b.key.startswith("shadow")]
    assert any("No shadow" in c.value for c in _tab(viewer, DOMAIN).caption)

    admin = app_as(gated.api, "admin", "models")
    admin.selectbox(key=f"shadow_v_{DOMAIN}").select(other).run()
    admin.button(key=f"shadow_{DOMAIN}").click().run()
    assert any(f"@shadow v{other}" in s.value for s in admin.success)
    assert registry.aliases(settings, DOMAIN)["shadow"] == other
    assert _shadow_served(gated) == other  # this replica at once
    admin.run()
    tab = _tab(admin, DOMAIN)
    # no archived request was scored by the shadow yet: nothing to judge, no promotion on it
    assert any("no archived prediction has a shadow" in m.value for m in tab.markdown)
    admin.button(key=f"shadow_promote_{DOMAIN}").click().run()
    assert any("not promoted" in e.value for e in admin.error)
    assert registry.aliases(settings, DOMAIN)[registry.CHAMPION] == champion
    admin.button(key=f"shadow_drop_{DOMAIN}").click().run()
    assert any(f"shadow v{other} dropped" in s.value for s in admin.success)
    assert "shadow" not in registry.aliases(settings, DOMAIN)
    assert _shadow_served(gated) is None

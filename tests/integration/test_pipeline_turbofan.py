"""The turbofan loop closed end to end with the local runner (`machine-health pipeline run-all`).

Real C-MAPSS test engines are replayed cycle by cycle into a real API replica (uvicorn, the real
store), each engine's failure is posted so the API back-fills the true RUL of its archived
cycles, and the pipeline then extracts those labels, rescales, retrains, gates, registers and
reloads the replica, which serves the new version. A second run with nothing new stops at the
check. The Airflow wiring of the same steps is tested in test_pipeline_dag.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from machine_health import registry
from machine_health.domains.turbofan.data import load_subset
from machine_health.domains.turbofan.monitoring import drift_reference
from machine_health.errors import PromotionRefused
from machine_health.monitoring.shadow import promote_shadow, run_shadow_comparison
from machine_health.pipeline import run_all
from machine_health.simulate import simulate
from tests.support.dag_runs import served
from tests.support.models import TrainedModels, register_champion
from tests.support.settings import make_settings
from tests.support.users import PASSWORDS, create_users

pytestmark = pytest.mark.slow  # retrains a small CNN on the real data
UNITS = 10
SHADOW_UNITS = 6


def test_archived_engines_retrain_and_reload_the_turbofan_model(
    tmp_path: Path, store_uri: str, uvicorn_server: Any, trained_models: TrainedModels
) -> None:
    settings = make_settings(
        tmp_path, store_uri, retrain_min_new_labels=100, retrain_turbofan_model="cnn",
        retrain_epochs=3, gate_tolerance=100.0,  # any challenger passes: the promotion is tested
    )  # fmt: skip
    # v1: the session's CNN (trained by the domain's own train_and_register) and the FD001
    # training reference that training logs beside it, copied into this test's registry.
    fd001 = load_subset(settings.data_dir, "FD001")
    v1 = register_champion(
        settings, trained_models, "turbofan", drift_reference(fd001.train, source="train FD001")
    )
    create_users(settings)
    replica = uvicorn_server(settings)
    settings = settings.model_copy(update={"serving_urls": [replica.url]})
    assert served(replica.url, "turbofan") == v1

    replay = asyncio.run(
        simulate(replica.url, "operator", PASSWORDS["operator"], settings.data_dir,
                 domains=["turbofan"], units=UNITS)
    )["turbofan"]  # fmt: skip
    test = load_subset(settings.data_dir, "FD001").test
    cycles = int((test["unit"] <= UNITS).sum())
    assert replay["acknowledged"] == cycles and replay["labels_sent"] == UNITS

    end = datetime.now(UTC) + timedelta(seconds=1)  # after every label the API wrote
    keys = {"settings": settings, "domain": "turbofan",
            "interval_start": (end - timedelta(days=1)).isoformat(),
            "interval_end": end.isoformat()}  # fmt: skip
    results = run_all(run_id="r1", **keys)
    assert results["check"]["retrain"] is True
    assert results["check"]["new_labels"] == cycles
    assert results["extract"]["rows"] == cycles
    assert results["validate"]["new_rows"] == cycles and not results["validate"]["nothing_new"]
    evaluate = results["evaluate"]
    assert evaluate["passed"] is True
    # The gate judged both models on the 20 reference units carved out of FD001's training
    # file, with intervals; the replayed test units never ran to failure: no field slice.
    gate = json.loads(Path(evaluate["report"]).read_text())
    reference = [r for r in gate["metrics"] if r["slice"] == "reference"]
    assert {r["metric"] for r in reference} == {"rmse", "phm_score"}
    for row in reference:
        assert row["champion"] > 0 and row["challenger"] > 0 and row["n_groups"] == 20
        low, high = row["interval"]
        assert low <= row["difference"] <= high
    field = [r for r in gate["metrics"] if r["slice"] == "field"]
    assert field and all(r["verdict"].startswith("not enough field data") for r in field)
    assert gate["headline"]["facts"]["eval_units_excluded"] == UNITS  # information only
    register = results["register"]
    v2 = str(register["version"])
    assert register["promoted"] and v2 != v1
    assert registry.aliases(settings, "turbofan") == {
        "champion": v2, "challenger": v2, "previous": v1,
    }  # fmt: skip
    assert results["reload"]["reloaded"] is True
    assert served(replica.url, "turbofan") == v2

    # Nothing new since the labels v2 consumed: the next run stops at its check.
    later = {**keys, "interval_end": (end + timedelta(seconds=1)).isoformat()}
    again = run_all(run_id="r2", **later)
    assert list(again) == ["check"] and again["check"]["retrain"] is False
    assert served(replica.url, "turbofan") == v2

    # MH_PROMOTION=shadow: new labels, a retrain whose passing challenger becomes the shadow;
    # the replica scores with it beside v2, then its live comparison is read and it is promoted.
    shadowing = settings.model_copy(update={"promotion": "shadow"})
    while datetime.now(UTC) <= end + timedelta(seconds=1):  # new labels: after r2's interval
        time.sleep(0.1)
    assert replay_units(replica.url, settings, SHADOW_UNITS)["labels_sent"] == SHADOW_UNITS
    end3 = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    third = run_all(run_id="r3", **{**keys, "settings": shadowing, "interval_end": end3})
    assert "register" in third, {k: _brief(v) for k, v in third.items()}
    v3 = str(third["register"]["version"])
    assert third["register"]["shadowed"] and not third["register"]["promoted"]
    assert registry.aliases(settings, "turbofan")["champion"] == v2
    assert registry.aliases(settings, "turbofan")["shadow"] == v3
    assert third["reload"]["slot"] == "shadow" and third["reload"]["version"] == v3
    assert served(replica.url, "turbofan") == v2  # the champion still answers
    replayed = replay_units(replica.url, settings, SHADOW_UNITS)
    report = run_shadow_comparison(settings, "turbofan", now=datetime.now(UTC) + timedelta(1))
    assert report["shadow_version"] == v3 and report["statuses"].get("ok", 0) > 0
    assert 0 < report["n_paired"] <= replayed["acknowledged"]
    assert report["judged"] and {r["metric"] for r in report["rows"]} == {"rmse", "phm_score"}
    # the promotion follows the comparison's verdict: refused when the shadow was judged worse
    if report["passed"]:
        promoted = promote_shadow(settings, "turbofan", now=datetime.now(UTC))
    else:
        with pytest.raises(PromotionRefused, match="significantly worse"):
            promote_shadow(settings, "turbofan", now=datetime.now(UTC))
        promoted = promote_shadow(settings, "turbofan", now=datetime.now(UTC), force=True)
    assert promoted["forced"] is (not report["passed"])
    assert promoted["champion"] == {"old": v2, "new": v3}
    assert "shadow" not in registry.aliases(settings, "turbofan")


def _brief(result: Any) -> Any:
    return {k: v for k, v in result.items() if not isinstance(v, dict | list)}


def replay_units(url: str, settings: Any, units: int) -> dict[str, Any]:
    """The first `units` FD001 test engines again under new unit ids, failures posted."""
    replay = simulate(url, "operator", PASSWORDS["operator"], settings.data_dir,
                      domains=["turbofan"], units=units)  # fmt: skip
    return asyncio.run(replay)["turbofan"]

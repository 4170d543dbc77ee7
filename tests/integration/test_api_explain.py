"""Explained answers through a real uvicorn server, on real inputs whose evidence is known.

- vibration: a real outer-race test window asked with `?explain=true` names BPFO first, as a
  line that stands out; the same window without it gets its explanation archived in the
  background, equal to the asked one (explanations are deterministic);
- turbofan: a training unit of FD001 run up to 15 cycles before its failure names, among its
  top three, sensors that trend over that unit's life (|Spearman(sensor, cycle)| > 0.6, computed
  here without the model), with the life they cost in cycles and the regime;
- acoustic: a real anomalous valve clip's score is split over its frequency bands, and the
  parts add up to the answer's own score (squared);
- unasked answers carry no explanation (it costs more than the score: never on the hot path).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from machine_health.config import Settings
from machine_health.domains import get_domain
from machine_health.domains.turbofan.data import SENSORS, SETTINGS, load_subset
from machine_health.domains.vibration import demo as vibration_demo
from tests.support.models import TrainedModels, api_settings
from tests.support.servers import Server, wait_for
from tests.support.settings import own_database
from tests.support.users import create_users, login

BEFORE_FAILURE = 15


@pytest.fixture
def served(
    tmp_path: Path,
    store_uri: str,
    trained_models: TrainedModels,
    uvicorn_server: Callable[..., Server],
) -> Iterator[tuple[Settings, Server, dict[str, str]]]:
    settings = api_settings(tmp_path, store_uri, trained_models)
    create_users(settings)
    server = uvicorn_server(settings)
    yield settings, server, login(server.url, "operator")
    for _ in own_database(settings):
        pass


def test_an_outer_race_window_names_bpfo_first(
    served: tuple[Settings, Server, dict[str, str]],
) -> None:
    settings, server, operator = served
    windows = vibration_demo.test_windows(settings.data_dir / "cwru", 200)
    outer = next(w for w in windows if "OR007" in w["body"]["asset_id"])
    with httpx.Client(base_url=server.url, headers=operator, timeout=60) as client:
        asked = client.post("/predict/vibration", params={"explain": "true"}, json=outer["body"])
        plain = client.post("/predict/vibration", json=outer["body"])
        tested = client.post("/predict-test/vibration?explain=true", json=outer["body"])
        assert asked.status_code == plain.status_code == tested.status_code == 200
        explanation = asked.json()["explanation"]
        assert explanation["evidence"][0]["name"] == "bpfo"
        assert explanation["evidence"][0]["stands_out"] is True
        assert "BPFO" in explanation["summary"]
        assert plain.json()["explanation"] is None  # not asked: not computed for the answer
        assert tested.json()["explanation"] == explanation
        stored = client.get(f"/predictions/{asked.json()['prediction_id']}").json()
        assert stored["explanation"] == explanation
        pid = plain.json()["prediction_id"]
        wait_for(
            lambda: client.get(f"/predictions/{pid}").json().get("explanation") is not None,
            30, "the background explanation of the unasked answer",
        )  # fmt: skip
        assert client.get(f"/predictions/{pid}").json()["explanation"] == explanation


def _late_life_unit(data_dir: Path, unit: int) -> tuple[list[dict[str, Any]], set[str]]:
    """A FD001 training unit's cycles up to BEFORE_FAILURE cycles before it failed, as requests,
    and the sensors that trend over its whole life (|Spearman| > 0.6)."""
    train = load_subset(data_dir, "FD001").train
    history = train[train["unit"] == unit].sort_values("cycle")
    trending = {
        s for s in SENSORS
        if history[s].nunique() > 1
        and abs(history[s].corr(history["cycle"], method="spearman")) > 0.6
    }  # fmt: skip
    rows = [
        {"unit_id": f"explain-{unit}", "cycle": int(r["cycle"]),
         "settings": [float(r[c]) for c in SETTINGS], "sensors": [float(r[c]) for c in SENSORS]}
        for _, r in history.head(len(history) - BEFORE_FAILURE).iterrows()
    ]  # fmt: skip
    return rows, trending


def test_a_unit_late_in_life_names_the_sensors_that_trend(
    served: tuple[Settings, Server, dict[str, str]],
) -> None:
    settings, server, operator = served
    rows, trending = _late_life_unit(settings.data_dir, 2)
    with httpx.Client(base_url=server.url, headers=operator, timeout=120) as client:
        before = rows[:-1]
        for start in range(0, len(before), 64):
            batch = client.post(
                "/predict/turbofan/batch", json={"items": before[start : start + 64]}
            )
            assert batch.status_code == 200, batch.text
        last = client.post("/predict/turbofan?explain=true", json=rows[-1])
        assert last.status_code == 200, last.text
    answer = last.json()
    explanation = answer["explanation"]
    assert answer["prediction"]["rul"] < 60  # late in life, as the model sees it
    top = [e["name"] for e in explanation["evidence"][:3]]
    assert len(top) == 3 and set(top) <= trending, (top, trending)
    assert explanation["evidence"][0]["value"] < 0  # the trend shortened the predicted life
    assert explanation["regime"] == answer["prediction"]["regime"]
    assert f"regime {answer['prediction']['regime']}" in explanation["summary"]


def test_an_anomalous_clip_is_split_over_its_bands(
    served: tuple[Settings, Server, dict[str, str]],
) -> None:
    settings, server, operator = served
    clip = get_domain("acoustic").example_input(settings.data_dir)
    with httpx.Client(base_url=server.url, headers=operator, timeout=60) as client:
        answer = client.post("/predict/acoustic?explain=true", json=clip)
    assert answer.status_code == 200, answer.text
    explanation = answer.json()["explanation"]
    assert explanation["evidence"] and all("hz" in e for e in explanation["evidence"])
    values = [e["value"] for e in explanation["evidence"]]
    assert values == sorted(values, reverse=True)  # ranked, most important first
    # the bands are parts of the answer's own score: they add up to score^2 exactly (the
    # Mahalanobis detector) or bound it from above (k-NN); 4 significant digits are kept
    score = answer.json()["prediction"]["anomaly_score"]
    total = explanation["total"]
    assert sum(values) + explanation["rest"] == pytest.approx(total, rel=1e-3)
    if explanation["decomposition"] == "exact":
        assert total == pytest.approx(score**2, rel=1e-3)
    else:
        assert total >= score**2 * (1 - 1e-3)

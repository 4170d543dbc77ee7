"""Two API replicas behind no affinity: a turbofan unit's answers do not depend on the replica.

Two real uvicorn processes share one real store (and one registry). A unit's cycles are sent
alternately to both; a control unit with the same inputs goes to one replica only. Every answer
must equal the control's, cycle by cycle, with no 409. A replica that restarts (empty memory)
continues a unit the other replica advanced, and a replica whose store goes away keeps scoring
from its memory (spooled) and hands its cycles over when the store is back.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from machine_health.config import Settings
from tests.conftest import Server, own_database
from tests.integration.conftest import (
    TrainedModels,
    api_settings,
    create_users,
    login,
)
from tests.integration.test_api_durability import Store, _spool_empty, _wait_for

CYCLES = 200
TOLERANCE = 1e-6


def _longest_unit(data_dir: Path, cycles: int) -> list[dict[str, Any]]:
    """The first `cycles` cycles of the longest unit of test_FD001, as request rows."""
    from machine_health.domains.turbofan.data import SENSORS, SETTINGS, load_subset

    test = load_subset(data_dir, "FD001").test
    unit = test.groupby("unit")["cycle"].count().idxmax()
    rows = test[test["unit"] == unit].sort_values("cycle").head(cycles)
    return [
        {
            "cycle": int(r["cycle"]),
            "settings": [float(r[c]) for c in SETTINGS],
            "sensors": [float(r[c]) for c in SENSORS],
        }
        for _, r in rows.iterrows()
    ]


def _replica(settings: Settings, tmp_path: Path, name: str) -> Settings:
    """`settings` for one more replica: same store and registry, its own var/ (spool) and name."""
    return settings.model_copy(update={"var_dir": tmp_path / name / "var", "replica_name": name})


def _post(client: httpx.Client, url: str, unit: str, row: dict[str, Any]) -> httpx.Response:
    return client.post(f"{url}/predict/turbofan", json={"unit_id": unit, **row})


def _assert_same_answers(
    got: list[dict[str, Any]], expected: list[dict[str, Any]], what: str
) -> None:
    assert len(got) == len(expected), what
    differ = []
    for a, b in zip(got, expected, strict=True):
        assert a["cycle"] == b["cycle"]
        pa, pb = a["prediction"], b["prediction"]
        same = (
            abs(pa["rul"] - pb["rul"]) <= TOLERANCE
            and pa["cycles_in_window"] == pb["cycles_in_window"]
            and pa["regime"] == pb["regime"]
        )
        if not same:
            differ.append((a["cycle"], pa, pb))
    assert not differ, f"{what}: {len(differ)} of {len(got)} answers differ, first {differ[:3]}"


@pytest.fixture
def settings_and_users(
    tmp_path: Path, store_uri: str, trained_models: TrainedModels
) -> Iterator[Settings]:
    settings = api_settings(tmp_path, store_uri, trained_models)
    create_users(settings)
    yield settings
    for _ in own_database(settings):  # drop the test's database
        pass


def test_alternating_replicas_answer_as_one_replica(
    tmp_path: Path, settings_and_users: Settings, uvicorn_server: Callable[..., Server]
) -> None:
    settings = settings_and_users
    a = uvicorn_server(_replica(settings, tmp_path, "a"))
    b = uvicorn_server(_replica(settings, tmp_path, "b"))
    rows = _longest_unit(settings.data_dir, CYCLES)
    assert len(rows) == CYCLES
    tag = secrets.token_hex(3)
    spread, control = f"spread-{tag}", f"control-{tag}"
    statuses: list[int] = []
    spread_answers: list[dict[str, Any]] = []
    control_answers: list[dict[str, Any]] = []
    with httpx.Client(headers=login(a.url, "operator"), timeout=60) as client:
        for i, row in enumerate(rows):
            response = _post(client, (a, b)[i % 2].url, spread, row)
            statuses.append(response.status_code)
            if response.status_code == 200:
                spread_answers.append(response.json())
        for row in rows:
            response = _post(client, a.url, control, row)
            assert response.status_code == 200, response.text
            control_answers.append(response.json())
    assert statuses == [200] * CYCLES, f"refused cycles: {[s for s in statuses if s != 200]}"
    _assert_same_answers(spread_answers, control_answers, "two replicas vs one")
    windows = [a["prediction"]["cycles_in_window"] for a in spread_answers]
    assert windows[-1] == min(CYCLES, settings.turbofan_window)
    # A cycle already recorded by the OTHER replica is refused, as one replica refuses it.
    with httpx.Client(headers=login(a.url, "operator"), timeout=60) as client:
        again = _post(client, b.url, spread, rows[-1])  # the last cycle went to replica b
        again_a = _post(client, a.url, spread, rows[-1])
        backwards = _post(client, a.url, spread, rows[-3])
    assert again.status_code == again_a.status_code == backwards.status_code == 409


def test_restarted_replica_continues_the_unit(
    tmp_path: Path, settings_and_users: Settings, uvicorn_server: Callable[..., Server]
) -> None:
    """A replica restarted with empty memory continues a unit the other replica advanced,
    and its answers equal one replica's (here: the same replica before the restart)."""
    settings = settings_and_users
    a_settings = _replica(settings, tmp_path, "a")
    a = uvicorn_server(a_settings)
    b = uvicorn_server(_replica(settings, tmp_path, "b"))
    rows = _longest_unit(settings.data_dir, 40)
    tag = secrets.token_hex(3)
    unit, control = f"restart-{tag}", f"control-{tag}"
    with httpx.Client(headers=login(a.url, "operator"), timeout=60) as client:
        expected = [_post(client, b.url, control, row).json() for row in rows]
        got = [_post(client, a.url, unit, row).json() for row in rows[:10]]  # a holds it
        got += [_post(client, b.url, unit, row).json() for row in rows[10:20]]  # b moves on
        a.stop()
        port = int(a.url.rsplit(":", 1)[1])
        a = uvicorn_server(a_settings, port=port)  # empty memory, stale knowledge gone
        for row in rows[20:30]:
            response = _post(client, a.url, unit, row)
            assert response.status_code == 200, response.text
            got.append(response.json())
        got += [_post(client, b.url, unit, row).json() for row in rows[30:]]
    _assert_same_answers(got, expected, "across a restart")


def test_store_down_falls_back_to_memory_then_hands_over(
    tmp_path: Path, trained_models: TrainedModels, uvicorn_server: Callable[..., Server]
) -> None:
    """Store down: the replica that holds the unit scores it from memory (spooled answers);
    once the store is back (the spool replayed), both replicas continue the unit with those
    cycles."""
    store = Store(tmp_path)
    store.start()
    try:
        settings = api_settings(tmp_path, store.uri, trained_models, store_timeout_ms=800)
        create_users(settings)
        a = uvicorn_server(_replica(settings, tmp_path, "a"))
        b = uvicorn_server(_replica(settings, tmp_path, "b"))
        rows = _longest_unit(settings.data_dir, 30)
        unit, control = "down-unit", "down-control"
        with httpx.Client(headers=login(a.url, "operator"), timeout=60) as client:
            expected = [_post(client, b.url, control, row).json() for row in rows]
            got = [_post(client, a.url, unit, row).json() for row in rows[:10]]
            assert {g["archived"] for g in got} == {"archived"}
            store.stop()
            for row in rows[10:20]:  # a knows the unit: from memory, spooled
                response = _post(client, a.url, unit, row)
                assert response.status_code == 200, response.text
                got.append(response.json())
            assert {g["archived"] for g in got[10:]} == {"spooled"}
            store.start()
            _wait_for(lambda: _spool_empty(a.url), 60, "the spool replay")
            time.sleep(0.2)
            for i, row in enumerate(rows[20:]):  # both continue it, with the cycles a spooled
                response = _post(client, (b, a)[i % 2].url, unit, row)
                assert response.status_code == 200, response.text
                got.append(response.json())
        _assert_same_answers(got, expected, "across a store outage")
    finally:
        store.stop()

"""Hostile and careless values on a real uvicorn with the real store: nothing a client sends
may break archiving, another client's unit or request, or a later retrain.

One server for the module (the reliability registry's models). Each test is a case that was
reproduced against a live API: a cycle beyond int64 failing its whole group commit, a unit
hijacked by one far-future cycle, an Idempotency-Key answering another request, a failure
cycle blocking every retrain, a projection failing on archived overflows, dates beyond
Python's range, 503 bodies echoing the driver, unbounded stats windows.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from pymongo.database import Database

from machine_health.config import Settings
from machine_health.domains import get_domain
from machine_health.domains.turbofan import SENSOR_RANGES, SETTING_RANGES
from tests.support.cli import run_cli
from tests.support.data import turbofan_rows
from tests.support.paths import DATA_DIR
from tests.support.reliability.scenarios import ReliabilityRegistry, serve_with_users
from tests.support.servers import Server, free_port, start_uvicorn
from tests.support.settings import make_settings, own_database
from tests.support.users import PASSWORDS, login


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory,
    store_uri: str,
    reliability_registry: ReliabilityRegistry,
) -> Iterator[tuple[Server, Settings]]:
    yield from serve_with_users(
        tmp_path_factory, "hostile", store_uri, reliability_registry, login_max_failures=1000
    )


@pytest.fixture(scope="module")
def archive(api: tuple[Server, Settings]) -> Iterator[Database]:
    yield from own_database(api[1])


@pytest.fixture(scope="module")
def tokens(api: tuple[Server, Settings]) -> dict[str, dict[str, str]]:
    return {role: login(api[0].url, role) for role in PASSWORDS}


@pytest.fixture(scope="module")
def examples() -> dict[str, dict[str, Any]]:
    return {name: get_domain(name).example_input(DATA_DIR) for name in ("vibration", "turbofan")}


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    """The first 30 cycles of one real FD001 test unit (request bodies without unit_id)."""
    return turbofan_rows(DATA_DIR, units=1, cycles=30)[1]


def _unit(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _post(server: Server, path: str, body: Any, headers: dict[str, str], **kw: Any) -> Any:
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=60, **kw)


def _cycle(rows: list[dict[str, Any]], unit: str, cycle: int, index: int = 0) -> dict[str, Any]:
    return {**rows[index % len(rows)], "unit_id": unit, "cycle": cycle}


def _field_error(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    named = [e["field"] for e in body.get("errors") or []] + [body["reason"]]
    assert any(field in text for text in named), body


# --- 1. numeric bounds --------------------------------------------------------------------
def test_a_cycle_beyond_int64_is_422_and_its_group_commit_archives(
    api: tuple[Server, Settings],
    archive: Database,
    tokens: dict[str, dict[str, str]],
    rows: list[dict[str, Any]],
) -> None:
    """Today: 503 store_unavailable for it AND the requests committed with it."""
    server, _ = api
    good_units = [_unit("good") for _ in range(6)]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            calls = [
                client.post("/predict/turbofan", json=_cycle(rows, unit, 1),
                            headers=tokens["operator"])
                for unit in good_units
            ]  # fmt: skip
            bad = _cycle(rows, _unit("huge"), 2**63)
            calls.insert(3, client.post("/predict/turbofan", json=bad, headers=tokens["operator"]))
            return await asyncio.gather(*calls)

    answers = asyncio.run(burst())
    bad = answers.pop(3)
    _field_error(bad, "cycle")
    assert [a.status_code for a in answers] == [200] * len(good_units), [a.text for a in answers]
    for unit in good_units:
        assert archive["predictions"].find_one({"asset_id": unit}) is not None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cycle": 10**6}, "cycle"),  # beyond MH_TURBOFAN_MAX_CYCLE
        ({"cycle": 2**64}, "cycle"),
        ({"sensors": "huge"}, "sensors"),
        ({"sensors": "negative"}, "sensors"),
        ({"settings": "huge"}, "settings"),
    ],
)
def test_turbofan_values_outside_their_physical_range_are_422(
    api: tuple[Server, Settings],
    archive: Database,
    tokens: dict[str, dict[str, str]],
    rows: list[dict[str, Any]],
    change: dict[str, Any],
    field: str,
) -> None:
    server, _ = api
    unit = _unit("range")
    body = _cycle(rows, unit, 1)
    if change.get("sensors") == "huge":
        body["sensors"] = [*body["sensors"][:3], 1e30, *body["sensors"][4:]]
    elif change.get("sensors") == "negative":
        body["sensors"] = [-5.0, *body["sensors"][1:]]
    elif change.get("settings") == "huge":
        body["settings"] = [1e6, *body["settings"][1:]]
    else:
        body.update(change)
    for path in ("/predict/turbofan", "/predict-test/turbofan"):
        _field_error(_post(server, path, body, tokens["operator"]), field)
    _field_error(_post(server, "/predict/turbofan/batch", {"items": [body]}, tokens["operator"]),
                 field)  # fmt: skip
    assert archive["predictions"].find_one({"asset_id": unit}) is None


def test_the_physical_ranges_hold_every_real_cycle() -> None:
    """The bounds refuse nonsense, never real data: every FD001-FD002 cycle is inside."""
    from machine_health.domains.turbofan.data import SENSORS, SETTINGS, load_subset
    from machine_health.domains.turbofan.retrain import RANGES as TURBOFAN_RANGES

    for subset in ("FD001", "FD002"):
        data = load_subset(DATA_DIR, subset)
        for frame in (data.train, data.test):
            for names, ranges in ((SETTINGS, SETTING_RANGES), (SENSORS, SENSOR_RANGES)):
                for name, (*_, low, high) in zip(names, ranges, strict=True):
                    assert frame[name].between(low, high).all(), (subset, name)
    # ... and they lie inside what the retrain's validate step accepts
    for kind, ranges in (("setting", SETTING_RANGES), ("sensor", SENSOR_RANGES)):
        low, high = TURBOFAN_RANGES[kind]
        assert all(low <= r[3] and r[4] <= high for r in ranges), kind


def test_a_sample_beyond_float32_is_422_not_archived_as_infinity(
    api: tuple[Server, Settings],
    archive: Database,
    tokens: dict[str, dict[str, str]],
    examples: dict[str, Any],
) -> None:
    server, _ = api
    asset = _unit("f32")
    samples = list(examples["vibration"]["samples"])
    samples[10] = 1e39
    body = {**examples["vibration"], "asset_id": asset, "samples": samples}
    _field_error(_post(server, "/predict/vibration", body, tokens["operator"]), "samples")
    for change in ({"sample_rate": 1e12}, {"rpm": -1.0}, {"rpm": 1e9}):
        response = _post(server, "/predict/vibration", {**body, "samples": examples["vibration"]
                         ["samples"], **change}, tokens["operator"])  # fmt: skip
        _field_error(response, next(iter(change)))
    assert archive["predictions"].find_one({"asset_id": asset}) is None


# --- 2. a unit cannot be hijacked; an admin repairs one --------------------------------------
def test_a_far_future_cycle_is_422_and_cannot_hijack_the_unit(
    api: tuple[Server, Settings], tokens: dict[str, dict[str, str]], rows: list[dict[str, Any]]
) -> None:
    """Today: cycle 9,000,000 is archived, then every real cycle of the unit is a 409."""
    server, settings = api
    unit = _unit("hijack")
    for cycle in (1, 2):
        assert _post(server, "/predict/turbofan", _cycle(rows, unit, cycle),
                     tokens["operator"]).status_code == 200  # fmt: skip
    for cycle in (9_000_000, 2 + settings.max_cycle_jump + 1):
        response = _post(server, "/predict/turbofan", _cycle(rows, unit, cycle), tokens["admin"])
        _field_error(response, "cycle")
    # the real next cycle is still accepted, from anyone
    assert _post(server, "/predict/turbofan", _cycle(rows, unit, 3, 2),
                 tokens["operator"]).status_code == 200  # fmt: skip
    # a new unit starts within the jump too (it counts from cycle 0)
    fresh = _cycle(rows, _unit("fresh"), settings.max_cycle_jump + 1)
    _field_error(_post(server, "/predict/turbofan", fresh, tokens["operator"]), "cycle")


def _hijacked_unit(server: Server, headers: dict[str, str], rows: list[dict[str, Any]],
                   jump: int) -> str:  # fmt: skip
    """A unit with real cycles 1..3 and one cycle `jump` ahead: its real cycle 4 is a 409."""
    unit = _unit("repair")
    for cycle in (1, 2, 3, 3 + jump):
        assert _post(server, "/predict/turbofan", _cycle(rows, unit, cycle, cycle),
                     headers).status_code == 200  # fmt: skip
    refused = _post(server, "/predict/turbofan", _cycle(rows, unit, 4, 4), headers)
    assert refused.status_code == 409
    return unit


def test_an_admin_purges_a_units_cycles_and_the_unit_continues(
    api: tuple[Server, Settings],
    archive: Database,
    tokens: dict[str, dict[str, str]],
    rows: list[dict[str, Any]],
) -> None:
    server, settings = api
    unit = _hijacked_unit(server, tokens["operator"], rows, settings.max_cycle_jump)
    url = f"{server.url}/assets/{unit}/cycles"
    for role in ("operator", "viewer"):
        response = httpx.delete(url, params={"from_cycle": 4}, headers=tokens[role])
        assert response.status_code == 403, response.text
    assert httpx.delete(url, params={"from_cycle": 0}, headers=tokens["admin"]).status_code == 422
    response = httpx.delete(url, params={"from_cycle": 4}, headers=tokens["admin"])
    assert response.status_code == 200, response.text
    assert response.json() == {
        "domain": "turbofan", "unit_id": unit, "from_cycle": 4, "deleted": 1, "last_cycle": 3,
        "state_reset": True,
    }  # fmt: skip
    cycles = sorted(d["cycle"] for d in archive["predictions"].find({"asset_id": unit}))
    assert cycles == [1, 2, 3]
    audit = archive["audit"].find_one({"unit_id": unit})
    assert audit is not None and audit["user"] == "admin" and audit["deleted"] == 1
    assert audit["action"] == "purge_unit_cycles" and audit["via"] == "api"
    assert f"unit {unit}" in server.log.read_text()  # logged with who did it
    # the real cycle 4 is taken now, scored on cycles 1..3
    answer = _post(server, "/predict/turbofan", _cycle(rows, unit, 4, 4), tokens["operator"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["prediction"]["cycles_in_window"] == 4
    missing = httpx.delete(
        f"{server.url}/assets/{_unit('none')}/cycles", params={"from_cycle": 1},
        headers=tokens["admin"],
    )  # fmt: skip
    assert missing.status_code == 404


def test_the_cli_purges_a_unit_the_running_api_has_in_memory(
    api: tuple[Server, Settings],
    archive: Database,
    tokens: dict[str, dict[str, str]],
    rows: list[dict[str, Any]],
) -> None:
    """`machine-health units purge`: the serving replica's memory of the unit is not merged
    back into the rebuilt state (the purged cycle stays gone)."""
    server, settings = api
    unit = _hijacked_unit(server, tokens["operator"], rows, settings.max_cycle_jump)
    env = {**settings.as_env(), "USER": "ops-alice", "LOGNAME": "ops-alice"}
    args = ["units", "purge", "turbofan", unit, "--from-cycle", "4"]
    result = run_cli(args, env=env)  # the command in-process (Typer's CliRunner)
    done = subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "deleted 1" in done.stdout
    audit = archive["audit"].find_one({"unit_id": unit})
    assert audit is not None and audit["via"] == "cli" and audit["user"] == "ops-alice"
    answer = _post(server, "/predict/turbofan", _cycle(rows, unit, 4, 4), tokens["operator"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["prediction"]["cycles_in_window"] == 4
    state = archive["unit_state"].find_one({"_id": f"turbofan:{unit}"})
    assert [i["cycle"] for i in state["inputs"]] == [1, 2, 3, 4]


# --- 3. idempotency keys name one request -------------------------------------------------
def test_an_idempotency_key_reused_for_another_request_is_409(
    api: tuple[Server, Settings],
    archive: Database,
    tokens: dict[str, dict[str, str]],
    examples: dict[str, Any],
    rows: list[dict[str, Any]],
) -> None:
    """Today: 200 with the FIRST answer (another domain's); the new input silently dropped."""
    server, _ = api
    key = f"k-{secrets.token_hex(6)}"
    headers = {**tokens["operator"], "Idempotency-Key": key}
    window = {**examples["vibration"], "asset_id": _unit("idem")}
    first = _post(server, "/predict/vibration", window, headers)
    assert first.status_code == 200
    replay = _post(server, "/predict/vibration", window, headers)
    assert replay.status_code == 200 and replay.json()["idempotent_replay"] is True
    assert replay.json()["prediction_id"] == first.json()["prediction_id"]
    other_domain = _post(server, "/predict/turbofan", _cycle(rows, _unit("idem"), 1), headers)
    assert other_domain.status_code == 409, other_domain.text
    assert other_domain.json()["error"] == "idempotency_key_reused"
    assert "Idempotency-Key" in other_domain.json()["reason"]
    other_body = _post(server, "/predict/vibration", {**window, "asset_id": _unit("idem")},
                       headers)  # fmt: skip
    assert other_body.status_code == 409, other_body.text
    # another user's same key is another request
    mine = _post(server, "/predict/vibration", window, {**tokens["admin"], "Idempotency-Key": key})
    assert mine.status_code == 200 and not mine.json()["idempotent_replay"]
    assert archive["predictions"].count_documents({"idempotency_key": key}) == 2


def test_batch_item_keys_do_not_collide_with_single_keys(
    api: tuple[Server, Settings],
    tokens: dict[str, dict[str, str]],
    examples: dict[str, Any],
) -> None:
    """Today: a batch keyed K answers its item 0 with the single request keyed `K:0`."""
    server, _ = api
    key = f"b-{secrets.token_hex(6)}"
    single = {**examples["vibration"], "asset_id": _unit("single")}
    item = {**examples["vibration"], "asset_id": _unit("item")}
    headers = {**tokens["operator"], "Idempotency-Key": f"{key}:0"}
    assert _post(server, "/predict/vibration", single, headers).status_code == 200
    batch_headers = {**tokens["operator"], "Idempotency-Key": key}
    batch = _post(server, "/predict/vibration/batch", {"items": [item]}, batch_headers)
    assert batch.status_code == 200, batch.text
    answer = batch.json()["items"][0]
    assert answer["asset_id"] == item["asset_id"] and not answer["idempotent_replay"]
    again = _post(server, "/predict/vibration/batch", {"items": [item]}, batch_headers)
    assert again.json()["items"][0]["prediction_id"] == answer["prediction_id"]
    assert again.json()["items"][0]["idempotent_replay"] is True
    other = _post(server, "/predict/vibration/batch", {"items": [single]}, batch_headers)
    assert other.status_code == 409, other.text


# --- 4. a failure cycle cannot block retraining -------------------------------------------
def test_an_implausible_failure_cycle_is_422(
    api: tuple[Server, Settings],
    archive: Database,
    tokens: dict[str, dict[str, str]],
    rows: list[dict[str, Any]],
) -> None:
    """Today: 200, and the validate step fails every later retrain ("label outside ...")."""
    server, settings = api
    unit = _unit("fail")
    for cycle in (1, 2, 3):
        assert _post(server, "/predict/turbofan", _cycle(rows, unit, cycle, cycle),
                     tokens["operator"]).status_code == 200  # fmt: skip
    url = f"/assets/{unit}/failure"
    for failure in (100_000, 2**63, settings.turbofan_max_rul_label + 2, 2):
        response = _post(server, url, {"failure_cycle": failure}, tokens["operator"])
        _field_error(response, "failure_cycle")
    assert archive["predictions"].count_documents({"asset_id": unit, "label": {"$ne": None}}) == 0
    done = _post(server, url, {"failure_cycle": 150}, tokens["operator"])
    assert done.status_code == 200 and done.json()["labelled"] == 3


# --- 5. the projection survives archived overflows ------------------------------------------
def test_the_projection_drops_rows_it_cannot_standardise(
    api: tuple[Server, Settings],
    archive: Database,
    tokens: dict[str, dict[str, str]],
    rows: list[dict[str, Any]],
) -> None:
    """Today: huge but finite sensors (archived before the bounds) make GET /projection a 500."""
    server, _ = api
    unit = _unit("proj")
    for cycle in range(1, 7):
        assert _post(server, "/predict/turbofan", _cycle(rows, unit, cycle, cycle),
                     tokens["operator"]).status_code == 200  # fmt: skip
    legacy = archive["predictions"].find_one({"asset_id": unit, "cycle": 6}, {"_id": 0})
    for n, value in enumerate((1e300, -1e308, 1.7e308)):
        doc = {**legacy, "prediction_id": secrets.token_hex(16), "cycle": 100 + n,
               "created_at": datetime.now(UTC)}  # fmt: skip
        doc["input"] = {**legacy["input"], "cycle": 100 + n,
                        "sensors": [value] * 21}  # fmt: skip
        archive["predictions"].insert_one(doc)
    response = httpx.get(
        f"{server.url}/projection/turbofan", params={"limit": 50}, headers=tokens["viewer"],
        timeout=60,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dropped"] == 3 and body["n"] >= 6
    assert all(abs(p["x"]) < 1e6 and abs(p["y"]) < 1e6 for p in body["points"])


# --- 6. dates ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/predictions", {"until": "9999-12-31T23:59:59.5Z"}),
        ("/predictions", {"since": "0001-01-01T00:00:00+01:00"}),
        ("/predictions", {"since": "1969-12-31T23:59:59Z"}),
        ("/stats/overview", {"until": "9999-12-31T23:59:59.5Z"}),
        ("/stats/overview", {"since": "2150-01-01T00:00:00Z"}),
        ("/projection/turbofan", {"until": "9999-12-31T23:59:59.5Z"}),
    ],
)
def test_dates_outside_1970_to_2100_are_422(
    api: tuple[Server, Settings], tokens: dict[str, dict[str, str]], path: str,
    params: dict[str, str],
) -> None:  # fmt: skip
    server, _ = api
    response = httpx.get(f"{server.url}{path}", params=params, headers=tokens["viewer"])
    _field_error(response, next(iter(params)))


# --- 7. 503 bodies say nothing of the driver -------------------------------------------------
def test_a_503_reason_is_generic_and_the_log_has_the_detail(
    tmp_path: Any, reliability_registry: ReliabilityRegistry
) -> None:
    """Today: the reason echoes PyMongo's text (hosts, ports, errno)."""
    dead = f"mongodb://127.0.0.1:{free_port()}/"
    settings = make_settings(
        tmp_path, dead, mlflow_tracking_uri=reliability_registry.tracking_uri,
        store_timeout_ms=300,
    )  # fmt: skip
    server = start_uvicorn(settings, tmp_path / "logs", timeout_s=120)
    try:
        now = int(time.time())
        claims = {"sub": "admin", "role": "admin", "iat": now, "exp": now + 600,
                  "iss": settings.jwt_issuer, "aud": settings.jwt_audience,
                  "jti": secrets.token_hex(8)}  # fmt: skip
        token = jwt.encode(claims, settings.jwt_secret.get_secret_value(), "HS256")  # type: ignore[union-attr]
        response = httpx.get(
            f"{server.url}/predictions", headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["reason"] == "the archive is unavailable; retry later", body
        assert "127.0.0.1" not in response.text and "refused" not in response.text.lower()
        log = server.log.read_text()
        assert body["request_id"] in log and dead.split("//")[1].rstrip("/") in log
    finally:
        server.stop()


# --- 8. stats windows are bounded -----------------------------------------------------------
def test_stats_windows_are_capped(
    api: tuple[Server, Settings], tokens: dict[str, dict[str, str]]
) -> None:
    """Today: `since=1970-...` reads up to 200,000 documents per domain for any viewer."""
    server, settings = api
    url = f"{server.url}/stats/overview"
    wide = httpx.get(url, params={"since": "1970-01-01T00:00:00Z"}, headers=tokens["viewer"])
    _field_error(wide, "since")
    assert "MH_STATS_MAX_DAYS" in wide.json()["reason"]
    now = datetime.now(UTC)
    inside = {"since": (now - timedelta(days=settings.stats_max_days - 1)).isoformat()}
    answer = httpx.get(url, params=inside, headers=tokens["viewer"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["domains"]["turbofan"]["truncated"] is False
    until_only = httpx.get(url, params={"until": now.isoformat()}, headers=tokens["viewer"])
    assert until_only.status_code == 200, until_only.text
    since = datetime.fromisoformat(until_only.json()["since"])
    assert abs((now - since) - timedelta(days=settings.stats_max_days)) < timedelta(seconds=5)

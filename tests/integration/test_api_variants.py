"""A second API with non-default settings: a turbofan cache of ONE unit, self-registration on.

The paths these settings open: every cycle of interleaved units read back from the archive
(cache misses), anonymous registration, and the archive listing's `until` / `model_version`
filters across a reload (two versions archived side by side).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from pymongo.database import Database

from machine_health import registry
from machine_health.config import Settings
from machine_health.domains import get_domain
from tests.support.data import turbofan_rows
from tests.support.models import TrainedModels, api_settings, register_version
from tests.support.servers import Server, start_uvicorn
from tests.support.settings import own_database
from tests.support.users import create_users, login


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, store_uri: str, trained_models: TrainedModels
) -> Iterator[tuple[Server, Settings]]:
    tmp = tmp_path_factory.mktemp("api-variants")
    settings = api_settings(
        tmp, store_uri, trained_models, turbofan_cache_units=1, self_registration=True
    )
    create_users(settings)
    server = start_uvicorn(settings, tmp / "logs")
    yield server, settings
    server.stop()


@pytest.fixture(scope="module")
def archive(api: tuple[Server, Settings]) -> Iterator[Database]:
    yield from own_database(api[1])


def _post_cycle(url: str, headers: dict[str, str], unit: str, row: dict[str, Any]) -> Any:
    return httpx.post(
        f"{url}/predict/turbofan", json={"unit_id": unit, **row}, headers=headers, timeout=30
    )


def test_turbofan_history_reloaded_after_every_eviction_gives_the_same_predictions(
    api: tuple[Server, Settings], archive: Database
) -> None:
    server, settings = api
    operator = login(server.url, "operator")
    rows = turbofan_rows(settings.data_dir, units=1, cycles=8)[1]
    tag = secrets.token_hex(3)
    alone, a, b = f"alone-{tag}", f"a-{tag}", f"b-{tag}"
    # One unit at a time: it never leaves the one-unit cache (every history from memory).
    hits = [_post_cycle(server.url, operator, alone, row).json() for row in rows]
    # Two units interleaved: each evicts the other, so every history is read from the archive.
    misses: dict[str, list[dict[str, Any]]] = {a: [], b: []}
    for row in rows:
        for unit in (a, b):
            response = _post_cycle(server.url, operator, unit, row)
            assert response.status_code == 200, response.text
            misses[unit].append(response.json())
    for unit in (a, b):
        assert [m["prediction"] for m in misses[unit]] == [h["prediction"] for h in hits]
    assert [h["prediction"]["cycles_in_window"] for h in hits] == list(range(1, len(rows) + 1))

    # After an eviction, a repeated or backward cycle is still refused, from the archive.
    repeated = _post_cycle(server.url, operator, a, rows[-1])  # b came last: a was evicted
    assert repeated.status_code == 409
    assert "already recorded" in repeated.json()["reason"]
    last = rows[-1]["cycle"]
    assert _post_cycle(server.url, operator, b, {**rows[-1], "cycle": last + 20}).status_code == 200
    assert _post_cycle(server.url, operator, a, {**rows[-1], "cycle": last + 1}).status_code == 200
    backwards = _post_cycle(server.url, operator, b, {**rows[-1], "cycle": last + 10})
    assert backwards.status_code == 409  # b was evicted by a: its latest cycle comes from the store
    assert "goes backwards" in backwards.json()["reason"]
    for unit, extra in ((a, last + 1), (b, last + 20)):  # the refused cycles wrote nothing
        cycles = sorted(d["cycle"] for d in archive["predictions"].find({"asset_id": unit}))
        assert cycles == [*(r["cycle"] for r in rows), extra]


def test_self_registration_creates_viewers_only(api: tuple[Server, Settings]) -> None:
    server, _ = api
    url = server.url
    name = f"self-{secrets.token_hex(3)}"
    created = httpx.post(f"{url}/register", json={"username": name, "password": "long-enough-1"})
    assert created.status_code == 201, created.text
    assert created.json()["role"] == "viewer" and "password_hash" not in created.json()
    token = httpx.post(f"{url}/token", data={"username": name, "password": "long-enough-1"})
    assert token.status_code == 200 and token.json()["role"] == "viewer"
    mine = {"Authorization": f"Bearer {token.json()['access_token']}"}
    assert httpx.get(f"{url}/predictions", headers=mine).status_code == 200
    example = get_domain("vibration").example_input(api[1].data_dir)
    assert httpx.post(f"{url}/predict/vibration", json=example, headers=mine).status_code == 403

    for role in ("admin", "operator"):  # anonymous, and a viewer, cannot ask for more
        for headers in ({}, mine):
            body = {"username": f"x{secrets.token_hex(3)}", "password": "long-enough-1"}
            refused = httpx.post(f"{url}/register", json={**body, "role": role}, headers=headers)
            assert refused.status_code == 403, refused.text
            assert "viewer" in refused.json()["reason"]
    again = httpx.post(f"{url}/register", json={"username": name, "password": "other-pw-12"})
    assert again.status_code == 409
    # An admin still creates any role.
    admin = login(url, "admin")
    body = {"username": f"op-{secrets.token_hex(3)}", "password": "long-enough-1"}
    by_admin = httpx.post(f"{url}/register", json={**body, "role": "operator"}, headers=admin)
    assert by_admin.status_code == 201 and by_admin.json()["role"] == "operator"


def _listing(url: str, headers: dict[str, str], **params: Any) -> list[str]:
    """Every prediction id the listing returns for the filters (all pages)."""
    ids: list[str] = []
    cursor: str | None = None
    params = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in params.items()}
    while True:
        page = httpx.get(
            f"{url}/predictions",
            params={**params, "limit": 3, **({"cursor": cursor} if cursor else {})},
            headers=headers,
        )
        assert page.status_code == 200, page.text
        ids += [item["prediction_id"] for item in page.json()["items"]]
        if (cursor := page.json()["next_cursor"]) is None:
            return ids


def test_listing_until_and_model_version_filters_match_the_archive(
    api: tuple[Server, Settings],
) -> None:
    server, settings = api
    url = server.url
    operator, viewer = login(url, "operator"), login(url, "viewer")
    service = {"Authorization": f"Bearer {settings.service_token.get_secret_value()}"}  # type: ignore[union-attr]
    champion, ref = registry.load(settings, "vibration")
    new_version = register_version(settings, champion, "listing-filters", "vibration")
    example = get_domain("vibration").example_input(settings.data_dir)
    tag = secrets.token_hex(3)
    answers: list[dict[str, Any]] = []

    def predict(asset: str) -> None:
        response = httpx.post(
            f"{url}/predict/vibration", json={**example, "asset_id": f"{asset}-{tag}"},
            headers=operator, timeout=30,
        )  # fmt: skip
        assert response.status_code == 200, response.text
        answers.append(
            {**response.json(), "at": datetime.fromisoformat(response.json()["created_at"])}
        )

    for asset in ("m1", "m1", "m2", "m1", "m2"):
        predict(asset)
    reload = httpx.put(
        f"{url}/reload", json={"domain": "vibration", "version": new_version},
        headers=service, timeout=120,
    )  # fmt: skip
    assert reload.status_code == 200, reload.text
    for asset in ("m2", "m1", "m2", "m2"):
        predict(asset)
    assert [a["model"]["version"] for a in answers] == [ref.version] * 5 + [new_version] * 4

    def expected(**where: Any) -> list[str]:
        """Newest first, as the listing orders, from what the responses said."""
        since, until = where.pop("since", None), where.pop("until", None)
        chosen = [
            a for a in answers
            if all(a[k] == v for k, v in where.items())
            and (since is None or a["at"] >= since)
            and (until is None or a["at"] < until)
        ]  # fmt: skip
        chosen.sort(key=lambda a: a["at"], reverse=True)
        return [a["prediction_id"] for a in chosen]

    def listed(**params: Any) -> set[str]:
        return set(_listing(url, viewer, **params))

    assets = {f"m1-{tag}", f"m2-{tag}"}
    mine = {a["prediction_id"] for a in answers}
    # The DB also holds other tests' records: compare on this test's assets.
    for version in (ref.version, new_version):
        for asset in assets:
            got = listed(domain="vibration", model_version=version, asset_id=asset)
            want = [a["prediction_id"] for a in answers
                    if a["model"]["version"] == version and a["asset_id"] == asset]  # fmt: skip
            assert got == set(want) and want
    assert listed(domain="vibration", model_version=new_version) == {
        a["prediction_id"] for a in answers if a["model"]["version"] == new_version
    }  # the new version served only this test's requests
    assert listed(model_version="999") == set()

    times = sorted({a["at"] for a in answers})
    assert len(times) >= 4  # distinct milliseconds: the windows below are not all-or-nothing
    cut, start = times[len(times) // 2], times[1]
    for asset in assets:
        got = listed(asset_id=asset, until=cut)
        want = {a["prediction_id"] for a in answers if a["asset_id"] == asset}
        assert got == {p for p in want if p in expected(until=cut)}
        window = listed(asset_id=asset, since=start, until=cut)
        assert window == {p for p in want if p in expected(since=start, until=cut)}
    combined = listed(domain="vibration", model_version=ref.version, since=start, until=cut)
    assert combined & mine == {
        a["prediction_id"] for a in answers
        if a["model"]["version"] == ref.version and start <= a["at"] < cut
    }  # fmt: skip
    # `until` is exclusive; `since` inclusive: the record AT `cut` is in one window only.
    at_cut = {a["prediction_id"] for a in answers if a["at"] == cut}
    assert not listed(until=cut) & at_cut and at_cut <= listed(since=cut)
    # Newest first across pages, for a time window.
    page_order = _listing(url, viewer, asset_id=f"m2-{tag}", until=times[-1])
    created = {a["prediction_id"]: a["at"] for a in answers}
    assert [created[p] for p in page_order] == sorted(
        (created[p] for p in page_order), reverse=True
    )
    assert set(page_order) == set(expected(asset_id=f"m2-{tag}", until=times[-1]))


def test_listing_rejects_a_bad_time(api: tuple[Server, Settings]) -> None:
    server, _ = api
    viewer = login(server.url, "viewer")
    bad = httpx.get(f"{server.url}/predictions", params={"until": "yesterday"}, headers=viewer)
    assert bad.status_code == 422 and "until" in bad.json()["reason"]

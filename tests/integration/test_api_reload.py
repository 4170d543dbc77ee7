"""Hot reload under concurrent traffic, and a broken model refused while the old one serves."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import httpx

from machine_health import registry
from machine_health.domains import get_domain
from tests.support.models import TrainedModels, api_settings, register_version
from tests.support.servers import start_uvicorn
from tests.support.users import create_users, login


def test_reload_under_traffic_and_refusal_of_a_broken_model(
    tmp_path: Path, store_uri: str, trained_models: TrainedModels
) -> None:
    settings = api_settings(tmp_path, store_uri, trained_models)
    champion, ref = registry.load(settings, "vibration")
    new_version = register_version(settings, champion, "reload-test-good", "vibration")
    # A model that loads but predicts NaN: its smoke prediction must refuse it.
    broken = dataclasses.replace(champion, threshold=float("nan"))  # type: ignore[type-var]
    broken_version = register_version(settings, broken, "reload-test-broken", "vibration")

    create_users(settings)
    server = start_uvicorn(settings, tmp_path / "logs")
    url = server.url
    operator = login(url, "operator")
    service = {"Authorization": f"Bearer {settings.service_token.get_secret_value()}"}  # type: ignore[union-attr]
    body = get_domain("vibration").example_input(settings.data_dir)

    async def traffic_with_reload() -> tuple[list[httpx.Response], httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            stop = asyncio.Event()
            responses: list[httpx.Response] = []

            async def worker() -> None:
                while not stop.is_set():
                    responses.append(
                        await client.post("/predict/vibration", json=body, headers=operator)
                    )

            workers = [asyncio.create_task(worker()) for _ in range(8)]
            await asyncio.sleep(1.0)
            reload = await client.put(
                "/reload", json={"domain": "vibration", "version": new_version}, headers=service
            )
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*workers)
            return responses, reload

    try:
        responses, reload = asyncio.run(traffic_with_reload())
        assert reload.status_code == 200, reload.text
        result = reload.json()["results"][0]
        assert result["old"]["version"] == ref.version and result["new"]["version"] == new_version
        assert all(r.status_code == 200 for r in responses)  # no failed request
        versions = [r.json()["model"]["version"] for r in responses]
        assert set(versions) == {ref.version, new_version}
        assert versions[-1] == new_version  # after the swap, the new model answers

        refused = httpx.put(
            f"{url}/reload", json={"domain": "vibration", "version": broken_version},
            headers=service, timeout=60,
        )  # fmt: skip
        assert refused.status_code == 422
        assert "smoke" in refused.json()["reason"] and "NaN" in refused.json()["reason"]
        missing = httpx.put(
            f"{url}/reload", params={"domain": "vibration", "version": "999"},
            headers=service, timeout=60,
        )  # fmt: skip
        assert missing.status_code == 404
        served = httpx.get(f"{url}/version").json()["models"]["vibration"]
        assert served["version"] == new_version  # the old one keeps serving
        after = httpx.post(f"{url}/predict/vibration", json=body, headers=operator)
        assert after.status_code == 200 and after.json()["model"]["version"] == new_version
        metrics = httpx.get(f"{url}/metrics").text
        assert 'machine_health_reloads_total{domain="vibration",result="refused"} 2.0' in metrics
        assert (
            f'machine_health_model_info{{alias="",domain="vibration",version="{new_version}"}} 1.0'
            in metrics
        )
    finally:
        server.stop()

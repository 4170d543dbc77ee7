"""JSON bodies parsed by pydantic-core (api/json_body.py): same objects as json.loads, same 422s."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from machine_health.api import errors as api_errors
from machine_health.api.json_body import FastJSONRequest, api_router
from machine_health.domains import get_domain


class Reading(BaseModel):
    values: list[float]


def _app() -> FastAPI:
    router = api_router()

    @router.post("/echo")
    async def echo(reading: Reading) -> dict[str, object]:
        return {"n": len(reading.values), "nan": sum(math.isnan(v) for v in reading.values)}

    app = FastAPI()
    api_errors.install(app)
    app.router.routes.extend(router.routes)
    return app


def test_routes_of_api_router_parse_with_pydantic_core() -> None:
    route = next(r for r in _app().router.routes if getattr(r, "path", "") == "/echo")
    assert route.get_route_handler.__qualname__.startswith("FastJSONRoute")


def test_same_objects_as_json_loads(data_dir: Path) -> None:
    body = json.dumps(get_domain("vibration").example_input(data_dir)).encode()

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    request = FastJSONRequest({"type": "http", "method": "POST", "headers": []}, receive)
    assert asyncio.run(request.json()) == json.loads(body)


def test_nan_parses_and_broken_json_is_a_422_that_says_where() -> None:
    client = TestClient(_app())
    answer = client.post("/echo", content=b'{"values": [1.0, NaN, Infinity]}',
                         headers={"Content-Type": "application/json"})  # fmt: skip
    assert answer.status_code == 200 and answer.json() == {"n": 3, "nan": 1}
    truncated = b'{"values": [1.0, 2.0'
    answer = client.post("/echo", content=truncated, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422
    reason = answer.json()["reason"]
    assert "JSON" in reason
    assert reason.startswith(f"{len(truncated) - 1}: ")  # the offset of the last character read
    second_line = b'{"values":\n [1.0, x]}'
    answer = client.post("/echo", content=second_line, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422
    assert answer.json()["reason"].startswith(f"{second_line.index(b'x')}: ")  # line 2 counted

"""Locust users of the API load benchmark (driven by bench/api_load.py, not a benchmark itself).

Environment: MH_BENCH_ROUTE (the path every user posts to), MH_BENCH_BODY (`vibration`, `small`
or `turbofan`), MH_BENCH_TOKEN (bearer token), MH_BENCH_PAYLOADS (JSON file: `small` and
`vibration` bodies, `turbofan_rows` real C-MAPSS rows).
Each turbofan user is one engine unit posting its cycles in order, as a real client does.
"""

from __future__ import annotations

import itertools
import json
import os
import uuid

from locust import FastHttpUser, constant, task

ROUTE = os.environ["MH_BENCH_ROUTE"]
BODY = os.environ["MH_BENCH_BODY"]
PAYLOADS = json.loads(open(os.environ["MH_BENCH_PAYLOADS"]).read())  # noqa: SIM115
HEADERS = {
    "Authorization": f"Bearer {os.environ['MH_BENCH_TOKEN']}",
    "Content-Type": "application/json",
}
# Static bodies are serialised once: the generator must not spend its CPU on json.dumps.
STATIC = {name: json.dumps(PAYLOADS[name]).encode() for name in ("small", "vibration")}


class ApiUser(FastHttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.unit_id = f"bench-{uuid.uuid4().hex[:12]}"
        self.cycle = 0
        self.rows = itertools.cycle(PAYLOADS["turbofan_rows"])

    def _body(self) -> bytes:
        if BODY == "turbofan":
            self.cycle += 1
            row = next(self.rows)
            return json.dumps({"unit_id": self.unit_id, "cycle": self.cycle, **row}).encode()
        return STATIC[BODY]

    @task
    def post(self) -> None:
        with self.client.post(
            ROUTE, data=self._body(), headers=HEADERS, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")

"""Replay REAL test data into the API: the demo's traffic and its labels.

Each registered domain replays its own held-out test data (`Domain.replay`) and posts its true
labels the way they arrive in the field (a failure back-fill, an inspection's feedback...).

Every unit id carries a tag (random per run unless given), so a second replay does not collide
with the cycles the first one archived.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.progress import Progress
from tenacity import AsyncRetrying, retry_if_result, stop_after_attempt, wait_exponential

logger = logging.getLogger(__name__)


@dataclass
class Tally:
    """What the replay sent and what the API answered."""

    sent: int = 0
    acknowledged: int = 0
    labels_sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    archive: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "labels_sent": self.labels_sent,
            "statuses": dict(self.statuses),
            "archived": dict(self.archive),
        }


@dataclass(frozen=True)
class ReplayOptions:
    """How much each domain replays: `units` assets scored cycle by cycle (sequence domains),
    at most `limit` independent items (window domains), `concurrency` requests at once."""

    tag: str
    units: int = 8
    limit: int = 110
    subset: str = "FD001"
    concurrency: int = 8


async def login(client: httpx.AsyncClient, username: str, password: str) -> None:
    response = await client.post("/token", data={"username": username, "password": password})
    response.raise_for_status()
    client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"


async def post_prediction(
    client: httpx.AsyncClient, domain: str, body: dict[str, Any], tally: Tally
) -> dict[str, Any] | None:
    """POST /predict/{domain}; the answer, or None (counted) when the API refused it."""
    tally.sent += 1
    response = await client.post(f"/predict/{domain}", json=body)
    tally.statuses[str(response.status_code)] += 1
    if response.status_code != 200:
        logger.warning("%s: %s %s", domain, response.status_code, response.text[:200])
        return None
    answer = response.json()
    tally.acknowledged += 1
    tally.archive[str(answer.get("archived"))] += 1
    return answer


#: statuses a label post is retried on: 503 (the store is unreachable: the API answered from its
#: spool) and 404 (the prediction it labels is still in a replica's spool, not yet stored)
_RETRY_LABEL = {503, 404}


async def post_label(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], tally: Tally, kind: str
) -> None:
    """POST a label (`/feedback`, `/assets/{unit}/failure`), retried while the archive catches
    up, so the demo's labels are not lost to a store outage; the final status is counted."""
    retrying = AsyncRetrying(
        retry=retry_if_result(lambda r: r.status_code in _RETRY_LABEL),
        stop=stop_after_attempt(6),
        wait=wait_exponential(multiplier=0.5, max=8),
        retry_error_callback=lambda state: state.outcome.result(),
    )
    response = await retrying(client.post, url, json=body)
    tally.statuses[f"{kind}:{response.status_code}"] += 1
    tally.labels_sent += int(response.status_code == 200)
    if response.status_code != 200:
        logger.warning("%s %s: %s %s", kind, url, response.status_code, response.text[:200])


async def simulate(
    api_url: str, username: str, password: str, data_dir: Path, *, domains: list[str],
    units: int = 8, limit: int = 110, subset: str = "FD001", concurrency: int = 8,
    tag: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Replay the chosen domains' real test data (in `domains` order); the tally per domain."""
    from machine_health.domains import get_domain

    options = ReplayOptions(
        tag=tag or secrets.token_hex(3), units=units, limit=limit, subset=subset,
        concurrency=concurrency,
    )  # fmt: skip
    results: dict[str, Any] = {"tag": options.tag}
    async with httpx.AsyncClient(base_url=api_url.rstrip("/"), timeout=60) as client:
        await login(client, username, password)
        with Progress() as progress:
            for name in domains:
                tally = Tally()
                await get_domain(name).replay(client, data_dir, options, tally, progress)
                results[name] = tally.as_dict()
    return results

"""Replay REAL test data into the API: the demo's traffic and its labels.

- turbofan: C-MAPSS test units, cycle by cycle in order (units in parallel); when a unit's series
  ends, its failure cycle (last cycle + the true RUL of RUL_FD00x) is posted, which back-fills
  the true RUL of every archived cycle of that unit;
- vibration: CWRU test-portion windows (the last 30 % of each recording, never used in training),
  interleaved across recordings, each followed by its inspected label as feedback.

Every unit id carries a tag (random per run unless given), so a second replay does not collide
with the cycles the first one archived.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.progress import Progress

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


async def login(client: httpx.AsyncClient, username: str, password: str) -> None:
    response = await client.post("/token", data={"username": username, "password": password})
    response.raise_for_status()
    client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"


async def _predict(
    client: httpx.AsyncClient, domain: str, body: dict[str, Any], tally: Tally
) -> dict[str, Any] | None:
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


def turbofan_units(data_dir: Path, subset: str, units: int) -> list[tuple[int, Any, float]]:
    """(unit number, its test cycles in order, true RUL after the last cycle) for `units` units."""
    from machine_health.domains.turbofan.data import load_subset

    data = load_subset(data_dir, subset)
    true_rul = dict(zip(data.test_units.tolist(), data.rul.tolist(), strict=True))
    out = []
    for unit, rows in list(data.test.groupby("unit", sort=True))[:units]:
        out.append((int(unit), rows.sort_values("cycle"), float(true_rul[unit])))
    return out


async def replay_turbofan(
    client: httpx.AsyncClient, data_dir: Path, *, subset: str, units: int, tag: str,
    tally: Tally, progress: Progress,
) -> None:  # fmt: skip
    chosen = turbofan_units(data_dir, subset, units)
    task = progress.add_task("turbofan cycles", total=sum(len(rows) for _, rows, _ in chosen))
    settings_cols = [f"setting_{i}" for i in range(1, 4)]
    sensor_cols = [f"sensor_{i}" for i in range(1, 22)]

    async def one_unit(unit: int, rows: Any, true_rul: float) -> None:
        unit_id = f"{subset}-{tag}-u{unit:03d}"
        last_cycle = 0
        for row in rows.itertuples(index=False):
            body = {
                "unit_id": unit_id,
                "cycle": int(row.cycle),
                "settings": [float(getattr(row, c)) for c in settings_cols],
                "sensors": [float(getattr(row, c)) for c in sensor_cols],
            }
            await _predict(client, "turbofan", body, tally)
            last_cycle = int(row.cycle)
            progress.advance(task)
        failure = {"failure_cycle": last_cycle + int(true_rul)}
        response = await client.post(f"/assets/{unit_id}/failure", json=failure)
        tally.statuses[f"failure:{response.status_code}"] += 1
        tally.labels_sent += int(response.status_code == 200)

    await asyncio.gather(*(one_unit(u, rows, rul) for u, rows, rul in chosen))


def vibration_windows(data_dir: Path, limit: int) -> list[dict[str, Any]]:
    """Every other test-portion window (about 110), interleaved across recordings, with labels.

    Every other one: the retrain gate scores champion and challenger on the CWRU test portion
    minus every window that overlaps an archived one, so replaying all of it would leave the
    gate nothing to score; the gaps between the replayed windows stay held out.
    """
    from machine_health.domains.vibration.data import (
        load_manifest,
        make_windows,
        resolve_manifest_dir,
    )

    recordings = load_manifest(resolve_manifest_dir(data_dir))
    per_recording = []
    for rec in recordings:
        ws = make_windows([rec], portion="test", window=2048, hop=2 * 2048,
                          sample_rate=rec.sample_rate)  # fmt: skip
        per_recording.append([(rec, w) for w in ws.windows])
    interleaved = [item for group in _round_robin(per_recording) for item in group]
    return [
        {
            "body": {
                "asset_id": f"motor-{Path(rec.file).stem}"[:64].replace("@", "-"),
                "samples": np.round(window, 6).tolist(),
                "sample_rate": rec.sample_rate,
                "rpm": rec.rpm,
            },
            "label": rec.label,
        }
        for rec, window in interleaved[:limit]
    ]


def _round_robin(groups: list[list[Any]]) -> list[list[Any]]:
    longest = max((len(g) for g in groups), default=0)
    return [[g[i] for g in groups if i < len(g)] for i in range(longest)]


async def replay_vibration(
    client: httpx.AsyncClient, data_dir: Path, *, limit: int, concurrency: int,
    tally: Tally, progress: Progress,
) -> None:  # fmt: skip
    items = vibration_windows(data_dir, limit)
    task = progress.add_task("vibration windows", total=len(items))
    gate = asyncio.Semaphore(concurrency)

    async def one(item: dict[str, Any]) -> None:
        async with gate:
            answer = await _predict(client, "vibration", item["body"], tally)
            if answer is not None:
                body = {"prediction_id": answer["prediction_id"], "label": item["label"]}
                response = await client.post("/feedback", json=body)
                tally.statuses[f"feedback:{response.status_code}"] += 1
                tally.labels_sent += int(response.status_code == 200)
            progress.advance(task)

    await asyncio.gather(*(one(item) for item in items))


async def simulate(
    api_url: str, username: str, password: str, data_dir: Path, *, domains: list[str],
    turbofan_units_count: int = 8, vibration_limit: int = 110, subset: str = "FD001",
    concurrency: int = 8, tag: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Replay the chosen domains' real test data; returns the tally per domain."""
    tag = tag or secrets.token_hex(3)
    results: dict[str, Any] = {"tag": tag}
    async with httpx.AsyncClient(base_url=api_url.rstrip("/"), timeout=60) as client:
        await login(client, username, password)
        with Progress() as progress:
            if "turbofan" in domains:
                tally = Tally()
                await replay_turbofan(client, data_dir / "cmapss", subset=subset,
                                      units=turbofan_units_count, tag=tag, tally=tally,
                                      progress=progress)  # fmt: skip
                results["turbofan"] = tally.as_dict()
            if "vibration" in domains:
                tally = Tally()
                await replay_vibration(
                    client, data_dir / "cwru", limit=vibration_limit,
                    concurrency=concurrency, tally=tally, progress=progress,
                )  # fmt: skip
                results["vibration"] = tally.as_dict()
    return results

"""The vibration demo traffic: CWRU test-portion windows (the last 30 % of each recording, never
used in training), interleaved across recordings, each followed by its inspected label as
feedback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.progress import Progress

from machine_health.domains.base import round_robin
from machine_health.domains.vibration.data import load_manifest, make_windows, resolve_manifest_dir
from machine_health.simulate import ReplayOptions, Tally, post_label, post_prediction

DOMAIN = "vibration"


def test_windows(data_dir: Path, limit: int) -> list[dict[str, Any]]:
    """Every other test-portion window (about 110), interleaved across recordings, with labels.

    Every other one: the retrain gate scores champion and challenger on the CWRU test portion
    minus every window that overlaps an archived one, so replaying all of it would leave the
    gate nothing to score; the gaps between the replayed windows stay held out.
    """
    recordings = load_manifest(resolve_manifest_dir(data_dir))
    per_recording = []
    for rec in recordings:
        ws = make_windows([rec], portion="test", window=2048, hop=2 * 2048,
                          sample_rate=rec.sample_rate)  # fmt: skip
        per_recording.append([(rec, w) for w in ws.windows])
    interleaved = round_robin(per_recording)
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


async def replay(
    client: httpx.AsyncClient, data_dir: Path, options: ReplayOptions, tally: Tally,
    progress: Progress,
) -> None:  # fmt: skip
    items = test_windows(data_dir, options.limit)
    task = progress.add_task("vibration windows", total=len(items))
    gate = asyncio.Semaphore(options.concurrency)

    async def one(item: dict[str, Any]) -> None:
        async with gate:
            answer = await post_prediction(client, DOMAIN, item["body"], tally)
            if answer is not None:
                body = {"prediction_id": answer["prediction_id"], "label": item["label"]}
                await post_label(client, "/feedback", body, tally, "feedback")
            progress.advance(task)

    await asyncio.gather(*(one(item) for item in items))

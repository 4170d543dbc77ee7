"""The acoustic demo traffic: real DCASE valve test clips posted as a microphone client would
(the WAV file as it is, in base64), each followed by its inspected label as feedback.

Two of every three test clips of each (domain, label) group are replayed, interleaved across
the groups; the third stays held out: the retrain gate scores champion and challenger on the
test clips the archive does not hold, so replaying all of them would leave it nothing to score.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import httpx
from rich.progress import Progress

from machine_health.domains.acoustic.data import Clip, read_manifest, resolve_dataset_dir
from machine_health.domains.base import round_robin
from machine_health.simulate import ReplayOptions, Tally, post_label, post_prediction

DOMAIN = "acoustic"
#: every HELD_OUT-th clip of a group is never replayed (kept for the retrain gate)
HELD_OUT = 3


def replayed_clips(data_dir: Path) -> list[Clip]:
    """The test clips the demo replays, interleaved across (domain, label) groups."""
    groups: dict[tuple[str, str], list[Clip]] = {}
    for clip in sorted(read_manifest(data_dir), key=lambda c: (c.domain, c.label, c.index)):
        if clip.part == "test":
            groups.setdefault((clip.domain, clip.label), []).append(clip)
    kept = [[c for i, c in enumerate(g) if i % HELD_OUT != HELD_OUT - 1] for g in groups.values()]
    return round_robin(kept)


def clip_body(directory: Path, clip: Clip) -> dict[str, Any]:
    """The request a microphone client posts for `clip`."""
    audio = base64.b64encode((directory / clip.file).read_bytes()).decode("ascii")
    section = clip.meta.get("section", "00")
    return {"asset_id": f"valve-{clip.domain}-{section}", "audio": audio}


async def replay(
    client: httpx.AsyncClient, data_dir: Path, options: ReplayOptions, tally: Tally,
    progress: Progress,
) -> None:  # fmt: skip
    directory = resolve_dataset_dir(data_dir)
    clips = replayed_clips(directory)[: options.limit]
    task = progress.add_task("acoustic clips", total=len(clips))
    gate = asyncio.Semaphore(options.concurrency)

    async def one(clip: Clip) -> None:
        async with gate:
            answer = await post_prediction(client, DOMAIN, clip_body(directory, clip), tally)
            if answer is not None:
                body = {"prediction_id": answer["prediction_id"], "label": clip.label}
                await post_label(client, "/feedback", body, tally, "feedback")
            progress.advance(task)

    await asyncio.gather(*(one(clip) for clip in clips))

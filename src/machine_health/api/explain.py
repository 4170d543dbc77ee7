"""Explanations of predictions (`ModelBundle.explain`): why each answer is what it is.

- Asked for (`?explain=true`): computed before the archive write, with the model that answered
  and what it scored; the answer and its record both carry it.
- Otherwise: the record is archived and answered first; then `Explainer` explains it in the
  background, in batches, and adds the explanation to the record by `_id` (one round trip per
  batch). So an explanation never sits on an answer's path unless asked. It still takes CPU
  from the answers (2-3x a vibration window's scoring), so the explainer works at most
  `MH_EXPLAIN_SHARE` of the time and rests the rest: every archived prediction gets one while
  the replica has that much spare capacity; beyond `MH_EXPLAIN_QUEUE_MAX` waiting, new ones are
  counted as `skipped` (their records keep `explanation: null`). Measured: docs/BENCHMARKS.md.
- An explanation that fails never fails the request: the answer's `explanation` says why.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from machine_health import telemetry
from machine_health.api.serving import LoadedModel, Scored
from machine_health.archive import predictions
from machine_health.errors import StoreError
from machine_health.tasks import cancel_and_wait, take_batch

logger = logging.getLogger(__name__)

#: predictions explained in one background call: small, so that one call (a thread holding the
#: interpreter for most of it) never stalls the answers for long (32 vibration windows: ~20 ms)
BATCH = 8


def plain(value: Any) -> dict[str, Any]:
    """The explanation as plain JSON types (numpy scalars as floats): what BSON stores."""
    return json.loads(json.dumps(value, default=float))


def failed(exc: BaseException) -> dict[str, Any]:
    """What an answer carries when its explanation could not be made."""
    return {"method": "none", "summary": f"no explanation: {type(exc).__name__}: {exc}"[:300],
            "evidence": []}  # fmt: skip


def explain_batch(model: LoadedModel, inputs: list[Any], outputs: list[dict[str, Any]]) -> list:
    """`model`'s explanations of its outputs (in a worker thread: it costs model calls)."""
    explained = model.bundle.explain(inputs, outputs)
    if len(explained) != len(inputs):
        raise ValueError(f"{len(explained)} explanations for {len(inputs)} inputs")
    return [plain(e) for e in explained]


async def explain_now(domain: str, scored: Scored) -> dict[str, Any]:
    """The explanation of one scored item, for its answer (never raises)."""
    try:
        explained = await asyncio.to_thread(
            explain_batch, scored.model, [scored.input], [scored.output]
        )
    except Exception as exc:  # an explanation must not fail the answer it explains
        logger.warning("%s: explanation failed: %s", domain, exc)
        telemetry.EXPLANATIONS.labels(domain, "error").inc()
        return failed(exc)
    telemetry.EXPLANATIONS.labels(domain, "answered").inc()
    return explained[0]


@dataclass
class _Pending:
    prediction_id: str
    domain: str
    scored: Scored


class Explainer:
    """Explains archived predictions in the background and adds it to their records."""

    def __init__(self, db: AsyncDatabase, *, max_queue: int, share: float = 1.0) -> None:
        self.db = db
        self.share = share
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max_queue)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="explainer")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def submit(self, prediction_id: str, domain: str, scored: Scored) -> None:
        """Explain this archived prediction later (skipped when the queue is full)."""
        if self._task is None or scored.input is None:
            return
        try:
            self._queue.put_nowait(_Pending(prediction_id, domain, scored))
        except asyncio.QueueFull:
            telemetry.EXPLANATIONS.labels(domain, "skipped").inc()

    async def _run(self) -> None:
        while True:
            pending = await take_batch(self._queue, BATCH)
            started = time.perf_counter()
            try:
                await self._explain(pending)
            except Exception as exc:  # never let the loop die; the records keep no explanation
                logger.warning("background explanations failed: %s", exc)
                for item in pending:
                    telemetry.EXPLANATIONS.labels(item.domain, "error").inc()
            spent = time.perf_counter() - started
            await asyncio.sleep(spent * (1 - self.share) / self.share)  # the answers' share

    async def _explain(self, pending: list[_Pending]) -> None:
        by_model: dict[int, list[_Pending]] = defaultdict(list)
        for item in pending:
            by_model[id(item.scored.model)].append(item)
        explained: dict[str, dict[str, Any]] = {}
        for items in by_model.values():
            model = items[0].scored.model
            try:
                made = await asyncio.to_thread(
                    explain_batch, model, [i.scored.input for i in items],
                    [i.scored.output for i in items],
                )  # fmt: skip
            except Exception as exc:
                logger.warning("%s: background explanations failed: %s", model.domain, exc)
                telemetry.EXPLANATIONS.labels(model.domain, "error").inc(len(items))
                continue
            explained.update(zip((i.prediction_id for i in items), made, strict=True))
        try:
            await predictions.set_explanations(self.db, explained)
        except StoreError as exc:  # the records stay without one; the answers were given
            logger.warning("cannot archive %d explanations: %s", len(explained), exc)
            return
        counts: dict[str, int] = defaultdict(int)
        for item in pending:
            if item.prediction_id in explained:
                counts[item.domain] += 1
        for domain, count in counts.items():
            telemetry.EXPLANATIONS.labels(domain, "archived").inc(count)

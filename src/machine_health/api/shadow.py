"""Shadow scoring: a second version scores the same live requests; its answers are archived, never
returned, and judged later against the labels that arrive (monitoring/shadow.py).

- Which version: the registry's `@shadow` alias of the domain (`registry.set_shadow`). Every
  replica follows it: at start, on `PUT /reload?slot=shadow` (what `machine-health models shadow`
  sends to every replica, then waits for), and every `MH_SHADOW_SYNC_S` (`ShadowSync`), so a
  replica that missed the reload, or started later, converges on its own.
- How: the champion's micro-batcher hands each scored batch to the domain's `ShadowLane`, which
  scores it in its own task and thread; the champion's next batch does not wait for it.
- Never slows an answer beyond the budget: the archive write waits at most `MH_SHADOW_BUDGET_MS`
  for the shadow's result (`shadow_result`); later, the record says `late` and the lane drops the
  job. A full lane (`MH_SHADOW_QUEUE_MAX` waiting) says `skipped` at once.
- Never fails a request: a shadow that raises or gives a non-finite output is archived as
  `error` with the reason; the answer is the champion's either way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from machine_health import telemetry
from machine_health.api.serving import LoadedModel, ModelHolder, non_finite, predict_each
from machine_health.config import Settings
from machine_health.errors import MachineHealthError
from machine_health.tasks import cancel_and_wait, take_batch

logger = logging.getLogger(__name__)

ShadowFuture = asyncio.Future[dict[str, Any]]


def _tag(model: LoadedModel, status: str, **extra: Any) -> dict[str, Any]:
    """What a record keeps of its shadow's result."""
    return {
        "model_name": model.ref.name,
        "model_version": model.ref.version,
        "status": status,
        **extra,
    }


@dataclass
class _ShadowJob:
    item: Any
    future: ShadowFuture


class ShadowLane:
    """Scores, in its own task, the items the champion's batcher scored, with the shadow."""

    def __init__(self, holder: ModelHolder, domain: str, *, max_batch: int, max_queue: int):
        self.holder = holder
        self.domain = domain
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_ShadowJob] = asyncio.Queue(maxsize=max_queue)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"shadow-{self.domain}")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def submit(self, shadow: LoadedModel, items: Sequence[Any]) -> list[ShadowFuture]:
        """One future per item: its shadow result (a `_tag` dict); never raises."""
        loop = asyncio.get_running_loop()
        futures: list[ShadowFuture] = []
        for item in items:
            future: ShadowFuture = loop.create_future()
            futures.append(future)
            if self._task is None:
                future.set_result(_tag(shadow, "skipped", reason="shadow lane not running"))
                continue
            try:
                self._queue.put_nowait(_ShadowJob(item, future))
            except asyncio.QueueFull:
                telemetry.SHADOW_RESULTS.labels(self.domain, shadow.ref.version, "skipped").inc()
                future.set_result(_tag(shadow, "skipped", reason="shadow queue full"))
        return futures

    async def _run(self) -> None:
        while True:
            jobs = await take_batch(self._queue, self.max_batch)
            # a job whose answer stopped waiting (budget spent) is not scored at all
            jobs = [j for j in jobs if not j.future.done()]
            shadow = self.holder.shadow(self.domain)
            if not jobs:
                continue
            if shadow is None:  # dropped meanwhile
                for job in jobs:
                    job.future.cancel()
                continue
            try:
                await self._score(shadow, jobs)
            except Exception as exc:  # never let the lane die: each job says why
                logger.exception("%s shadow lane: %s", self.domain, exc)
                for job in jobs:
                    if not job.future.done():
                        job.future.set_result(_tag(shadow, "error", reason=_reason(exc)))

    async def _score(self, shadow: LoadedModel, jobs: list[_ShadowJob]) -> None:
        outputs = await predict_each(shadow.bundle, [j.item for j in jobs])
        for job, output in zip(jobs, outputs, strict=True):
            if job.future.done():
                continue
            if isinstance(output, Exception):
                result = _tag(shadow, "error", reason=_reason(output))
            elif non_finite(output):
                result = _tag(shadow, "error", reason="non-finite output")
            else:
                result = _tag(shadow, "ok", output=output)
            job.future.set_result(result)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


async def shadow_result(
    future: ShadowFuture, model: LoadedModel | None, budget_s: float, domain: str
) -> dict[str, Any] | None:
    """The shadow's result for one record, waiting at most `budget_s` (then `late`: the lane
    drops the job). Counted per outcome in `mh_shadow_results_total`."""
    try:
        result = await asyncio.wait_for(future, budget_s)
    except TimeoutError:
        late = f"not scored within {budget_s * 1000:g} ms"
        result = _tag(model, "late", reason=late) if model is not None else None
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the request itself was cancelled
        result = None  # the shadow was dropped while this request waited
    if result is not None and result["status"] != "skipped":  # skipped: counted at submit
        telemetry.SHADOW_RESULTS.labels(domain, result["model_version"], result["status"]).inc()
    return result


class ShadowSync:
    """Follows the registry's `@shadow` of every domain, every `MH_SHADOW_SYNC_S` seconds."""

    def __init__(self, holder: ModelHolder, settings: Settings) -> None:
        self.holder = holder
        self.period_s = settings.shadow_sync_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.period_s > 0:
            self._task = asyncio.create_task(self._run(), name="shadow-sync")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            await sync_all(self.holder)


async def sync_all(holder: ModelHolder) -> list[dict[str, Any]]:
    """Load (or drop) the shadow each domain's `@shadow` names; failures logged, not raised."""
    results = []
    for domain in holder.domains:
        try:
            results.append(await holder.sync_shadow(domain))
        except MachineHealthError as exc:
            logger.warning("%s: cannot follow @shadow: %s", domain, exc)
        except Exception as exc:  # a registry outage must not stop the loop
            logger.warning("%s: cannot read @shadow (%s: %s)", domain, type(exc).__name__, exc)
    return results

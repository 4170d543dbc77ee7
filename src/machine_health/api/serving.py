"""What the API serves with: the loaded models (hot-swappable), their micro-batchers, unit context.

- `ModelHolder`: per domain, the model now served. A reload loads the new version off the event
  loop, smoke-predicts it, and only then swaps ONE reference; a batch already scoring keeps the
  model it started with, the next batch takes the new one. A broken model never replaces a
  working one.
- `MicroBatcher`: concurrent requests of a domain are scored together, one model call per batch
  (what arrived while the previous call ran), in a worker thread so the event loop keeps serving.
- `UnitHistories`: this replica's memory of each turbofan unit's last cycles (a bounded LRU, the
  fallback while the store is unreachable; the shared context is the store's unit state), with
  one lock per unit so a replica checks and scores the cycles of a unit in order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from machine_health import heap, registry, telemetry
from machine_health.config import Settings
from machine_health.domains.base import ModelBundle
from machine_health.errors import MachineHealthError, ModelError, ModelRejected
from machine_health.tasks import cancel_and_wait, take_batch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A bundle and where it came from; immutable, so a swap is one reference assignment."""

    domain: str
    bundle: ModelBundle
    ref: registry.ModelRef
    loaded_at: datetime

    def info(self) -> dict[str, Any]:
        return {
            "name": self.ref.name,
            "version": self.ref.version,
            "alias": self.ref.alias,
            "run_id": self.ref.run_id,
            "loaded_at": self.loaded_at.isoformat(),
        }


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_non_finite(v) for v in value)
    return False


def smoke_check(bundle: ModelBundle) -> None:
    """Score the bundle's own smoke inputs; ModelRejected unless every output is finite."""
    try:
        inputs = bundle.smoke_inputs()
        outputs = bundle.predict(inputs)
    except Exception as exc:  # whatever breaks inside a model is a reason to refuse it
        raise ModelRejected(f"smoke prediction failed: {type(exc).__name__}: {exc}") from exc
    if not inputs:
        raise ModelRejected("the model has no smoke inputs to check it with")
    if len(outputs) != len(inputs):
        raise ModelRejected(f"smoke prediction gave {len(outputs)} outputs for {len(inputs)}")
    if any(_non_finite(out) for out in outputs):
        raise ModelRejected("smoke prediction gave NaN or infinite values")


class ModelHolder:
    """The model each domain serves now, swapped atomically by `load`."""

    def __init__(self, settings: Settings, domains: Sequence[str]) -> None:
        self.settings = settings
        self.domains = list(domains)
        self._models: dict[str, LoadedModel] = {}
        self._locks = {d: asyncio.Lock() for d in self.domains}

    def get(self, domain: str) -> LoadedModel:
        model = self._models.get(domain)
        if model is None:
            raise ModelError(f"no {domain} model is loaded yet (train one, then PUT /reload)")
        return model

    def loaded(self, domain: str) -> LoadedModel | None:
        return self._models.get(domain)

    def _load_and_check(
        self, domain: str, alias: str | None, version: str | None, served_alias: str | None
    ) -> LoadedModel:
        try:
            bundle, ref = registry.load(self.settings, domain, alias=alias, version=version)
        except ModelError:
            raise
        except Exception as exc:  # a registry or artifact failure: refuse with the reason
            raise ModelRejected(f"cannot load the model: {type(exc).__name__}: {exc}") from exc
        smoke_check(bundle)
        if served_alias is not None:
            ref = dataclasses.replace(ref, alias=served_alias)
        return LoadedModel(domain=domain, bundle=bundle, ref=ref, loaded_at=datetime.now(UTC))

    async def load(
        self,
        domain: str,
        *,
        alias: str | None = registry.CHAMPION,
        version: str | None = None,
        served_alias: str | None = None,
        settle: bool = True,
    ) -> dict[str, Any]:
        """Load, check and swap in a version; the old model keeps serving if anything fails.

        `served_alias`: the alias to report for an explicit `version` (a worker following
        another worker's reload of @champion loads the version that alias pointed to then).
        After a swap the heap is settled (`heap.settle`: one collection frees the replaced
        model, the new one is frozen out of later collections); `settle=False` leaves that to
        the caller (start-up loads every domain, then settles once).
        """
        async with self._locks[domain]:
            old = self._models.get(domain)
            try:
                new = await asyncio.to_thread(
                    self._load_and_check, domain, alias, version, served_alias
                )
            except MachineHealthError:
                telemetry.RELOADS.labels(domain=domain, result="refused").inc()
                raise
            unchanged = old is not None and old.ref.version == new.ref.version
            self._models[domain] = new  # the swap: one reference, read per batch
            if settle and not unchanged:
                heap.settle()
            telemetry.RELOADS.labels(
                domain=domain, result="unchanged" if unchanged else "swapped"
            ).inc()
            telemetry.set_model_info(domain, new.ref.version, new.ref.alias)
            logger.info(
                "%s: serving %s v%s (was %s)",
                domain, new.ref.name, new.ref.version, old.ref.version if old else "none",
            )  # fmt: skip
            return {
                "domain": domain,
                "old": old.info() if old else None,
                "new": new.info(),
                "changed": not unchanged,
            }


@dataclass
class _Job:
    item: Any
    future: asyncio.Future[tuple[dict[str, Any], LoadedModel]]
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Scores concurrent requests of one domain together: one model call per batch."""

    def __init__(self, holder: ModelHolder, domain: str, *, max_batch: int) -> None:
        self.holder = holder
        self.domain = domain
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"batcher-{self.domain}")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def predict(self, item: Any) -> tuple[dict[str, Any], LoadedModel]:
        """The model's output for `item` and the model that produced it."""
        model = self.holder.get(self.domain)  # fail fast when nothing is loaded
        if self._task is None:  # not started (e.g. a one-off call): score directly
            return (await asyncio.to_thread(model.bundle.predict, [item]))[0], model
        future: asyncio.Future[tuple[dict[str, Any], LoadedModel]] = (
            asyncio.get_running_loop().create_future()
        )
        await self._queue.put(_Job(item, future))
        return await future

    async def _run(self) -> None:
        while True:
            jobs = await take_batch(self._queue, self.max_batch)
            jobs = [j for j in jobs if not j.future.cancelled()]
            if not jobs:
                continue
            try:
                model = self.holder.get(self.domain)  # one model for the whole batch
                await self._score(model, jobs)
            except Exception as exc:
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)

    async def _score(self, model: LoadedModel, jobs: list[_Job]) -> None:
        telemetry.MODEL_BATCH_SIZE.labels(domain=self.domain).observe(len(jobs))
        try:
            outputs = await asyncio.to_thread(model.bundle.predict, [j.item for j in jobs])
        except Exception:
            if len(jobs) == 1:
                raise
            # One bad item must not fail its neighbours: score them one by one.
            for job in jobs:
                try:
                    output = (await asyncio.to_thread(model.bundle.predict, [job.item]))[0]
                except Exception as exc:
                    job.future.set_exception(exc)
                else:
                    job.future.set_result((output, model))
            return
        for job, output in zip(jobs, outputs, strict=True):
            if not job.future.done():
                job.future.set_result((output, model))


class UnitHistories:
    """This replica's last known context of recently seen units (bounded LRU), one lock per unit.

    An entry is opaque here: `(state, rows)` as the scorer made it (the unit's stored state and
    the model rows of its cycles). The store holds the context every replica shares; this
    memory serves while the store is unreachable and lends its rows to the next request.
    """

    def __init__(self, max_units: int) -> None:
        self.max_units = max_units
        self._entries: OrderedDict[str, tuple[Any, list[dict[str, Any]]]] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, unit_id: str) -> asyncio.Lock:
        lock = self._locks.get(unit_id)
        if lock is None:
            lock = self._locks[unit_id] = asyncio.Lock()
        return lock

    def peek(self, unit_id: str) -> tuple[Any, list[dict[str, Any]]] | None:
        """The unit's last known `(state, rows)`, None when this replica has none."""
        entry = self._entries.get(unit_id)
        if entry is not None:
            self._entries.move_to_end(unit_id)
        return entry

    def put(self, unit_id: str, state: Any, rows: list[dict[str, Any]]) -> None:
        self._entries[unit_id] = (state, list(rows))
        self._entries.move_to_end(unit_id)
        self._evict()

    def forget(self, unit_id: str) -> None:
        self._entries.pop(unit_id, None)

    def _evict(self) -> None:
        while len(self._entries) > self.max_units:
            unit_id, _ = self._entries.popitem(last=False)
            lock = self._locks.get(unit_id)
            if lock is not None and not lock.locked():
                del self._locks[unit_id]

    def __len__(self) -> int:
        return len(self._entries)

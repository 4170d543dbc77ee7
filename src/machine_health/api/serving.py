"""What the API serves with: the loaded models (hot-swappable), their micro-batchers, unit context.

- `ModelHolder`: per domain, the model now served. A reload loads the new version off the event
  loop, smoke-predicts it, and only then swaps ONE reference; a batch already scoring keeps the
  model it started with, the next batch takes the new one. A broken model never replaces a
  working one.
- `MicroBatcher`: concurrent requests of a domain are scored together, one model call per batch
  (what arrived while the previous call ran), in a worker thread so the event loop keeps serving;
  the archived ones are handed on to the domain's shadow, if one is loaded (api/shadow.py).
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
from typing import Any, NamedTuple, Protocol

from machine_health import heap, registry, telemetry
from machine_health.config import Settings
from machine_health.domains.base import ModelBundle
from machine_health.errors import MachineHealthError, ModelError, ModelRejected
from machine_health.registry import Slot
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


def non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(non_finite(v) for v in value)
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
    if any(non_finite(out) for out in outputs):
        raise ModelRejected("smoke prediction gave NaN or infinite values")


class ModelHolder:
    """The model each domain serves now, and its shadow if any, swapped atomically by `load`."""

    def __init__(self, settings: Settings, domains: Sequence[str]) -> None:
        self.settings = settings
        self.domains = list(domains)
        self._models: dict[str, LoadedModel] = {}
        self._shadows: dict[str, LoadedModel] = {}
        self._locks = {d: asyncio.Lock() for d in self.domains}

    def get(self, domain: str) -> LoadedModel:
        model = self._models.get(domain)
        if model is None:
            raise ModelError(f"no {domain} model is loaded yet (train one, then PUT /reload)")
        return model

    def loaded(self, domain: str) -> LoadedModel | None:
        return self._models.get(domain)

    def shadow(self, domain: str) -> LoadedModel | None:
        """The version scored beside the champion (api/shadow.py), None when there is none."""
        return self._shadows.get(domain)

    async def drop_shadow(self, domain: str) -> dict[str, Any]:
        """Stop scoring with the domain's shadow (nothing to do when there is none)."""
        async with self._locks[domain]:
            old = self._shadows.pop(domain, None)
        if old is not None:
            logger.info("%s: shadow v%s dropped", domain, old.ref.version)
            heap.settle()
        return {"domain": domain, "slot": "shadow", "old": old.info() if old else None,
                "new": None, "changed": old is not None}  # fmt: skip

    async def sync_shadow(self, domain: str) -> dict[str, Any]:
        """Load the version the registry's `@shadow` names (drop the shadow when none does)."""
        aliases = await asyncio.to_thread(registry.aliases, self.settings, domain)
        version = aliases.get(registry.SHADOW)
        if version is None or version == aliases.get(registry.CHAMPION):
            return await self.drop_shadow(domain)
        current = self._shadows.get(domain)
        if current is not None and current.ref.version == version:
            return {"domain": domain, "slot": "shadow", "old": current.info(),
                    "new": current.info(), "changed": False}  # fmt: skip
        return await self.load(
            domain, alias=None, version=version, served_alias=registry.SHADOW, slot="shadow"
        )

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
        slot: Slot = "champion",
    ) -> dict[str, Any]:
        """Load, check and swap in a version; the old model keeps serving if anything fails.

        `slot="shadow"`: the version is loaded as the domain's shadow (scored beside the
        champion, never answering); the same checks apply.

        `served_alias`: the alias to report for an explicit `version` (a worker following
        another worker's reload of @champion loads the version that alias pointed to then).
        After a swap the heap is settled (`heap.settle`: one collection frees the replaced
        model, the new one is frozen out of later collections); `settle=False` leaves that to
        the caller (start-up loads every domain, then settles once).
        """
        models = self._models if slot == "champion" else self._shadows
        async with self._locks[domain]:
            old = models.get(domain)
            try:
                new = await asyncio.to_thread(
                    self._load_and_check, domain, alias, version, served_alias
                )
            except MachineHealthError:
                telemetry.RELOADS.labels(domain=domain, result="refused").inc()
                raise
            unchanged = old is not None and old.ref.version == new.ref.version
            models[domain] = new  # the swap: one reference, read per batch
            if slot == "champion":
                shadowed = self._shadows.get(domain)
                if shadowed is not None and shadowed.ref.version == new.ref.version:
                    del self._shadows[domain]  # promoted from the shadow: no longer beside it
            if settle and not unchanged:
                heap.settle()
            telemetry.RELOADS.labels(
                domain=domain, result="unchanged" if unchanged else "swapped"
            ).inc()
            if slot == "champion":
                telemetry.set_model_info(domain, new.ref.version, new.ref.alias)
            logger.info(
                "%s: %s %s v%s (was %s)",
                domain, "serving" if slot == "champion" else "shadowing with", new.ref.name,
                new.ref.version, old.ref.version if old else "none",
            )  # fmt: skip
            return {
                "domain": domain,
                "slot": slot,
                "old": old.info() if old else None,
                "new": new.info(),
                "changed": not unchanged,
            }


async def predict_each(bundle: ModelBundle, items: list[Any]) -> list[dict[str, Any] | Exception]:
    """`bundle`'s output for each item, in one model call (in a worker thread); when that call
    fails, item by item, so one bad item fails none of its neighbours (its place holds the
    exception)."""
    try:
        outputs = await asyncio.to_thread(bundle.predict, items)
    except Exception as exc:
        if len(items) == 1:
            return [exc]
        outputs = None
    if outputs is not None and len(outputs) == len(items):
        return list(outputs)
    each: list[dict[str, Any] | Exception] = []
    for item in items:
        try:
            each.append((await asyncio.to_thread(bundle.predict, [item]))[0])
        except Exception as exc:
            each.append(exc)
    return each


class Scored(NamedTuple):
    """A model's output for one item, the model that made it, and, when a shadow scores the
    item too, the future of the shadow's result (api/shadow.py)."""

    output: dict[str, Any]
    model: LoadedModel
    shadow: asyncio.Future[dict[str, Any]] | None = None
    shadow_model: LoadedModel | None = None
    #: what the model scored (the request item, or a unit's history): what `explain` takes
    input: Any = None


class ShadowSink(Protocol):
    """Where a batcher hands what it scored to be scored by the shadow too (`ShadowLane`)."""

    def submit(
        self, shadow: LoadedModel, items: Sequence[Any]
    ) -> list[asyncio.Future[dict[str, Any]]]: ...


@dataclass
class _Job:
    item: Any
    future: asyncio.Future[Scored]
    #: also scored by the domain's shadow, if one is loaded (archived requests only)
    shadow: bool = False
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Scores concurrent requests of one domain together: one model call per batch."""

    def __init__(
        self,
        holder: ModelHolder,
        domain: str,
        *,
        max_batch: int,
        shadow_lane: ShadowSink | None = None,
    ) -> None:
        self.holder = holder
        self.domain = domain
        self.max_batch = max_batch
        self.shadow_lane = shadow_lane
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"batcher-{self.domain}")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def predict(self, item: Any, *, shadow: bool = False) -> Scored:
        """The model's output for `item` and the model that produced it; with `shadow`, the
        future result of the domain's shadow on the same item when one is loaded."""
        model = self.holder.get(self.domain)  # fail fast when nothing is loaded
        if self._task is None:  # not started (e.g. a one-off call): score directly
            output = (await asyncio.to_thread(model.bundle.predict, [item]))[0]
            return Scored(output, model, input=item)
        future: asyncio.Future[Scored] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(item, future, shadow))
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
        outputs = await predict_each(model.bundle, [j.item for j in jobs])
        scored = [j for j, o in zip(jobs, outputs, strict=True) if not isinstance(o, Exception)]
        shadows = self._to_shadow(scored)
        for job, output in zip(jobs, outputs, strict=True):
            if job.future.done():
                continue
            if isinstance(output, Exception):
                job.future.set_exception(output)
                continue
            future, shadow = shadows.get(id(job), (None, None))
            job.future.set_result(Scored(output, model, future, shadow, input=job.item))

    def _to_shadow(
        self, jobs: list[_Job]
    ) -> dict[int, tuple[asyncio.Future[dict[str, Any]], LoadedModel]]:
        """Hand the batch's archived items to the shadow lane (nothing when no shadow)."""
        shadow = self.holder.shadow(self.domain)
        wanted = [j for j in jobs if j.shadow and not j.future.done()]
        if shadow is None or self.shadow_lane is None or not wanted:
            return {}
        futures = self.shadow_lane.submit(shadow, [j.item for j in wanted])
        return {id(j): (f, shadow) for j, f in zip(wanted, futures, strict=True)}


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

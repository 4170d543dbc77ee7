"""Score one request and archive it: the logic behind POST /predict and /predict-test.

Order of a prediction: idempotency (a known key of the same user, route and body returns the first
answer, nothing is scored or written; the answer comes from memory, the archive, or, store down, the
spool; the same key with another route or body is a 409) → turbofan context under the unit's lock
(history, sequence check, at most MH_MAX_CYCLE_JUMP ahead) → the domain's micro-batcher (one model
call for concurrent requests) → the archive record, made durable by the group-commit writer (store
or spool) → the response. The response is built from exactly what was archived (timestamps at the
store's millisecond precision), so the two always agree.

Turbofan context is shared by every replica: a unit's last cycles live in the store, one
document per unit read by `_id` (archive/unit_state.py), so any replica (or worker process)
may take any cycle and answers as one replica would. A cycle is claimed in that document by a
compare-and-set after the model call and before the archive write; a miss (another replica
advanced the unit meanwhile) reads the context again, so a cycle already taken is a 409 on
every replica. The document is built once from the archive (a unit never seen, or archived
before it existed, or a model now reading more cycles than it holds). The replica's own memory
(`UnitHistories`) serves while the store is unreachable (answers spooled); its cycles are
merged into the unit's document when the store answers again, and the spool replay adds the
spooled cycles too. During an outage, a unit whose cycles reach several replicas is scored by
each on what it knows.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from pymongo.asynchronous.database import AsyncDatabase

from machine_health import telemetry
from machine_health.api.errors import IdempotencyKeyReused
from machine_health.api.explain import Explainer, explain_now
from machine_health.api.serving import (
    MicroBatcher,
    ModelHolder,
    Scored,
    UnitHistories,
    non_finite,
)
from machine_health.api.shadow import ShadowLane, shadow_result
from machine_health.archive import predictions, unit_state
from machine_health.archive.keys import KEY_FIELDS
from machine_health.archive.records import PredictionRecord
from machine_health.archive.unit_state import UnitState
from machine_health.archive.writer import ArchiveWriter
from machine_health.config import Settings
from machine_health.domains.base import Domain
from machine_health.domains.sequence import CycleJump, check_next_cycle
from machine_health.errors import InputError, SequenceConflict, StoreError
from machine_health.samples import encode_samples

logger = logging.getLogger(__name__)

_IDEMPOTENT_MEMORY = 10_000
#: routes a request may be scored by (part of an idempotent request's fingerprint)
ROUTE_PREDICT, ROUTE_BATCH = "predict", "predict-batch"
_CLAIM_TRIES = 5
SAMPLES_ENCODING = "float32-le-base64"


@dataclass(frozen=True)
class _Context:
    """A unit's known cycles: the state, its model rows, and whether the store holds it."""

    state: UnitState
    rows: list[dict[str, Any]]
    stored: bool
    #: this replica's memory, taken as the stored state without reading it: a cycle it refuses
    #: is checked again against the store (a purge or another replica may have moved the unit)
    trusted: bool = False


def now_ms() -> datetime:
    """UTC now at millisecond precision: what BSON keeps, so responses equal the archive."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def is_sequence_domain(domain: Domain) -> bool:
    """A domain scored with the asset's history (one cycle per request), e.g. turbofan."""
    fields = domain.input_model.model_fields
    return "cycle" in fields and hasattr(domain.input_model, "as_row")


def history_needed(bundle: Any, settings: Settings) -> int:
    """Cycles of a unit's history kept for `bundle` (what it reads), at least the setting."""
    transform = getattr(bundle, "transform", None)
    needed = getattr(transform, "history_cycles", None) or getattr(bundle, "window", None)
    return max(int(needed or 0), settings.turbofan_window)


def asset_of(item: BaseModel) -> str:
    return str(getattr(item, "asset_id", None) or getattr(item, "unit_id", None) or "unknown")


def archived_input(item: BaseModel, domain: Domain) -> dict[str, Any]:
    """The request item as stored: the domain's compact form when it has one
    (`Domain.archived_input`), else a waveform as float32 bytes with its length, the rest as is."""
    compact = domain.archived_input(item)
    if compact is not None:
        return compact
    data = item.model_dump()
    if "samples" in data:
        data["n_samples"] = len(data["samples"])
        data["samples"] = encode_samples(data["samples"])
    return data


def public_document(doc: dict[str, Any]) -> dict[str, Any]:
    """An archived document as JSON-able data (bytes as base64, named by `samples_encoding`)."""
    doc = {k: v for k, v in doc.items() if k != "_id" and k not in KEY_FIELDS}
    data = dict(doc.get("input") or {})
    if isinstance(data.get("samples"), bytes | bytearray):
        data["samples"] = base64.b64encode(bytes(data["samples"])).decode()
        data["samples_encoding"] = SAMPLES_ENCODING
    doc["input"] = data
    return doc


def request_fingerprint(route: str, domain_name: str, item: BaseModel) -> str:
    """What an Idempotency-Key is bound to besides the user: the route, the domain and the
    body (sha256). A retry carries the same; another request under the key does not."""
    digest = hashlib.sha256(f"{route}\x00{domain_name}\x00".encode())
    digest.update(item.model_dump_json().encode())
    return digest.hexdigest()


def batch_item_key(key: str, index: int) -> str:
    """The key of a batch's item: `/` is refused in a client's Idempotency-Key, so an item's
    key never equals a single request's (`K:0`)."""
    return f"{key}/{index}"


def response_from(doc: dict[str, Any], archived: str) -> dict[str, Any]:
    """The API answer for an archived (or about to be archived) record."""
    return {
        "prediction_id": doc["prediction_id"],
        "domain": doc["domain"],
        "asset_id": doc["asset_id"],
        "cycle": doc.get("cycle"),
        "prediction": doc["output"],
        "model": {
            "name": doc["model_name"],
            "version": doc["model_version"],
            "alias": doc.get("model_alias"),
        },
        "archived": archived,
        "created_at": doc["created_at"],
        "latency_ms": doc["latency_ms"],
        "request_id": doc["request_id"],
    }


class Scorer:
    """Scores requests with the served models and archives them durably."""

    def __init__(
        self,
        settings: Settings,
        db: AsyncDatabase,
        domains: dict[str, Domain],
        holder: ModelHolder,
        writer: ArchiveWriter,
    ) -> None:
        self.settings = settings
        self.db = db
        self.domains = domains
        self.holder = holder
        self.writer = writer
        batch, queue = settings.model_batch_max, settings.shadow_queue_max
        self.shadow_lanes = {
            name: ShadowLane(holder, name, max_batch=batch, max_queue=queue) for name in domains
        }
        self.batchers = {
            name: MicroBatcher(holder, name, max_batch=batch, shadow_lane=self.shadow_lanes[name])
            for name in domains
        }
        self.explainer = Explainer(
            db, max_queue=settings.explain_queue_max, share=settings.explain_share
        )
        self.histories = UnitHistories(settings.turbofan_cache_units)
        #: prediction id -> (request fingerprint, first answer) of recent idempotent requests
        self._answers: OrderedDict[str, tuple[str | None, dict[str, Any]]] = OrderedDict()
        #: prediction id -> (request fingerprint, its answer to come) of requests being scored
        self._inflight: dict[str, tuple[str, asyncio.Future[dict[str, Any]]]] = {}

    def start(self) -> None:
        for batcher in self.batchers.values():
            batcher.start()
        for lane in self.shadow_lanes.values():
            lane.start()
        if self.settings.explain_archived:
            self.explainer.start()

    async def close(self) -> None:
        for batcher in self.batchers.values():
            await batcher.close()
        for lane in self.shadow_lanes.values():
            await lane.close()
        await self.explainer.close()

    # --- entry point ------------------------------------------------------------------------
    async def predict(
        self,
        domain_name: str,
        item: BaseModel,
        *,
        user: str,
        request_id: str,
        idempotency_key: str | None = None,
        archive: bool = True,
        route: str = ROUTE_PREDICT,
        explain: bool = False,
    ) -> dict[str, Any]:
        """Score `item`; with `archive`, return only once the record is durable; with
        `explain`, the answer (and its record) carry the model's explanation.

        An idempotent request (`idempotency_key`) is bound to its user (the prediction id is
        derived from both), its route, domain and body (`request_fingerprint`, archived as
        `request_hash`): a retry gets the first answer, another request under the same key is
        refused (IdempotencyKeyReused, 409), never answered with the first one's result.
        """
        if not archive:
            return await self._score(
                domain_name, item, user, request_id, None, archive=False, explain=explain
            )
        prediction_id = predictions.new_prediction_id(user, idempotency_key)
        if idempotency_key is None:
            return await self._score(
                domain_name, item, user, request_id, prediction_id, explain=explain
            )
        fingerprint = request_fingerprint(route, domain_name, item)
        known = await self._known_answer(prediction_id)
        if known is not None:
            answer, seen = known
            _same_request(idempotency_key, fingerprint, seen, answer, domain_name)
            telemetry.PREDICTIONS.labels(
                domain=domain_name, model_version=answer["model"]["version"],
                outcome="idempotent_replay",
            ).inc()  # fmt: skip
            return {**answer, "idempotent_replay": True}
        running = self._inflight.get(prediction_id)
        if running is not None:  # the same key is being scored right now: share its answer
            _same_request(idempotency_key, fingerprint, running[0], None, domain_name)
            return {**(await asyncio.shield(running[1])), "idempotent_replay": True}
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._inflight[prediction_id] = (fingerprint, future)
        try:
            answer = await self._score(
                domain_name, item, user, request_id, prediction_id, idempotency_key,
                explain=explain,
            )  # fmt: skip
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        else:
            future.set_result(answer)
            self._remember(prediction_id, answer, fingerprint)
            return answer
        finally:
            self._inflight.pop(prediction_id, None)

    async def predict_run(
        self,
        domain_name: str,
        items: list[BaseModel],
        *,
        user: str,
        request_id: str,
        idempotency_keys: list[str | None],
        route: str = ROUTE_BATCH,
        explain: bool = False,
    ) -> list[dict[str, Any]]:
        """Score and archive consecutive cycles of ONE unit (a batch's items of that unit, in
        order), each answer as `predict` gives it.

        A run costs one state read, one claim and one group commit for all its cycles, and its
        model calls are batched together: a unit's cycles one by one cost four store round
        trips EACH (a fleet replay through the batch route ran at ~80 cycles/s that way). Runs
        that may hold an idempotent retry, or meet a store that is down, are scored one cycle
        at a time by `predict`, which answers them exactly.
        """
        one_by_one = len(items) < 2 or not is_sequence_domain(self.domains[domain_name])
        ids = [predictions.new_prediction_id(user, key) for key in idempotency_keys]
        if not one_by_one and any(key is not None for key in idempotency_keys):
            one_by_one = await self._may_be_retries(ids)
        if one_by_one:
            return [
                await self.predict(
                    domain_name,
                    item,
                    user=user,
                    request_id=request_id,
                    idempotency_key=key,
                    route=route,
                    explain=explain,
                )
                for item, key in zip(items, idempotency_keys, strict=True)
            ]
        futures: list[asyncio.Future[dict[str, Any]]] = []
        for item, pid, key in zip(items, ids, idempotency_keys, strict=True):
            if key is not None:  # a retry arriving meanwhile waits for this answer
                future = asyncio.get_running_loop().create_future()
                self._inflight[pid] = (request_fingerprint(route, domain_name, item), future)
                futures.append(future)
        try:
            answers = await self._score_run(
                self.domains[domain_name], items, user, request_id, ids, idempotency_keys,
                explain=explain,
            )  # fmt: skip
        except BaseException as exc:
            for future in futures:
                future.set_exception(exc)
                future.exception()
            raise
        finally:
            for pid, key in zip(ids, idempotency_keys, strict=True):
                if key is not None:
                    fingerprint, future = self._inflight.pop(pid)
                    if not future.done():
                        answer = answers[ids.index(pid)]
                        future.set_result(answer)
                        self._remember(pid, answer, fingerprint)
        return answers

    async def _may_be_retries(self, prediction_ids: list[str]) -> bool:
        """Whether any of these idempotent items may have been seen before (remembered, in
        flight, archived, or unknown because the store is away)."""
        if any(p in self._answers or p in self._inflight for p in prediction_ids):
            return True
        if not self.writer.store_ok or self.writer.spool.depth:
            return True
        try:
            found = await predictions.find_archived_ids(self.db, prediction_ids)
        except StoreError:
            return True
        return bool(found)

    async def _score_run(
        self,
        domain: Domain,
        items: list[BaseModel],
        user: str,
        request_id: str,
        prediction_ids: list[str],
        idempotency_keys: list[str | None],
        started: float | None = None,
        *,
        explain: bool = False,
    ) -> list[dict[str, Any]]:
        """Score and archive the unit's next cycles (one or a batch's run of them), claiming
        them in the unit's stored state: one context, their model calls together, one claim of
        all of them, their records in one group commit.

        The claim (a compare-and-set on the state's `seq` and `epoch`) comes after the model
        calls and before the archive write: a miss means another replica advanced the unit
        meanwhile, so the context is read again and the cycles checked and scored again (a
        cycle the other replica took is then a 409, exactly as one replica refuses it). The
        claim of cycles whose archive write fails is released. Store unreachable: scored from
        this replica's memory.
        """
        started = time.perf_counter() if started is None else started
        unit_id, needed = asset_of(items[0]), self._history_needed(domain.name)
        entries = [archived_input(item, domain) for item in items]
        rows = [item.as_row() for item in items]  # type: ignore[attr-defined]
        cycles = [int(getattr(item, "cycle")) for item in items]  # noqa: B009
        async with self.histories.lock(unit_id):
            for attempt in range(_CLAIM_TRIES):
                context = await self._context(
                    domain, unit_id, needed, persist=True, trust=attempt == 0
                )
                state, known = context.state, list(context.rows)
                # An earlier attempt of this very request (same idempotency key) claimed the
                # cycle and never answered (e.g. its replica died before the archive write):
                # score it again on the cycles before it, claim nothing more.
                reclaimed = (
                    len(items) == 1 and context.stored and idempotency_keys[0] is not None
                    and cycles[0] == state.last_cycle
                    and prediction_ids[0] == state.last_prediction_id
                )  # fmt: skip
                new, histories = state, []
                if reclaimed:
                    histories.append([*known[:-1], rows[0]])
                else:
                    try:
                        for cycle, entry, row, pid in zip(
                            cycles, entries, rows, prediction_ids, strict=True
                        ):
                            check_next_cycle(
                                unit_id, new.cycles, cycle, max_jump=self.settings.max_cycle_jump
                            )
                            histories.append([*known, row])
                            new = new.advanced(entry, pid, needed)
                            known = [*known, row][-len(new.inputs) :]
                    except (SequenceConflict, CycleJump):
                        if context.trusted:
                            continue
                        raise
                scored = await asyncio.gather(
                    *(self._model_call(domain.name, h, shadow=True) for h in histories)
                )
                claimed: UnitState | None = None
                if context.stored and not reclaimed:
                    try:
                        claimed = await unit_state.replace_if(self.db, new, seq=state.seq)
                    except StoreError as exc:  # gone since the read: this replica's memory
                        logger.warning("unit %s: cannot claim cycles %s (%s)", unit_id, cycles, exc)
                    else:
                        if claimed is None:  # another replica advanced the unit meanwhile
                            for unused in scored:
                                if unused.shadow is not None:
                                    unused.shadow.cancel()
                            continue
                        new = claimed
                finished = await asyncio.gather(
                    *(
                        self._finish(
                            domain.name,
                            item,
                            one,
                            user,
                            request_id,
                            pid,
                            key,
                            started,
                            archive=True,
                            entry=entry,
                            explain=explain,
                        )
                        for item, one, pid, key, entry in zip(
                            items, scored, prediction_ids, idempotency_keys, entries, strict=True
                        )
                    ),
                    return_exceptions=True,
                )
                failed = [i for i, f in enumerate(finished) if isinstance(f, BaseException)]
                if failed:  # keep the claim of the archived cycles before the first failure
                    if claimed is not None:
                        kept = state
                        for entry, pid in zip(entries[: failed[0]], prediction_ids, strict=False):
                            kept = kept.advanced(entry, pid, needed)
                        await self._release(claimed, kept)
                    raise finished[failed[0]]  # type: ignore[misc]
                self.histories.put(unit_id, new, known)
                return [f for f in finished if not isinstance(f, BaseException)]
        raise SequenceConflict(
            f"unit {unit_id!r}: other requests keep advancing this unit; send its cycles in order"
        )

    async def _known_answer(self, prediction_id: str) -> tuple[dict[str, Any], str | None] | None:
        """The first answer of an idempotent request and its fingerprint (None: archived
        before fingerprints were), from memory, the archive or the spool."""
        remembered = self._answers.get(prediction_id)
        if remembered is not None:
            return remembered[1], remembered[0]
        store_down = False
        try:
            doc = await predictions.find_prediction(self.db, prediction_id)
        except StoreError:
            doc, store_down = None, True
        if doc is not None:
            return response_from(doc, "archived"), doc.get("request_hash")
        # Not in the store (down, or the record still waits for the replay): the first answer
        # may be in a spool, e.g. written before a restart. Never looked at while all is well.
        if store_down or self.writer.spool.depth:
            spooled = await asyncio.to_thread(self.writer.spool.find, prediction_id)
            if spooled is not None:
                answer = response_from(spooled, "spooled")
                self._remember(prediction_id, answer, spooled.get("request_hash"))
                return answer, spooled.get("request_hash")
        return None

    def _remember(
        self, prediction_id: str, answer: dict[str, Any], fingerprint: str | None
    ) -> None:
        self._answers[prediction_id] = (fingerprint, answer)
        while len(self._answers) > _IDEMPOTENT_MEMORY:
            self._answers.popitem(last=False)

    # --- scoring ----------------------------------------------------------------------------
    async def _score(
        self,
        domain_name: str,
        item: BaseModel,
        user: str,
        request_id: str,
        prediction_id: str | None,
        idempotency_key: str | None = None,
        *,
        archive: bool = True,
        explain: bool = False,
    ) -> dict[str, Any]:
        domain = self.domains[domain_name]
        started = time.perf_counter()
        if not is_sequence_domain(domain):
            scored = await self._model_call(domain_name, item, shadow=archive)
            return await self._finish(
                domain_name, item, scored, user, request_id, prediction_id,
                idempotency_key, started, archive=archive, explain=explain,
            )  # fmt: skip
        if archive:
            answers = await self._score_run(
                domain, [item], user, request_id, [prediction_id],  # type: ignore[list-item]
                [idempotency_key], started, explain=explain,
            )  # fmt: skip
            return answers[0]
        # a test prediction: against the known cycles before it, no write
        unit_id = asset_of(item)
        cycle = int(getattr(item, "cycle"))  # noqa: B009 - the sequence field, checked above
        needed = self._history_needed(domain_name)
        async with self.histories.lock(unit_id):
            context = await self._context(domain, unit_id, needed, persist=False)
        rows = [r for r, c in zip(context.rows, context.state.cycles, strict=True) if c < cycle]
        scored = await self._model_call(domain_name, [*rows, item.as_row()])  # type: ignore[attr-defined]
        return await self._finish(
            domain_name, item, scored, user, request_id, prediction_id,
            idempotency_key, started, archive=False, explain=explain,
        )  # fmt: skip

    async def _release(self, claimed: UnitState, previous: UnitState) -> None:
        """Give back a claimed cycle whose prediction was not archived."""
        try:
            released = await asyncio.shield(
                unit_state.replace_if(self.db, previous, seq=claimed.seq)
            )
        except StoreError as exc:
            released, reason = None, str(exc)
        else:
            reason = "the unit moved on meanwhile"
        if released is None:
            logger.warning(
                "unit %s: cycle %d claimed but not archived, not released (%s)",
                claimed.asset_id, claimed.last_cycle, reason,
            )  # fmt: skip

    async def _context(
        self, domain: Domain, unit_id: str, needed: int, *, persist: bool, trust: bool = False
    ) -> _Context:
        """The unit's known cycles: its stored state (built from the archive once, stored when
        `persist`), completed with what this replica took while the store was away; this
        replica's memory when the store is unreachable.

        `trust`: take this replica's memory of a stored state as the stored state without
        reading it (a unit's cycles mostly come to one replica): the claim that follows is a
        compare-and-set on its `seq` and `epoch`, so a stale memory only costs a retry."""
        memory = self.histories.peek(unit_id)
        if memory is not None and not self.writer.store_ok and memory[0].holds(needed):
            return _Context(memory[0], memory[1], stored=False)  # store known down: no wait
        if trust and persist and memory is not None and memory[0].seq and memory[0].holds(needed):
            return _Context(memory[0], memory[1], stored=True, trusted=True)
        try:
            for _ in range(_CLAIM_TRIES):
                state = await unit_state.read(self.db, domain.name, unit_id)
                stored = state
                if memory is not None and (state is None or state.epoch != memory[0].epoch):
                    # the unit was purged (its state removed, then rebuilt) since this replica
                    # saw it: what it remembers may hold purged cycles, never merge it back
                    self.histories.forget(unit_id)
                    memory = None
                if state is None or not state.holds(needed):
                    built = await self._from_archive(domain, unit_id, needed)
                    state = built if state is None else state.merged(
                        built.inputs, needed, complete=built.complete
                    )  # fmt: skip
                if memory is not None:  # cycles this replica scored while the store was away
                    state = state.merged(memory[0].inputs, needed)
                if persist and (stored is None or not state.same_cycles(stored)):
                    if stored is None:
                        written = await unit_state.create(self.db, state)
                    else:
                        written = await unit_state.replace_if(self.db, state, seq=stored.seq)
                    if written is None:
                        continue  # another replica wrote the state first: read it
                    state = written
                return _Context(state, self._rows(domain, state, memory), stored=persist)
        except StoreError:
            if memory is None or not memory[0].holds(needed):
                raise
            logger.info("unit %s: store unreachable, scored from this replica's memory", unit_id)
            return _Context(memory[0], memory[1], stored=False)
        raise SequenceConflict(f"unit {unit_id!r}: its state keeps changing; retry")

    async def _from_archive(self, domain: Domain, unit_id: str, needed: int) -> UnitState:
        """The unit's last `needed` archived cycles (a sorted find: once per unit, not per
        request)."""
        docs = await predictions.unit_history(self.db, unit_id, needed, domain=domain.name)
        inputs = tuple(doc["input"] for doc in docs if isinstance(doc.get("input"), dict))
        if len(inputs) != len(docs):
            raise StoreError(f"archived cycle of unit {unit_id!r} is malformed")
        whole = len(docs) < needed  # fewer than asked: the archive holds every cycle
        return UnitState(
            domain.name, unit_id, complete=whole, capacity=needed, epoch=predictions.random_id()
        ).merged(inputs, needed)

    def _rows(
        self,
        domain: Domain,
        state: UnitState,
        memory: tuple[UnitState, list[dict[str, Any]]] | None,
    ) -> list[dict[str, Any]]:
        """The model rows of the state's cycles, reusing this replica's rows of the same ones."""
        known: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        if memory is not None:
            known = {
                c: (entry, row)
                for c, entry, row in zip(memory[0].cycles, memory[0].inputs, memory[1], strict=True)
            }
        rows = []
        for cycle, entry in zip(state.cycles, state.inputs, strict=True):
            mine = known.get(cycle)
            if mine is not None and mine[0] == entry:
                rows.append(mine[1])
                continue
            try:
                past = domain.input_model.model_validate(entry, context={"archived": True})
            except ValueError as exc:
                raise StoreError(f"a stored cycle of unit {state.asset_id!r} is malformed") from exc
            rows.append(past.as_row())  # type: ignore[attr-defined]
        return rows

    def _history_needed(self, domain_name: str) -> int:
        """Cycles the served model reads, or its shadow when that reads more (both score the
        same history)."""
        needed = [
            history_needed(m.bundle, self.settings)
            for m in (self.holder.loaded(domain_name), self.holder.shadow(domain_name))
            if m is not None
        ]
        return max(needed, default=history_needed(None, self.settings))

    async def _model_call(self, domain_name: str, item: Any, *, shadow: bool = False) -> Scored:
        """The served model's output (`shadow`: and the shadow's to come, for the archive)."""
        started = time.perf_counter()
        try:
            return await self.batchers[domain_name].predict(item, shadow=shadow)
        finally:
            telemetry.PREDICTION_LATENCY.labels(domain=domain_name).observe(
                time.perf_counter() - started
            )

    async def _finish(
        self,
        domain_name: str,
        item: BaseModel,
        scored: Scored,
        user: str,
        request_id: str,
        prediction_id: str | None,
        idempotency_key: str | None,
        started: float,
        *,
        archive: bool,
        entry: dict[str, Any] | None = None,
        explain: bool = False,
    ) -> dict[str, Any]:
        """`entry`: `archived_input(item, domain)` when the caller has made it already.

        The record waits for the shadow's result (`MH_SHADOW_BUDGET_MS` at most) and, when
        asked, the explanation; an unasked explanation comes later (`Explainer`)."""
        output, model = scored.output, scored.model
        record = PredictionRecord(
            prediction_id=prediction_id or predictions.new_prediction_id(user, None),
            idempotency_key=idempotency_key,
            domain=domain_name,
            asset_id=asset_of(item),
            cycle=getattr(item, "cycle", None),
            input={},
            output=output,
            model_name=model.ref.name,
            model_version=model.ref.version,
            model_alias=model.ref.alias,
            user=user,
            request_id=request_id,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            created_at=now_ms(),
        ).to_document()
        version = model.ref.version
        if non_finite(output):  # inputs far outside the training data can overflow a model
            if scored.shadow is not None:
                scored.shadow.cancel()  # nothing is archived: the shadow need not score it
            raise InputError(
                f"the {domain_name} model gave a non-finite output for this input (values far "
                "outside the training data?); nothing was archived"
            )
        telemetry.observe_output(domain_name, version, output)
        explanation = await explain_now(domain_name, scored) if explain else None
        if not archive:
            telemetry.PREDICTIONS.labels(domain_name, version, "not_archived").inc()
            return _with_explanation(response_from(record, "not_archived"), explanation)
        record["explanation"] = explanation
        if scored.shadow is not None:
            record["shadow"] = await shadow_result(
                scored.shadow, scored.shadow_model, self.settings.shadow_budget_ms / 1000,
                domain_name,
            )  # fmt: skip
        record["input"] = (
            entry if entry is not None else archived_input(item, self.domains[domain_name])
        )
        running = self._inflight.get(record["prediction_id"]) if idempotency_key else None
        if running is not None:  # what the key is bound to (see `predict`)
            record["request_hash"] = running[0]
        try:
            outcome = await self.writer.submit(record)
        except Exception:
            telemetry.PREDICTIONS.labels(domain_name, version, "error").inc()
            raise
        if outcome == "duplicate":  # an idempotent retry won the race on another replica
            doc = await predictions.find_prediction(self.db, record["prediction_id"])
            if doc is None:
                raise InputError("duplicate prediction id but no archived record")
            if idempotency_key is not None:
                _same_request(
                    idempotency_key, record.get("request_hash"), doc.get("request_hash"),
                    doc, domain_name,
                )  # fmt: skip
            telemetry.PREDICTIONS.labels(
                domain_name, doc["model_version"], "idempotent_replay"
            ).inc()
            return {**response_from(doc, "archived"), "idempotent_replay": True}
        telemetry.PREDICTIONS.labels(domain_name, version, outcome).inc()
        if explanation is None and outcome == "archived":
            self.explainer.submit(record["prediction_id"], domain_name, scored)
        return _with_explanation(response_from(record, outcome), explanation)


def _with_explanation(answer: dict[str, Any], explanation: dict[str, Any] | None) -> dict[str, Any]:
    """The answer, with the explanation when one was asked for."""
    return answer if explanation is None else {**answer, "explanation": explanation}


def _same_request(
    key: str,
    fingerprint: str | None,
    seen: str | None,
    first: dict[str, Any] | None,
    domain_name: str,
) -> None:
    """Refuse a request reusing an Idempotency-Key of another request (IdempotencyKeyReused).

    `seen`: the first request's fingerprint; None for a record archived before fingerprints
    existed, then only its domain is compared."""
    if seen is not None and fingerprint is not None:
        same = seen == fingerprint
    else:
        same = first is None or first.get("domain") == domain_name
    if not same:
        shown, _, item = key.partition("/")
        which = f" (batch item {item})" if item else ""
        raise IdempotencyKeyReused(
            f"Idempotency-Key {shown!r}{which} was already used for another request (another "
            "route, domain or body); a key names one request: retry with the same body, or "
            "send a new key"
        )

"""Score one request and archive it: the logic behind POST /predict and /predict-test.

Order of a prediction: idempotency (a known key returns the first answer, nothing is scored or
written; the answer comes from memory, the archive, or, store down, the spool) → turbofan
context under the unit's lock (history, sequence check) → the domain's micro-batcher (one
model call for concurrent requests) → the archive record, made durable by the group-commit
writer (store or spool) → the response. The response is built from exactly what was archived
(timestamps at the store's millisecond precision), so the two always agree.

The turbofan unit cache is per replica. With several replicas, send a unit's cycles to one of
them (e.g. hash the unit id at the load balancer): a replica reads another's cycles from the
archive only when the unit is not in its cache (first request, eviction, restart).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from pymongo.asynchronous.database import AsyncDatabase

from machine_health.archive import repository
from machine_health.archive.records import PredictionRecord, encode_samples
from machine_health.archive.writer import ArchiveWriter
from machine_health.config import Settings
from machine_health.domains.base import Domain
from machine_health.domains.sequence import check_next_cycle
from machine_health.errors import InputError, StoreError
from machine_health.monitoring import metrics
from machine_health.serving import (
    LoadedModel,
    MicroBatcher,
    ModelHolder,
    UnitHistories,
    _non_finite,
)

logger = logging.getLogger(__name__)

_IDEMPOTENT_MEMORY = 10_000
SAMPLES_ENCODING = "float32-le-base64"


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


def archived_input(item: BaseModel) -> dict[str, Any]:
    """The request item as stored: a waveform as float32 bytes with its length, the rest as is."""
    data = item.model_dump()
    if "samples" in data:
        data["n_samples"] = len(data["samples"])
        data["samples"] = encode_samples(data["samples"])
    return data


def public_document(doc: dict[str, Any]) -> dict[str, Any]:
    """An archived document as JSON-able data (bytes as base64, named by `samples_encoding`)."""
    doc = {k: v for k, v in doc.items() if k != "_id"}
    data = dict(doc.get("input") or {})
    if isinstance(data.get("samples"), bytes | bytearray):
        data["samples"] = base64.b64encode(bytes(data["samples"])).decode()
        data["samples_encoding"] = SAMPLES_ENCODING
    doc["input"] = data
    return doc


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
        self.batchers = {
            name: MicroBatcher(holder, name, max_batch=settings.model_batch_max) for name in domains
        }
        self.histories = UnitHistories(settings.turbofan_window, settings.turbofan_cache_units)
        self._answers: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def start(self) -> None:
        for batcher in self.batchers.values():
            batcher.start()

    async def close(self) -> None:
        for batcher in self.batchers.values():
            await batcher.close()

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
    ) -> dict[str, Any]:
        """Score `item`; with `archive`, return only once the record is durable."""
        if not archive:
            return await self._score(domain_name, item, user, request_id, None, archive=False)
        prediction_id = repository.new_prediction_id(user, idempotency_key)
        if idempotency_key is None:
            return await self._score(domain_name, item, user, request_id, prediction_id)
        known = await self._known_answer(prediction_id)
        if known is not None:
            metrics.PREDICTIONS.labels(
                domain=domain_name, model_version=known["model"]["version"],
                outcome="idempotent_replay",
            ).inc()  # fmt: skip
            return {**known, "idempotent_replay": True}
        running = self._inflight.get(prediction_id)
        if running is not None:  # the same key is being scored right now: share its answer
            return {**(await asyncio.shield(running)), "idempotent_replay": True}
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._inflight[prediction_id] = future
        try:
            answer = await self._score(
                domain_name, item, user, request_id, prediction_id, idempotency_key
            )
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        else:
            future.set_result(answer)
            self._remember(prediction_id, answer)
            return answer
        finally:
            self._inflight.pop(prediction_id, None)

    async def _known_answer(self, prediction_id: str) -> dict[str, Any] | None:
        answer = self._answers.get(prediction_id)
        if answer is not None:
            return answer
        store_down = False
        try:
            doc = await repository.find_prediction(self.db, prediction_id)
        except StoreError:
            doc, store_down = None, True
        if doc is not None:
            return response_from(doc, "archived")
        # Not in the store (down, or the record still waits for the replay): the first answer
        # may be in a spool, e.g. written before a restart. Never looked at while all is well.
        if store_down or self.writer.spool.depth:
            spooled = await asyncio.to_thread(self.writer.spool.find, prediction_id)
            if spooled is not None:
                answer = response_from(spooled, "spooled")
                self._remember(prediction_id, answer)
                return answer
        return None

    def _remember(self, prediction_id: str, answer: dict[str, Any]) -> None:
        self._answers[prediction_id] = answer
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
    ) -> dict[str, Any]:
        domain = self.domains[domain_name]
        started = time.perf_counter()
        if not is_sequence_domain(domain):
            output, model = await self._model_call(domain_name, item)
            return await self._finish(
                domain_name, item, output, model, user, request_id, prediction_id,
                idempotency_key, started, archive=archive,
            )  # fmt: skip
        unit_id = asset_of(item)
        cycle = int(getattr(item, "cycle"))  # noqa: B009 - the sequence field, checked above
        self.histories.ensure_window(self._history_needed(domain_name))
        async with self.histories.lock(unit_id):
            rows = await self.histories.get(unit_id, self._load_history(domain))
            if archive:
                check_next_cycle(unit_id, [r["cycle"] for r in rows], cycle)
            else:  # a test prediction scores against the known cycles before it, writes nothing
                rows = [r for r in rows if r["cycle"] < cycle]
            row = item.as_row()  # type: ignore[attr-defined]
            output, model = await self._model_call(domain_name, [*rows, row])
            answer = await self._finish(
                domain_name, item, output, model, user, request_id, prediction_id,
                idempotency_key, started, archive=archive,
            )  # fmt: skip
            if archive:
                self.histories.append(unit_id, row)
            return answer

    def _history_needed(self, domain_name: str) -> int:
        loaded = self.holder.loaded(domain_name)
        return history_needed(loaded.bundle if loaded else None, self.settings)

    def _load_history(self, domain: Domain) -> Any:
        async def load(unit_id: str, limit: int) -> list[dict[str, Any]]:
            docs = await repository.unit_history(self.db, unit_id, limit, domain=domain.name)
            rows = []
            for doc in docs:
                try:
                    past = domain.input_model.model_validate(doc["input"])
                except (KeyError, ValueError) as exc:
                    raise StoreError(f"archived cycle of unit {unit_id!r} is malformed") from exc
                rows.append(past.as_row())  # type: ignore[attr-defined]
            return rows

        return load

    async def _model_call(self, domain_name: str, item: Any) -> tuple[dict[str, Any], LoadedModel]:
        started = time.perf_counter()
        try:
            return await self.batchers[domain_name].predict(item)
        finally:
            metrics.PREDICTION_LATENCY.labels(domain=domain_name).observe(
                time.perf_counter() - started
            )

    async def _finish(
        self,
        domain_name: str,
        item: BaseModel,
        output: dict[str, Any],
        model: LoadedModel,
        user: str,
        request_id: str,
        prediction_id: str | None,
        idempotency_key: str | None,
        started: float,
        *,
        archive: bool,
    ) -> dict[str, Any]:
        record = PredictionRecord(
            prediction_id=prediction_id or repository.new_prediction_id(user, None),
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
        if _non_finite(output):  # inputs far outside the training data can overflow a model
            raise InputError(
                f"the {domain_name} model gave a non-finite output for this input (values far "
                "outside the training data?); nothing was archived"
            )
        metrics.observe_output(domain_name, version, output)
        if not archive:
            metrics.PREDICTIONS.labels(domain_name, version, "not_archived").inc()
            return response_from(record, "not_archived")
        record["input"] = archived_input(item)
        try:
            outcome = await self.writer.submit(record)
        except Exception:
            metrics.PREDICTIONS.labels(domain_name, version, "error").inc()
            raise
        if outcome == "duplicate":  # an idempotent retry won the race on another replica
            doc = await repository.find_prediction(self.db, record["prediction_id"])
            if doc is None:
                raise InputError("duplicate prediction id but no archived record")
            metrics.PREDICTIONS.labels(domain_name, doc["model_version"], "idempotent_replay").inc()
            return {**response_from(doc, "archived"), "idempotent_replay": True}
        metrics.PREDICTIONS.labels(domain_name, version, outcome).inc()
        return response_from(record, outcome)

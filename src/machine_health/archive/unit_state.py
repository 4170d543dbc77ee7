"""The serving state of a unit of a sequence domain (turbofan): one small document per unit.

A turbofan cycle is scored with the unit's last cycles, whichever replica took them. So the
last cycles live in the store, one document per unit read and written by `_id` only (the
embedded store serves an `_id` lookup in ~1 ms at any archive size; a sorted find over one
unit's archived cycles grows with the archive):

    _id                 "<domain>:<asset_id>"
    domain, asset_id    str
    seq                 int, +1 at every write: the compare-and-set token
    last_cycle          int (0 = no cycle yet)     the unit's latest accepted cycle
    last_prediction_id  str | None                 the prediction that accepted `last_cycle`
    epoch               str | None                 set when the state is built from the archive:
                                                   a replica's memory of another epoch is stale
                                                   (the unit was purged meanwhile), never merged
    complete            bool                       `inputs` hold EVERY known cycle of the unit
    capacity            int                        cycles kept (the longest history a model read)
    inputs              [dict]                     the last `capacity` cycles as archived
                                                   (`PredictionRecord.input`), oldest first

Every write is `update_one({_id, seq: <read>, epoch}, {$set: <whole state, seq + 1>})`: a miss means
another replica wrote in between, and the caller reads again. Whatever the path (a replica's
own claim, a memory merge after an outage, a spool replay), the state is the last `capacity`
cycles of the UNION of the cycles known, by cycle number (`UnitState.merged`).

An admin purge (`DELETE /assets/{unit}/cycles`, `machine-health units purge`) deletes the unit's
archived cycles from a cycle on and then its state document (`delete`): the next cycle, on any
replica, rebuilds the state from the archive under a new `epoch`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from machine_health.errors import StoreError

logger = logging.getLogger(__name__)

UNIT_STATE = "unit_state"


def state_id(domain: str, asset_id: str) -> str:
    return f"{domain}:{asset_id}"


@dataclass(frozen=True)
class UnitState:
    """A unit's last cycles (see the module docstring); `seq == 0`: not in the store."""

    domain: str
    asset_id: str
    inputs: tuple[dict[str, Any], ...] = ()
    complete: bool = True
    capacity: int = 0
    seq: int = 0
    last_prediction_id: str | None = None
    epoch: str | None = None
    _cycles: tuple[int, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_cycles", tuple(int(i["cycle"]) for i in self.inputs))

    @property
    def cycles(self) -> tuple[int, ...]:
        return self._cycles

    @property
    def last_cycle(self) -> int:
        return self._cycles[-1] if self._cycles else 0

    def holds(self, needed: int) -> bool:
        """Whether the state can serve a model that reads `needed` cycles."""
        return self.complete or len(self.inputs) >= needed

    def merged(
        self,
        inputs: Iterable[dict[str, Any]],
        capacity: int,
        *,
        complete: bool | None = None,
    ) -> UnitState:
        """This state with `inputs` added (union by cycle; this state's input wins a tie), the
        last `capacity` kept. `complete`: whether `inputs` hold every cycle before this
        state's first one (None: unknown, i.e. only when this state is complete already)."""
        by_cycle = {int(i["cycle"]): i for i in inputs}
        by_cycle.update(zip(self._cycles, self.inputs, strict=True))
        ordered = [by_cycle[c] for c in sorted(by_cycle)]
        capacity = max(capacity, self.capacity)
        whole = self.complete or bool(complete)
        if len(ordered) > capacity:
            ordered, whole = ordered[-capacity:], False
        return replace(self, inputs=tuple(ordered), complete=whole, capacity=capacity)

    def advanced(
        self, entry: dict[str, Any], prediction_id: str | None, capacity: int
    ) -> UnitState:
        """This state with one more (the latest) cycle."""
        state = self.merged([entry], capacity)
        return replace(state, last_prediction_id=prediction_id)

    def same_cycles(self, other: UnitState) -> bool:
        return self._cycles == other._cycles and self.complete == other.complete

    def to_document(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "asset_id": self.asset_id,
            "seq": self.seq,
            "last_cycle": self.last_cycle,
            "last_prediction_id": self.last_prediction_id,
            "epoch": self.epoch,
            "complete": self.complete,
            "capacity": self.capacity,
            "inputs": [dict(i) for i in self.inputs],
        }

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> UnitState:
        try:
            return cls(
                domain=str(doc["domain"]),
                asset_id=str(doc["asset_id"]),
                inputs=tuple(doc["inputs"]),
                complete=bool(doc["complete"]),
                capacity=int(doc["capacity"]),
                seq=int(doc["seq"]),
                last_prediction_id=doc.get("last_prediction_id"),
                epoch=doc.get("epoch"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"unit state {doc.get('_id')!r} is malformed: {exc}") from exc


async def read(db: AsyncDatabase, domain: str, asset_id: str) -> UnitState | None:
    """The unit's stored state, None if it has none yet."""
    try:
        doc = await db[UNIT_STATE].find_one({"_id": state_id(domain, asset_id)})
    except PyMongoError as exc:
        raise StoreError(f"cannot read the state of unit {asset_id!r}: {exc}") from exc
    return UnitState.from_document(doc) if doc else None


async def create(db: AsyncDatabase, state: UnitState) -> UnitState | None:
    """Store a first state (seq 1); None if another replica stored one first."""
    stored = replace(state, seq=1)
    try:
        await db[UNIT_STATE].insert_one(
            {"_id": state_id(state.domain, state.asset_id), **stored.to_document()}
        )
    except DuplicateKeyError:
        return None
    except PyMongoError as exc:
        raise StoreError(f"cannot store the state of unit {state.asset_id!r}: {exc}") from exc
    return stored


async def replace_if(db: AsyncDatabase, state: UnitState, *, seq: int) -> UnitState | None:
    """Write `state` if the stored one is still at `seq` (compare-and-set); the stored state,
    or None when another writer came first (read again)."""
    stored = replace(state, seq=seq + 1)
    try:
        result = await db[UNIT_STATE].update_one(
            # `epoch` too: a replica's memory of a purged unit (rebuilt under a new epoch) can
            # never overwrite the new state, even when their `seq` meet
            {"_id": state_id(state.domain, state.asset_id), "seq": seq, "epoch": state.epoch},
            {"$set": stored.to_document()},
        )
    except PyMongoError as exc:
        raise StoreError(f"cannot update the state of unit {state.asset_id!r}: {exc}") from exc
    return stored if result.matched_count == 1 else None


async def delete(db: AsyncDatabase, domain: str, asset_id: str) -> bool:
    """Remove the unit's state (rebuilt from the archive when next needed); whether it had one."""
    try:
        result = await db[UNIT_STATE].delete_one({"_id": state_id(domain, asset_id)})
    except PyMongoError as exc:
        raise StoreError(f"cannot reset the state of unit {asset_id!r}: {exc}") from exc
    return result.deleted_count == 1


def delete_sync(db: Database, domain: str, asset_id: str) -> bool:
    """Sync twin of `delete` (the CLI)."""
    try:
        result = db[UNIT_STATE].delete_one({"_id": state_id(domain, asset_id)})
    except PyMongoError as exc:
        raise StoreError(f"cannot reset the state of unit {asset_id!r}: {exc}") from exc
    return result.deleted_count == 1


async def absorb(db: AsyncDatabase, records: Iterable[dict[str, Any]], *, tries: int = 5) -> int:
    """Add archived records of sequence domains (spool replay) to their units' stored states.

    A record spooled while the store was down never reached the unit's state: without this,
    the next cycle (on any replica) would be scored without it. Units without a stored state
    are left alone (their state is built from the archive when first needed). The number of
    states changed.
    """
    per_unit: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        if record.get("cycle") is None or not isinstance(record.get("input"), dict):
            continue
        key = (str(record["domain"]), str(record["asset_id"]))
        per_unit.setdefault(key, []).append(record["input"])
    changed = 0
    for (domain, asset_id), inputs in per_unit.items():
        for _ in range(tries):
            state = await read(db, domain, asset_id)
            if state is None:
                break
            new = state.merged(inputs, state.capacity)
            if new.same_cycles(state):
                break
            if await replace_if(db, new, seq=state.seq) is not None:
                changed += 1
                break
        else:
            logger.warning("unit %s:%s: state kept changing, replayed cycles not added", domain,
                           asset_id)  # fmt: skip
    return changed

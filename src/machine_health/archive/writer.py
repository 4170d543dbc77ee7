"""Group commit of archive records, with the spool as the fallback while the store is down.

Every prediction awaits `ArchiveWriter.submit(doc)`, which returns only once the record is
durable: acknowledged by the store ("archived"), found there already ("duplicate", an idempotent
retry that raced its first attempt), or fsync'd to the local spool ("spooled"). One writer task
takes everything queued while the previous write was in flight and sends it as ONE unordered
`insert_many`, so N concurrent requests cost one round trip, not N.

While the spool holds records, new ones are spooled too (their order is kept) and a replay task
moves the spool into the store, in order, as soon as the store answers again; the replayed
cycles of sequence domains are added to their units' serving state (`unit_state.absorb`), which
never saw them, before the spool commits past them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, ConnectionFailure, PyMongoError

from machine_health.archive import unit_state
from machine_health.archive.spool import Spool, SpoolFile
from machine_health.errors import SpoolFull, StoreError
from machine_health.monitoring import metrics
from machine_health.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

Outcome = Literal["archived", "duplicate", "spooled"]
DUPLICATE_KEY = 11000
_REPLAY_CHUNK = 1000


@dataclass
class _Pending:
    doc: dict[str, Any]
    future: asyncio.Future[Outcome]


def _write_errors(exc: BulkWriteError) -> dict[int, dict[str, Any]]:
    return {err["index"]: err for err in exc.details.get("writeErrors", [])}


class ArchiveWriter:
    """Group-commit writer of one collection, spooling while the store is down."""

    def __init__(
        self,
        collection: AsyncCollection,
        spool: Spool,
        *,
        max_batch: int = 1000,
        retry_seconds: float = 0.5,
    ) -> None:
        self.collection = collection
        self.spool = spool
        self.max_batch = max_batch
        self.retry_seconds = retry_seconds
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._wake_replay = asyncio.Event()
        self.store_ok = True

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the spool, replay what a crash left (if the store answers), start the tasks."""
        await asyncio.to_thread(self.spool.open)
        metrics.SPOOL_DEPTH.set(self.spool.depth)
        if self.spool.depth:
            logger.info("replaying %d spooled records left by a previous run", self.spool.depth)
            await self.replay_once()
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="archive-writer"),
            asyncio.create_task(self._replay_loop(), name="archive-replay"),
        ]

    async def close(self) -> None:
        """Finish the queued writes, stop the tasks, release the spool (kept if not empty)."""
        while not self._queue.empty():
            await asyncio.sleep(0.01)
        await cancel_and_wait(*self._tasks)
        self._tasks = []
        await asyncio.to_thread(self.spool.close)

    # --- the request side -------------------------------------------------------------------
    async def submit(self, doc: dict[str, Any]) -> Outcome:
        """Make `doc` durable; raises SpoolFull (store down, spool full) or StoreError."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(doc, future))
        return await future

    # --- the writer task --------------------------------------------------------------------
    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            except Exception as exc:  # never let the writer die: fail this batch only
                logger.exception("archive write failed")
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(StoreError(f"archive write failed: {exc}"))

    async def _write(self, batch: list[_Pending]) -> None:
        if self.spool.depth == 0:
            outcomes = await self._insert(batch)
            if outcomes is not None:
                for item, outcome in zip(batch, outcomes, strict=True):
                    if isinstance(outcome, Exception):
                        item.future.set_exception(outcome)
                    else:
                        item.future.set_result(outcome)
                return
        # The store is down, or older records still wait in the spool: spool these after them.
        try:
            await asyncio.to_thread(self.spool.append, [item.doc for item in batch])
        except SpoolFull as exc:
            metrics.ARCHIVE_FAILURES.labels(reason="spool_full").inc(len(batch))
            for item in batch:
                item.future.set_exception(exc)
            return
        metrics.SPOOL_DEPTH.set(self.spool.depth)
        self._wake_replay.set()
        for item in batch:
            item.future.set_result("spooled")

    async def _insert(self, batch: list[_Pending]) -> list[Outcome | Exception] | None:
        """One unordered insert_many; None when the store is unreachable (spool instead)."""
        docs = [dict(item.doc) for item in batch]  # insert_many adds _id to what it is given
        started = time.perf_counter()
        outcomes: list[Outcome | Exception] = ["archived"] * len(docs)
        try:
            await self.collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            for index, err in _write_errors(exc).items():
                if err.get("code") == DUPLICATE_KEY:
                    outcomes[index] = "duplicate"
                else:
                    metrics.ARCHIVE_FAILURES.labels(reason="error").inc()
                    outcomes[index] = StoreError(
                        f"the store refused the record: {err.get('errmsg')}"
                    )
        except ConnectionFailure as exc:
            if self.store_ok:
                logger.warning("store unreachable, spooling archive records: %s", exc)
            self.store_ok = False
            metrics.ARCHIVE_FAILURES.labels(reason="store_down").inc(len(docs))
            return None
        self.store_ok = True
        metrics.ARCHIVE_WRITE_LATENCY.observe(time.perf_counter() - started)
        metrics.ARCHIVE_BATCH_SIZE.observe(len(docs))
        return outcomes

    # --- the replay task --------------------------------------------------------------------
    async def _replay_loop(self) -> None:
        last_scan = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_replay.wait(), timeout=self.retry_seconds * 10)
            self._wake_replay.clear()
            if time.monotonic() - last_scan > 30:  # a sibling worker may have died meanwhile
                await asyncio.to_thread(self.spool.adopt_orphans)
                last_scan = time.monotonic()
            while self.spool.depth and not await self.replay_once():
                await asyncio.sleep(self.retry_seconds)

    async def replay_once(self) -> bool:
        """Move every spooled record into the store, oldest file first; False if it is down."""
        for spool_file in self.spool.files():
            if not await self._replay_file(spool_file):
                return False
            if spool_file is not self.spool.own:
                await asyncio.to_thread(self.spool.drop_adopted, spool_file)
        metrics.SPOOL_DEPTH.set(self.spool.depth)
        return True

    async def _replay_file(self, spool_file: SpoolFile) -> bool:
        while True:
            docs, end = await asyncio.to_thread(spool_file.read, _REPLAY_CHUNK)
            if not docs:
                if await asyncio.to_thread(spool_file.reset_if_drained):
                    return True
                if end == spool_file.offset:  # only a torn tail left: nothing to replay
                    return True
                continue
            try:
                await self.collection.insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                others = [e for e in _write_errors(exc).values() if e.get("code") != DUPLICATE_KEY]
                for err in others:  # cannot be fixed by retrying: log it and move on
                    logger.error("spooled record refused by the store: %s", err.get("errmsg"))
                    metrics.ARCHIVE_FAILURES.labels(reason="error").inc()
            except (ConnectionFailure, PyMongoError) as exc:
                logger.debug("replay waits for the store: %s", exc)
                return False
            try:  # the units' serving state never saw these cycles: add them before commit
                await unit_state.absorb(self.collection.database, docs)
            except StoreError as exc:
                logger.debug("replay waits for the store (unit states): %s", exc)
                return False
            self.store_ok = True
            await asyncio.to_thread(spool_file.commit, end, len(docs))
            metrics.SPOOL_REPLAYED.inc(len(docs))
            metrics.SPOOL_DEPTH.set(self.spool.depth)
            logger.info("replayed %d spooled records (%d left)", len(docs), self.spool.depth)

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

One bad record never fails the others: `submit` encodes each record as BSON before it joins a
group commit, and one that cannot be stored (an int beyond 8 bytes, a key MongoDB refuses, over
16 MiB) is refused alone with an `InputError` (422); a group commit that still fails for a
reason other than the store is written again record by record. The replay handles every
failure per record too: a spooled line it cannot decode or encode, or that the store refuses,
goes to the dead-letter file beside the spool (`spool.DeadLetters`, counted by
`machine_health_spool_dead_letters_total`) and the replay keeps draining. Both tasks are
supervised: one that dies is logged, counted (`machine_health_archive_task_restarts_total`) and
started again after a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

import bson
from bson.errors import BSONError
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    PyMongoError,
    WriteError,
)

from machine_health import telemetry
from machine_health.archive import counters, labels, unit_state
from machine_health.archive.keys import with_keys
from machine_health.archive.spool import DeadLetters, Spool, SpoolFile
from machine_health.errors import InputError, SpoolFull, StoreError
from machine_health.tasks import cancel_and_wait, take_batch

logger = logging.getLogger(__name__)

Outcome = Literal["archived", "duplicate", "spooled"]
DUPLICATE_KEY = 11000
_REPLAY_CHUNK = 1000
#: MongoDB's largest document (maxBsonObjectSize), less room for the `_id` the driver adds
MAX_RECORD_BYTES = 16 * 1024 * 1024 - 64
#: errors that come from a record itself, not from the store (a later try fails the same way)
_RECORD_ERRORS = (BSONError, OverflowError, TypeError, ValueError)
#: a supervised task that ran this long before dying starts again with the shortest backoff
_HEALTHY_RUN_SECONDS = 60.0


@dataclass
class _Pending:
    doc: dict[str, Any]
    future: asyncio.Future[Outcome]


def _write_errors(exc: BulkWriteError) -> dict[int, dict[str, Any]]:
    return {err["index"]: err for err in exc.details.get("writeErrors", [])}


def unstorable(doc: Any) -> str | None:
    """Why `doc` cannot be stored as one MongoDB document, or None when it can.

    `bson.encode` is what the driver does to it anyway (a few microseconds for a record).
    """
    try:
        size = len(bson.encode(doc))
    except Exception as exc:  # OverflowError, InvalidDocument, TypeError...: this record only
        return f"{type(exc).__name__}: {exc}"
    if size > MAX_RECORD_BYTES:
        return f"{size} bytes as BSON, over MongoDB's 16 MiB document limit"
    return None


class ArchiveWriter:
    """Group-commit writer of one collection, spooling while the store is down."""

    def __init__(
        self,
        collection: AsyncCollection,
        spool: Spool,
        *,
        max_batch: int = 1000,
        retry_seconds: float = 0.5,
        restart_max_seconds: float = 30.0,
    ) -> None:
        self.collection = collection
        self.spool = spool
        self.dead_letters = DeadLetters(spool.directory)
        self.max_batch = max_batch
        self.retry_seconds = retry_seconds
        self.restart_max_seconds = restart_max_seconds
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._restarts: dict[str, asyncio.TimerHandle] = {}
        self._deaths: dict[str, int] = {}
        self._closing = False
        self._wake_replay = asyncio.Event()
        self.store_ok = True

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the spool, replay what a crash left (if the store answers), start the tasks."""
        await asyncio.to_thread(self.spool.open)
        telemetry.SPOOL_DEPTH.set(self.spool.depth)
        if self.spool.depth:
            logger.info("replaying %d spooled records left by a previous run", self.spool.depth)
            try:
                await self.replay_once()
            except Exception:  # never a crash loop at startup: the replay task tries again
                logger.exception("replay at startup failed; the replay task takes over")
        self._closing = False
        self._spawn("writer", self._write_loop)
        self._spawn("replay", self._replay_loop)

    async def close(self) -> None:
        """Finish the queued writes, stop the tasks, release the spool (kept if not empty)."""
        while not self._queue.empty():
            await asyncio.sleep(0.01)
        self._closing = True
        for handle in self._restarts.values():
            handle.cancel()
        self._restarts.clear()
        await cancel_and_wait(*self._tasks.values())
        self._tasks = {}
        await asyncio.to_thread(self.spool.close)

    # --- supervision ------------------------------------------------------------------------
    def _spawn(self, name: str, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._restarts.pop(name, None)
        if self._closing:
            return
        task = asyncio.create_task(body(), name=f"archive-{name}")
        started = time.monotonic()
        task.add_done_callback(lambda done: self._on_task_done(name, body, started, done))
        self._tasks[name] = task

    def _on_task_done(
        self,
        name: str,
        body: Callable[[], Coroutine[Any, Any, None]],
        started: float,
        task: asyncio.Task[None],
    ) -> None:
        """A supervised task ended: unless we are closing, log it, count it, start it again."""
        if self._closing or task.cancelled():
            return
        exc = task.exception()
        healthy = time.monotonic() - started >= _HEALTHY_RUN_SECONDS
        deaths = 1 if healthy else self._deaths.get(name, 0) + 1
        self._deaths[name] = deaths
        delay = min(self.restart_max_seconds, self.retry_seconds * 2 ** (deaths - 1))
        telemetry.ARCHIVE_TASK_RESTARTS.labels(task=name).inc()
        logger.error(
            "archive %s task died (%s); restarting it in %.1f s",
            name, repr(exc) if exc else "returned", delay, exc_info=exc,
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        self._restarts[name] = loop.call_later(delay, self._spawn, name, body)

    # --- the request side -------------------------------------------------------------------
    async def submit(self, doc: dict[str, Any]) -> Outcome:
        """Make `doc` durable; raises InputError (a record MongoDB cannot store: refused
        alone, before it joins a group commit or the spool), SpoolFull (store down, spool
        full) or StoreError."""
        reason = unstorable(doc)
        if reason is not None:
            telemetry.ARCHIVE_FAILURES.labels(reason="invalid_record").inc()
            raise InputError(f"the prediction cannot be archived ({reason}); nothing was stored")
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(doc, future))
        return await future

    # --- the writer task --------------------------------------------------------------------
    async def _write_loop(self) -> None:
        while True:
            batch = await take_batch(self._queue, self.max_batch)
            try:
                await self._write(batch)
            except Exception as exc:  # never let the writer die: fail this batch only
                logger.exception("archive write failed")
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(_record_error(exc))

    async def _write(self, batch: list[_Pending]) -> None:
        # Straight to the store unless the last insert or replay chunk found it down
        # (`store_ok` False) while records wait in the spool. Once one went in, new records go
        # to the store even while older ones wait in the spool:
        # spooling them behind the backlog would never let it drain under steady traffic (each
        # replay pass finds the records appended meanwhile), and the archive's order is by
        # timestamp and cycle, never by insertion.
        if self.store_ok or self.spool.depth == 0:
            try:
                outcomes = await self._insert(batch)
            except Exception as exc:
                if len(batch) == 1:
                    raise _record_error(exc) from exc
                # Not the store's "down" nor its per-record answer: find the record it comes
                # from by writing them one by one, so it fails alone.
                logger.warning("group commit of %d failed (%r), one by one", len(batch), exc)
                for item in batch:
                    try:
                        await self._write([item])
                    except Exception as one:
                        if not item.future.done():
                            item.future.set_exception(_record_error(one))
                return
            if outcomes is not None:
                for item, outcome in zip(batch, outcomes, strict=True):
                    if isinstance(outcome, Exception):
                        item.future.set_exception(outcome)
                    else:
                        item.future.set_result(outcome)
                return
        # The store is down: spool them (the replay task moves them in once it answers).
        try:
            await asyncio.to_thread(self.spool.append, [item.doc for item in batch])
        except SpoolFull as exc:
            telemetry.ARCHIVE_FAILURES.labels(reason="spool_full").inc(len(batch))
            for item in batch:
                item.future.set_exception(exc)
            return
        telemetry.SPOOL_DEPTH.set(self.spool.depth)
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
            if exc.details.get("writeConcernErrors"):
                # Written, but not acknowledged as the write concern asks (e.g. no majority
                # within MH_MONGODB_WRITE_TIMEOUT_MS): not durable yet, so spool them; their
                # replay finds them archived (duplicates) once a majority has them.
                logger.warning("write concern not met, spooling: %s", exc.details)
                telemetry.ARCHIVE_FAILURES.labels(reason="write_concern").inc(len(docs))
                return None
            for index, err in _write_errors(exc).items():
                if err.get("code") == DUPLICATE_KEY:
                    outcomes[index] = "duplicate"
                else:
                    telemetry.ARCHIVE_FAILURES.labels(reason="error").inc()
                    outcomes[index] = StoreError(
                        f"the store refused the record: {err.get('errmsg')}"
                    )
        except ConnectionFailure as exc:
            if self.store_ok:
                logger.warning("store unreachable, spooling archive records: %s", exc)
            self.store_ok = False
            telemetry.ARCHIVE_FAILURES.labels(reason="store_down").inc(len(docs))
            return None
        self.store_ok = True
        inserted = [
            doc for doc, outcome in zip(docs, outcomes, strict=True) if outcome == "archived"
        ]
        await counters.count_inserted(self.collection.database, inserted)
        telemetry.ARCHIVE_WRITE_LATENCY.observe(time.perf_counter() - started)
        telemetry.ARCHIVE_BATCH_SIZE.observe(len(docs))
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
        telemetry.SPOOL_DEPTH.set(self.spool.depth)
        return True

    async def _replay_file(self, spool_file: SpoolFile) -> bool:
        """Replay one file chunk by chunk; False when the store is not ready for it.

        Every record is handled on its own: one that cannot be decoded, encoded or stored is
        dead-lettered (durably, before the commit passes it) and the replay goes on.
        """
        while True:
            chunk = await asyncio.to_thread(spool_file.read, _REPLAY_CHUNK)
            if not chunk.docs and not chunk.rejected:
                if await asyncio.to_thread(spool_file.reset_if_drained):
                    return True
                if chunk.end == spool_file.offset:  # only a torn tail left: nothing to replay
                    return True
                continue
            dead = [(line, "undecodable", reason) for line, reason in chunk.rejected]
            docs: list[dict[str, Any]] = []
            lines: list[bytes] = []
            for doc, line in zip(chunk.docs, chunk.lines, strict=True):
                with_keys(doc)  # spooled by an earlier version: without sort keys
                reason = unstorable(doc)
                if reason is None:
                    docs.append(doc)
                    lines.append(line)
                else:
                    dead.append((line, "unencodable", reason))
            answer = await self._replay_insert(docs) if docs else ({}, set())
            if answer is None:
                return False
            refused, duplicates = answer
            dead += [(lines[i], kind, reason) for i, (kind, reason) in refused.items()]
            stored = [doc for i, doc in enumerate(docs) if i not in refused]
            inserted = [d for i, d in enumerate(docs) if i not in refused and i not in duplicates]
            await counters.count_inserted(self.collection.database, inserted)
            try:  # the units' serving state never saw these cycles: add them before commit
                await unit_state.absorb(self.collection.database, stored)
            except StoreError as exc:
                logger.debug("replay waits for the store (unit states): %s", exc)
                return False
            except Exception:  # archived all the same; their units' state is rebuilt later
                logger.exception("replayed records not added to their units' serving state")
                telemetry.ARCHIVE_FAILURES.labels(reason="unit_state").inc()
            try:  # a failure posted while these cycles were spooled did not label them
                await labels.label_replayed(self.collection.database, stored)
            except Exception:  # archived all the same; the next failure post labels them
                logger.exception("replayed cycles of failed units not labelled")
                telemetry.ARCHIVE_FAILURES.labels(reason="labels").inc()
            if dead:
                await self._dead_letter(dead, spool_file)
            if stored:
                self.store_ok = True
            await asyncio.to_thread(
                spool_file.commit, chunk.end, len(chunk.docs) + len(chunk.rejected)
            )
            telemetry.SPOOL_REPLAYED.inc(len(stored))
            telemetry.SPOOL_DEPTH.set(self.spool.depth)
            logger.info("replayed %d spooled records (%d left)", len(stored), self.spool.depth)

    async def _replay_insert(
        self, docs: list[dict[str, Any]]
    ) -> tuple[dict[int, tuple[str, str]], set[int]] | None:
        """Insert replayed records: {index: (kind, reason)} of those that can never be stored
        and the indexes of those stored already (duplicates), or None when the store is not
        ready (down, or the write concern not met)."""
        refused: dict[int, tuple[str, str]] = {}
        duplicates: set[int] = set()
        try:
            await self.collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if exc.details.get("writeConcernErrors"):
                logger.debug("replay waits for the write concern: %s", exc.details)
                return None
            for index, err in _write_errors(exc).items():
                if err.get("code") == DUPLICATE_KEY:
                    duplicates.add(index)
                else:  # retrying cannot fix it
                    refused[index] = ("refused", f"the store refused it: {err.get('errmsg')}")
        except PyMongoError as exc:  # ConnectionFailure included: the store, not the records
            logger.debug("replay waits for the store: %s", exc)
            return None
        except Exception as exc:  # not the store's answer: find the record(s) it comes from
            logger.warning("replay of %d records failed (%r), one by one", len(docs), exc)
            for index, doc in enumerate(docs):
                try:
                    await self.collection.insert_one(doc)
                except DuplicateKeyError:
                    duplicates.add(index)
                except WriteError as one:
                    refused[index] = ("refused", f"the store refused it: {one}")
                except PyMongoError as one:
                    logger.debug("replay waits for the store: %s", one)
                    return None
                except Exception as one:
                    refused[index] = ("unencodable", f"{type(one).__name__}: {one}")
        return refused, duplicates

    async def _dead_letter(self, dead: list[tuple[bytes, str, str]], spool_file: SpoolFile) -> None:
        await asyncio.to_thread(
            self.dead_letters.add,
            [(line, f"{kind}: {reason}") for line, kind, reason in dead],
            spool_file.path.name,
        )
        for _, kind, _ in dead:
            telemetry.SPOOL_DEAD_LETTERS.labels(reason=kind).inc()
        logger.error(
            "%d spooled records cannot be archived, moved to %s (first: %s: %s)",
            len(dead), self.dead_letters.path, dead[0][1], dead[0][2],
        )  # fmt: skip


def _record_error(exc: Exception) -> Exception:
    """What a request whose record failed alone is told: its input (422) or the store (503)."""
    if isinstance(exc, InputError | StoreError):
        return exc
    if isinstance(exc, _RECORD_ERRORS) and not isinstance(exc, PyMongoError):
        return InputError(f"the prediction cannot be archived ({exc}); nothing was stored")
    return StoreError(f"archive write failed: {exc}")

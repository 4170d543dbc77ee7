"""Several uvicorn workers in one replica (`serve --workers N`): a reload reaches every one.

A `PUT /reload` lands on ONE worker process. That worker loads and smoke-tests the model as a
single worker does, then records the version it now serves, per domain, in the replica's sync
folder (`var/workers/<replica>-<supervisor pid>/`, shared by the workers of one `serve` process
only, emptied when it starts). Every worker polls that folder about once a second and loads a
recorded version it does not serve yet; it also writes a heartbeat (its pid and the versions it
serves). `GET /version` reports this worker's pid and whether every worker of the replica serves
the same versions, which is what the pipeline's reload step waits for.

With one worker none of this runs: no folder, no task, no I/O beside the requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from machine_health.api.serving import LoadedModel, ModelHolder
from machine_health.config import Settings
from machine_health.errors import MachineHealthError
from machine_health.files import write_text_atomic
from machine_health.registry import Slot, slot_key
from machine_health.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

POLL_S = 1.0
STALE_S = 5.0  # a heartbeat older than this belongs to a dead (or stuck) worker
RETRY_S = 10.0  # a follower whose load failed tries the same version again after this


def sync_dir(settings: Settings, supervisor_pid: int) -> Path:
    """The folder the workers started by the `serve` process `supervisor_pid` share."""
    replica = "".join(c if c.isalnum() or c in "-_" else "_" for c in settings.replica_name)
    return settings.var_dir / "workers" / f"{replica}-{supervisor_pid}"


def prepare(settings: Settings, supervisor_pid: int) -> Path:
    """A fresh sync folder: nothing a previous `serve` with the same pid recorded is followed."""
    directory = sync_dir(settings, supervisor_pid)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def _write_json(path: Path, data: dict[str, Any]) -> None:
    # Atomic, and safe from two threads at once: a worker's heartbeat is written both by its
    # poll loop and by `record` after a reload.
    write_text_atomic(path, json.dumps(data))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class WorkerSync:
    """This worker's part: record the reloads it made, follow the others', beat its heart."""

    def __init__(
        self, holder: ModelHolder, directory: Path, expected: int, *, poll_s: float = POLL_S
    ) -> None:
        self.holder = holder
        self.directory = directory
        self.expected = expected
        self.poll_s = poll_s
        self.pid = os.getpid()
        self._heartbeat = directory / f"worker-{self.pid}.json"
        self._failed: dict[tuple[str, str], float] = {}  # (domain, version) -> monotonic time
        self._task: asyncio.Task[None] | None = None

    def _wanted_path(self, key: str) -> Path:
        return self.directory / f"wanted-{key}.json"

    def _keys(self) -> list[tuple[str, str, Slot]]:
        """(key, domain, slot) of every model a worker holds: `D` the champion, `D@shadow`."""
        return [
            (slot_key(d, slot), d, slot)
            for d in self.holder.domains
            for slot in ("champion", "shadow")
        ]

    def _holding(self, domain: str, slot: Slot) -> LoadedModel | None:
        return self.holder.loaded(domain) if slot == "champion" else self.holder.shadow(domain)

    def served(self) -> dict[str, str | None]:
        return {
            key: (m.ref.version if (m := self._holding(d, slot)) else None)
            for key, d, slot in self._keys()
        }

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)
        await self.follow()  # a worker (re)started after a reload serves what the others do
        await self.beat()
        self._task = asyncio.create_task(self._run(), name="worker-sync")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        self._heartbeat.unlink(missing_ok=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.follow()
                await self.beat()
            except OSError as exc:  # a full or read-only var/: keep serving, say why
                logger.warning("worker sync in %s failed: %s", self.directory, exc)

    # --- the leader's side: a reload this worker made ----------------------------------------
    async def record(self, results: list[dict[str, Any]]) -> None:
        """Record what `PUT /reload` swapped in here, for the other workers to follow."""
        for result in results:
            if result.get("refused"):
                continue
            slot, new = result.get("slot", "champion"), result["new"]
            key = slot_key(result["domain"], slot)
            wanted = {
                "version": new["version"] if new else None,
                "alias": new["alias"] if new else None,
                "by": self.pid,
            }
            await asyncio.to_thread(_write_json, self._wanted_path(key), wanted)
        await self.beat()

    # --- the followers' side ----------------------------------------------------------------
    async def follow(self) -> None:
        """Load every recorded version this worker does not serve yet (a recorded shadow of
        no version: drop the shadow)."""
        for key, domain, slot in self._keys():
            wanted = await asyncio.to_thread(_read_json, self._wanted_path(key))
            if not wanted:
                continue
            loaded = self._holding(domain, slot)
            if wanted.get("version") is None:
                if slot == "shadow" and loaded is not None:
                    await self.holder.drop_shadow(domain)
                continue
            version = str(wanted["version"])
            if loaded is not None and loaded.ref.version == version:
                continue
            failed_at = self._failed.get((key, version))
            if failed_at is not None and time.monotonic() - failed_at < RETRY_S:
                continue
            try:
                await self.holder.load(
                    domain, alias=None, version=version, served_alias=wanted.get("alias"),
                    slot=slot,
                )  # fmt: skip
            except MachineHealthError as exc:
                self._failed[(key, version)] = time.monotonic()
                logger.error("%s: cannot follow the reload to v%s: %s", key, version, exc)
            else:
                self._failed.pop((key, version), None)

    async def beat(self) -> None:
        beat = {"pid": self.pid, "at": time.time(), "models": self.served()}
        await asyncio.to_thread(_write_json, self._heartbeat, beat)

    # --- GET /version -----------------------------------------------------------------------
    def _status(self) -> dict[str, Any]:
        now = time.time()
        live: dict[str, dict[str, str | None]] = {}
        for path in self.directory.glob("worker-*.json"):
            beat = _read_json(path)
            if beat and now - float(beat.get("at", 0)) <= STALE_S:
                live[str(beat["pid"])] = beat.get("models") or {}
        live[str(self.pid)] = self.served()  # this worker: its state now, not its last beat
        wanted = {
            key: None if w.get("version") is None else str(w["version"])
            for key, _, _ in self._keys()
            if (w := _read_json(self._wanted_path(key)))
        }
        same = all(
            len({models.get(key) for models in live.values()}) == 1
            and (key not in wanted or next(iter(live.values())).get(key) == wanted[key])
            for key, _, _ in self._keys()
        )
        return {
            "expected": self.expected,
            "live": live,
            "wanted": wanted,
            "converged": len(live) >= self.expected and same,
        }

    async def status(self) -> dict[str, Any]:
        """The workers of this replica: who serves what, and whether they all agree."""
        return await asyncio.to_thread(self._status)

"""Fault harness of tests/reliability and bench/reliability.py: store, traffic, accounting.

A fault run starts its OWN embedded store (file-backed, so it survives a kill) and its own real
uvicorn API, sends a BOUNDED number of real predictions from paced concurrent clients, injects a
fault, waits until the spool is drained and then counts, by `prediction_id` in the store:

- sent: logical requests (each with its own `Idempotency-Key`); attempts: HTTP calls made;
- acknowledged: requests answered 200; archived: documents in the store; duplicates: documents
  beyond the first per `prediction_id`; missing: acknowledged but not archived; mismatched:
  archived with another output or model version than the client was told;
- failures: requests that never got a 200, by final status (a transport error is named).

A client retries a transport error or a 502/503/504 with the SAME key (what a well-behaved client
does): the key makes the retry return the first answer instead of archiving a second record, so
"archived exactly once" holds for every logical request, not only for the acknowledged ones.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient

from machine_health.config import Settings

RETRY_STATUSES = {502, 503, 504}


# --- the requests ---------------------------------------------------------------------------
@dataclass
class Planned:
    """One logical request: always the same body and key, however often it is retried."""

    index: int
    worker: int
    domain: str
    body: dict[str, Any]
    key: str


@dataclass
class Outcome:
    planned: Planned
    attempts: int = 0
    statuses: list[str] = field(default_factory=list)
    answer: dict[str, Any] | None = None
    sent_at: float = 0.0
    done_at: float = 0.0

    @property
    def final(self) -> str:
        return self.statuses[-1] if self.statuses else "not sent"

    @property
    def version(self) -> str | None:
        return self.answer["model"]["version"] if self.answer else None


def _turbofan_rows(data_dir: Path, units: int) -> list[list[dict[str, Any]]]:
    """Real C-MAPSS test cycles, in order, of the `units` longest FD001 test units."""
    from machine_health.domains.turbofan.data import SENSORS, SETTINGS, load_subset

    test = load_subset(data_dir, "FD001").test
    groups = sorted(test.groupby("unit", sort=True), key=lambda g: -len(g[1]))[:units]
    return [
        [
            {
                "cycle": int(r["cycle"]),
                "settings": [float(r[c]) for c in SETTINGS],
                "sensors": [float(r[c]) for c in SENSORS],
            }
            for _, r in rows.sort_values("cycle").iterrows()
        ]
        for _, rows in groups
    ]


def plan_requests(
    data_dir: Path, tag: str, *, total: int, workers: int, turbofan_workers: int
) -> list[list[Planned]]:
    """`total` real requests split over `workers` clients; the first `turbofan_workers` each send
    the cycles of their own turbofan units in order, the others real CWRU windows."""
    from machine_health.domains.vibration.demo import test_windows as vibration_windows

    windows = [w["body"] for w in vibration_windows(data_dir, 48)]
    units = _turbofan_rows(data_dir, max(1, turbofan_workers) * 3)
    per_worker: list[list[Planned]] = [[] for _ in range(workers)]
    cursors = {w: (w, 0) for w in range(turbofan_workers)}  # worker -> (unit index, row)
    for index in range(total):
        worker = index % workers
        key = f"{tag}-{index}"
        if worker < turbofan_workers:
            unit, row = cursors[worker]
            if row >= len(units[unit]):  # next unit of this worker: a fresh asset id
                unit, row = unit + turbofan_workers, 0
            cursors[worker] = (unit, row + 1)
            body = {**units[unit % len(units)][row], "unit_id": f"{tag}-unit{unit}"}
            per_worker[worker].append(Planned(index, worker, "turbofan", body, key))
        else:
            body = {**windows[index % len(windows)], "asset_id": f"{tag}-motor{worker}"}
            per_worker[worker].append(Planned(index, worker, "vibration", body, key))
    return per_worker


class Traffic:
    """Paced clients in a background thread; each sends its planned requests in order."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        plan: list[list[Planned]],
        *,
        rate: float,
        retry_for_s: float = 90.0,
    ) -> None:
        self.url, self.headers, self.plan = url, headers, plan
        self.rate, self.retry_for_s = rate, retry_for_s
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.started_at = 0.0

    def start(self) -> Traffic:
        self.started_at = time.monotonic()
        self._thread.start()
        return self

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise AssertionError(f"traffic did not finish within {timeout_s:.0f}s")

    def count(self, predicate: Callable[[Outcome], bool]) -> int:
        with self._lock:
            return sum(1 for o in self.outcomes if predicate(o))

    def acknowledged(self, archived: str | None = None) -> int:
        return self.count(
            lambda o: (
                o.answer is not None and (archived is None or o.answer["archived"] == archived)
            )
        )

    async def _send(self, client: httpx.AsyncClient, planned: Planned) -> Outcome:
        outcome = Outcome(planned, sent_at=time.monotonic())
        headers = {"Idempotency-Key": planned.key}
        deadline = outcome.sent_at + self.retry_for_s
        while True:
            outcome.attempts += 1
            try:
                response = await client.post(
                    f"/predict/{planned.domain}", json=planned.body, headers=headers
                )
            except httpx.TransportError as exc:
                outcome.statuses.append(type(exc).__name__)
            else:
                outcome.statuses.append(str(response.status_code))
                if response.status_code == 200:
                    outcome.answer = response.json()
                    break
                if response.status_code not in RETRY_STATUSES:
                    break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        outcome.done_at = time.monotonic()
        return outcome

    async def _worker(self, client: httpx.AsyncClient, requests: list[Planned]) -> None:
        interval = len(self.plan) / self.rate
        start = time.monotonic() + (requests[0].worker / self.rate if requests else 0)
        for n, planned in enumerate(requests):
            delay = start + n * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            outcome = await self._send(client, planned)
            with self._lock:
                self.outcomes.append(outcome)

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=60) as c:
            await asyncio.gather(*(self._worker(c, requests) for requests in self.plan))


# --- accounting ------------------------------------------------------------------------------
@dataclass
class Report:
    """The figures of one fault run and what broke the guarantees (empty when nothing)."""

    fault: str
    figures: dict[str, Any]
    violations: list[str]
    outcomes: list[Outcome] = field(repr=False, default_factory=list)


def archive_counts(uri: str, db_name: str) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
    """Documents per prediction_id, and one document (output, version) per id."""
    client: MongoClient = MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    try:
        coll = client[db_name]["predictions"]
        per_id = {
            str(row["_id"]): int(row["n"])
            for row in coll.aggregate([{"$group": {"_id": "$prediction_id", "n": {"$sum": 1}}}])
        }
        docs = {
            d["prediction_id"]: d
            for d in coll.find({}, {"_id": 0, "prediction_id": 1, "output": 1, "model_version": 1})
        }
    finally:
        client.close()
    return per_id, docs


def account(
    fault: str,
    outcomes: list[Outcome],
    store_uri: str,
    db_name: str,
    *,
    expected_failures: frozenset[str] | set[str] = frozenset(),
    elapsed_s: float = 0.0,
) -> Report:
    """Count what was sent, acknowledged and archived; list every broken guarantee."""
    per_id, docs = archive_counts(store_uri, db_name)
    acked = [o for o in outcomes if o.answer is not None]
    failed = [o for o in outcomes if o.answer is None]
    acked_ids = [o.answer["prediction_id"] for o in acked]  # type: ignore[index]
    duplicates = sum(n - 1 for n in per_id.values() if n > 1)
    missing = [pid for pid in acked_ids if pid not in per_id]
    extra = set(per_id) - set(acked_ids)
    mismatched = [
        o.planned.key
        for o in acked
        if (doc := docs.get(o.answer["prediction_id"]))  # type: ignore[index]
        and (doc["output"] != o.answer["prediction"] or doc["model_version"] != o.version)  # type: ignore[index]
    ]
    transient = Counter(s for o in outcomes for s in o.statuses[:-1] if s != "200")
    figures: dict[str, Any] = {
        "sent": len(outcomes),
        "attempts": sum(o.attempts for o in outcomes),
        "acknowledged": len(acked),
        "acknowledged_spooled": sum(1 for o in acked if o.answer["archived"] == "spooled"),  # type: ignore[index]
        "idempotent_replays": sum(1 for o in acked if o.answer.get("idempotent_replay")),  # type: ignore[union-attr]
        "archived": sum(per_id.values()),
        "duplicates": duplicates,
        "missing": len(missing),
        "archived_not_acknowledged": len(extra),
        "mismatched": len(mismatched),
        "failures": dict(Counter(o.final for o in failed)),
        "retried": sum(1 for o in outcomes if o.attempts > 1),
        "transient_statuses": dict(transient),
        "versions": dict(Counter(o.version for o in acked)),
        "elapsed_s": round(elapsed_s, 1),
    }
    violations = []
    if len(set(acked_ids)) != len(acked_ids):
        violations.append("two logical requests got the same prediction_id")
    if duplicates:
        violations.append(f"{duplicates} duplicate archive records")
    if missing:
        violations.append(f"{len(missing)} acknowledged predictions are not archived")
    if extra:
        violations.append(f"{len(extra)} archived records no client was given")
    if mismatched:
        violations.append(f"{len(mismatched)} archived records differ from the answer")
    unexpected = [o.final for o in failed if o.final not in expected_failures]
    if unexpected:
        violations.append(f"unexpected failures: {dict(Counter(unexpected))}")
    return Report(fault, figures, violations, outcomes)


def version_sequences(outcomes: list[Outcome], domain: str) -> dict[int, list[str]]:
    """Per client, the model versions it was answered with, consecutive repeats collapsed."""
    by_worker: dict[int, list[str]] = {}
    for o in sorted(outcomes, key=lambda o: o.planned.index):
        if o.planned.domain == domain and o.version is not None:
            seq = by_worker.setdefault(o.planned.worker, [])
            if not seq or seq[-1] != o.version:
                seq.append(o.version)
    return by_worker


def moves_only_along(sequences: dict[int, list[str]], path: list[str]) -> list[str]:
    """Violations: a client whose versions are not a contiguous part of `path` (e.g. 1, 2, 1)."""
    bad = []
    for worker, seq in sequences.items():
        ok = any(path[i : i + len(seq)] == seq for i in range(len(path) - len(seq) + 1))
        if not ok:
            bad.append(f"client {worker} saw versions {seq}, not along {path}")
    return bad


# --- waiting ---------------------------------------------------------------------------------
def service_headers(settings: Settings) -> dict[str, str]:
    assert settings.service_token is not None
    return {"Authorization": f"Bearer {settings.service_token.get_secret_value()}"}

"""The archive `bench/scale.py` grows: a plant's predictions, built from REAL data and bulk-loaded
through the repository (`PredictionRecord(...).to_document()`, `insert_many` in chunks, the
archive counters fed with `counters.count_inserted` for every chunk).

The plant, one tick a minute (so the stream is in time order, 143 documents a tick):

- 100 motors (vibration), one CWRU window a minute each (2048 float32 samples at 48 kHz, the
  window's real rpm); each motor carries one class of recording (normal, inner race, outer race,
  ball) and cycles through that class's windows. 12 % of the windows are labelled by feedback
  (the window's true class) 30 minutes after the prediction.
- 150 engine slots (turbofan), 43 cycles a tick in round robin: each slot runs a C-MAPSS FD001
  training unit's run-to-failure history (real rows, at most 360 cycles), then a NEW unit id.
  40 % of the engines get their failure reported: every cycle labelled with its true RUL
  (`failure-derived`) at the failure's time, when that lies inside the timeline.
- Back-fill subjects: engines a stage asks for (`Plant.add_subjects`) run first, 200 cycles
  each and unlabelled: POST /assets/{unit}/failure is then measured on them. They are part of
  the 43 turbofan cycles a tick, so the mix stays 100:43 (69.9 % vibration by count).

Ids and choices come from one seeded PRNG: the same sizes give the same archive.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from machine_health.archive import counters, keys
from machine_health.archive.client import PREDICTIONS, async_client
from machine_health.archive.records import PredictionRecord, encode_samples
from machine_health.config import Settings

MOTORS = 100
ENGINE_SLOTS = 150
TURBOFAN_PER_TICK = 43
PER_TICK = MOTORS + TURBOFAN_PER_TICK
TICK_MS = 60_000
MAX_LIFE = 360
VIBRATION_LABELLED = 0.12
ENGINES_REPORTED = 0.40
FEEDBACK_DELAY = timedelta(minutes=30)
SUBJECT_CYCLES = 200
CHUNK = 2000
CLASSES = ("normal", "inner_race", "outer_race", "ball")

MIX = {
    "vibration_share_by_count": MOTORS / PER_TICK,
    "turbofan_share_by_count": TURBOFAN_PER_TICK / PER_TICK,
    "motors": MOTORS,
    "vibration": "one real CWRU 48 kHz drive-end window (2048 float32 samples, 8 KiB) a minute "
    "per motor; 10 % labelled by feedback (the window's class) 30 min after",
    "engine_slots": ENGINE_SLOTS,
    "turbofan": f"{TURBOFAN_PER_TICK} cycles a minute over {ENGINE_SLOTS} engine slots, real "
    "C-MAPSS FD001 training histories (<= 360 cycles, then a new unit id); 40 % of the engines "
    "get a failure: every cycle labelled with its true RUL at the failure's time",
    "backfill_subjects": f"{SUBJECT_CYCLES}-cycle unlabelled engines run first at each stage "
    "(inside the turbofan share), the units POST /assets/{unit}/failure is measured on",
}


@dataclass
class Engine:
    unit_id: str
    rows: list[tuple[list[float], list[float]]]  # (settings, sensors) per cycle, from cycle 1
    life: int
    reported: bool  # its failure is reported (labels) when inside the timeline
    subject: bool = False
    next_cycle: int = 1
    failure_ms: int | None = None

    @property
    def done(self) -> bool:
        return self.next_cycle > self.life


@dataclass
class Plant:
    """The document stream (time order) and what the measurements need to know about it."""

    windows: np.ndarray  # (n, 2048) float32
    window_labels: list[str]
    window_rpm: list[float]
    sample_rate: float
    fd001: list[list[tuple[list[float], list[float]]]]  # per FD001 unit, its rows
    t0_ms: int
    t_end_ms: int  # the timeline's last tick: failures later than this are not reported
    seed: int = 0
    rng: random.Random = field(init=False)
    tick: int = 0
    emitted: int = 0
    by_domain: collections.Counter[str] = field(default_factory=collections.Counter)
    labelled: collections.Counter[str] = field(default_factory=collections.Counter)
    engines: dict[str, Engine] = field(default_factory=dict)
    slots: list[Engine] = field(default_factory=list)
    subjects: list[Engine] = field(default_factory=list)
    #: the newest unlabelled vibration predictions: (prediction_id, class)
    unlabelled_vibration: collections.deque[tuple[str, str]] = field(
        default_factory=lambda: collections.deque(maxlen=40_000)
    )
    last_created_ms: int = 0
    _engine_no: int = 0
    _slot_turn: int = 0
    _motor_windows: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        by_class = {c: np.flatnonzero(np.asarray(self.window_labels) == c) for c in CLASSES}
        self._motor_windows = [by_class[CLASSES[m % len(CLASSES)]] for m in range(MOTORS)]
        self._payloads = [encode_samples(w) for w in self.windows]  # 8 KiB each, shared
        self.slots = [self._new_engine() for _ in range(ENGINE_SLOTS)]

    # --- engines --------------------------------------------------------------------------
    def _new_engine(self, *, subject: bool = False) -> Engine:
        self._engine_no += 1
        if subject:
            long = [r for r in self.fd001 if len(r) >= SUBJECT_CYCLES]
            rows = long[self._engine_no % len(long)]
            unit = f"fd001-bf-{self._engine_no:06d}"
            engine = Engine(unit, rows, SUBJECT_CYCLES, reported=False, subject=True)
        else:
            rows = self.fd001[self._engine_no % len(self.fd001)]
            unit = f"fd001-e{self._engine_no:06d}"
            reported = self.rng.random() < ENGINES_REPORTED
            engine = Engine(unit, rows, min(len(rows), MAX_LIFE), reported=reported)
        self.engines[unit] = engine
        return engine

    def add_subjects(self, n: int) -> list[str]:
        """`n` back-fill subjects, emitted before the slot engines (SUBJECT_CYCLES each)."""
        new = [self._new_engine(subject=True) for _ in range(n)]
        self.subjects += new
        return [e.unit_id for e in new]

    def _next_engine(self) -> Engine:
        while self.subjects and self.subjects[0].done:
            self.subjects.pop(0)
        if self.subjects:  # round robin over the pending subjects
            engine = self.subjects.pop(0)
            self.subjects.append(engine)
            return engine
        slot = self._slot_turn % ENGINE_SLOTS
        self._slot_turn += 1
        if self.slots[slot].done:
            self.slots[slot] = self._new_engine()
        return self.slots[slot]

    def active_units(self) -> list[Engine]:
        """Engines of the slots still running, the most archived cycles first."""
        running = [e for e in self.slots if not e.done and e.next_cycle > 1]
        return sorted(running, key=lambda e: -e.next_cycle)

    # --- documents --------------------------------------------------------------------------
    def _record(self, **fields: Any) -> dict[str, Any]:
        pid = f"{self.rng.getrandbits(128):032x}"
        doc = PredictionRecord(
            prediction_id=pid,
            model_version="1",
            model_alias="champion",
            user="plant-gateway",
            request_id=f"{self.rng.getrandbits(64):016x}",
            latency_ms=round(self.rng.uniform(2.0, 12.0), 3),
            **fields,
        ).to_document()
        # the label's key, as set_label / backfill_failure write it (to_document sets the
        # same since 26aa9a2; set here too, so the archive is the same with earlier versions)
        if doc.get("label") is not None:
            ms = keys.epoch_ms(doc["labelled_at"])
            doc["label_key"] = keys.label_key(doc["domain"], ms, pid)
            self.labelled[doc["domain"]] += 1
        self.by_domain[doc["domain"]] += 1
        return doc

    def _vibration(self, motor: int, created: datetime) -> dict[str, Any]:
        choices = self._motor_windows[motor]
        k = int(choices[(self.tick * 7 + motor * 13) % len(choices)])
        true = self.window_labels[k]
        probs = {c: 0.02 for c in CLASSES}
        probs[true] = 0.94
        labelled = self.rng.random() < VIBRATION_LABELLED
        doc = self._record(
            domain="vibration",
            asset_id=f"motor-{motor:03d}",
            model_name="machine-health-vibration",
            input={
                "asset_id": f"motor-{motor:03d}",
                "samples": self._payloads[k],
                "sample_rate": self.sample_rate,
                "rpm": self.window_rpm[k],
                "channel": "accelerometer",
                "n_samples": int(self.windows.shape[1]),
            },
            output={
                "anomaly_score": round(self.rng.uniform(0.1, 3.0), 4),
                "is_anomaly": true != "normal",
                "threshold": 1.0,
                "fault_class": true,
                "probabilities": probs,
            },
            created_at=created,
            **(
                {
                    "label": true,
                    "labelled_at": created + FEEDBACK_DELAY,
                    "label_source": "feedback",
                    "labelled_by": "inspector",
                }
                if labelled
                else {}
            ),
        )
        if not labelled:
            self.unlabelled_vibration.append((doc["prediction_id"], true))
        return doc

    def _turbofan(self, engine: Engine, created: datetime, tick_ms: int) -> dict[str, Any]:
        cycle = engine.next_cycle
        engine.next_cycle += 1
        settings, sensors = engine.rows[cycle - 1]
        true_rul = engine.life - cycle
        if engine.failure_ms is None:  # when its last cycle will come, at this slot's pace
            pace = ENGINE_SLOTS / TURBOFAN_PER_TICK * TICK_MS
            engine.failure_ms = tick_ms + int((engine.life - cycle) * pace) + 10 * TICK_MS
        label = {}
        if engine.reported and engine.failure_ms <= self.t_end_ms:
            label = {
                "label": float(true_rul),
                "labelled_at": datetime.fromtimestamp(engine.failure_ms / 1000, UTC),
                "label_source": "failure",
                "labelled_by": "maintenance",
            }
        predicted = max(0.0, min(125.0, true_rul) + self.rng.gauss(0.0, 12.0))
        return self._record(
            domain="turbofan",
            asset_id=engine.unit_id,
            cycle=cycle,
            model_name="machine-health-turbofan",
            input={
                "unit_id": engine.unit_id,
                "cycle": cycle,
                "settings": settings,
                "sensors": sensors,
            },
            output={
                "rul": round(predicted, 3),
                "cycles_in_window": min(cycle, 30),
                "regime": 0,
                "novelty": {
                    "novel": False,
                    "score": round(self.rng.uniform(0.1, 0.9), 3),
                    "reasons": [],
                },
            },
            created_at=created,
            **label,
        )

    def stream(self) -> Iterator[dict[str, Any]]:
        """Documents forever, in creation order (one tick: motors, then engine cycles)."""
        while True:
            tick_ms = self.t0_ms + self.tick * TICK_MS
            for motor in range(MOTORS):
                created = datetime.fromtimestamp((tick_ms + motor * 300) / 1000, UTC)
                self.last_created_ms = tick_ms + motor * 300
                yield self._vibration(motor, created)
            for j in range(TURBOFAN_PER_TICK):
                ms = tick_ms + 30_000 + j * 600
                self.last_created_ms = ms
                yield self._turbofan(
                    self._next_engine(), datetime.fromtimestamp(ms / 1000, UTC), tick_ms
                )
            self.tick += 1

    def take(self, stream: Iterator[dict[str, Any]], n: int) -> list[dict[str, Any]]:
        out = [next(stream) for _ in range(n)]
        self.emitted += n
        return out


def build_plant(settings: Settings, max_size: int, end: datetime, seed: int = 0) -> Plant:
    """The plant over a timeline that ends at `end` after `max_size` documents."""
    from machine_health.domains.turbofan.data import SENSORS, SETTINGS, load_subset
    from machine_health.domains.vibration import workflow

    windows = workflow.load_portion(settings.data_dir, "train", hop=workflow.WINDOW)
    train = load_subset(settings.data_dir, "FD001").train
    fd001 = []
    for _, group in train.groupby("unit"):
        group = group.sort_values("cycle")
        fd001.append(
            [
                ([float(v) for v in row[list(SETTINGS)]], [float(v) for v in row[list(SENSORS)]])
                for _, row in group.iterrows()
            ]
        )
    ticks = math.ceil(max_size / PER_TICK) + 1
    end_ms = keys.epoch_ms(end)
    return Plant(
        windows=np.asarray(windows.windows, dtype="<f4"),
        window_labels=[str(x) for x in windows.labels],
        window_rpm=[float(x) for x in windows.rpm],
        sample_rate=float(windows.sample_rate),
        fd001=fd001,
        t0_ms=end_ms - ticks * TICK_MS,
        t_end_ms=end_ms,
        seed=seed,
    )


async def _load(settings: Settings, plant: Plant, n: int) -> dict[str, float]:
    """`n` more documents: insert_many of CHUNK, then count_inserted of the chunk; the next
    chunk is built in a thread meanwhile. Seconds spent per part."""
    client = async_client(settings)
    db = client[settings.mongodb_db]
    stream = plant._stream  # type: ignore[attr-defined]
    spent = {"build_wait_s": 0.0, "insert_s": 0.0, "counters_s": 0.0}
    try:
        left = n
        pending = asyncio.create_task(asyncio.to_thread(plant.take, stream, min(CHUNK, left)))
        while left > 0:
            started = time.perf_counter()
            batch = await pending
            spent["build_wait_s"] += time.perf_counter() - started
            left -= len(batch)
            if left > 0:
                pending = asyncio.create_task(
                    asyncio.to_thread(plant.take, stream, min(CHUNK, left))
                )
            started = time.perf_counter()
            await db[PREDICTIONS].insert_many(batch, ordered=False)
            spent["insert_s"] += time.perf_counter() - started
            started = time.perf_counter()
            await counters.count_inserted(db, batch)
            spent["counters_s"] += time.perf_counter() - started
    finally:
        await client.close()
    return spent


def grow(settings: Settings, plant: Plant, n: int) -> dict[str, Any]:
    """Load `n` more documents; the stage's rate and where the time went."""
    if not hasattr(plant, "_stream"):
        plant._stream = plant.stream()  # type: ignore[attr-defined]
    before = collections.Counter(plant.by_domain)
    before_labelled = collections.Counter(plant.labelled)
    started = time.perf_counter()
    spent = asyncio.run(_load(settings, plant, n))
    seconds = time.perf_counter() - started
    return {
        "docs": n,
        "seconds": round(seconds, 1),
        "docs_per_s": round(n / seconds, 1),
        **{k: round(v, 1) for k, v in spent.items()},
        "by_domain": dict(plant.by_domain - before),
        "labelled": dict(plant.labelled - before_labelled),
    }

"""The shadow lane's promises, with bundles that misbehave on purpose: a shadow that is slow, that
raises on one item, that answers NaN, or that is swamped never fails or delays an answer beyond
the budget; each archived result says what happened (`late`, `error`, `skipped`).

The bundles below are real `ModelBundle` implementations (scoring is arithmetic on the item);
they are set into the holder directly because the registry only loads the project's own domain
bundles. The lane, the batcher and the budgeted wait are the serving code itself.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from machine_health.api.serving import LoadedModel, MicroBatcher, ModelHolder
from machine_health.api.shadow import ShadowLane, shadow_result
from machine_health.config import Settings
from machine_health.domains.base import ModelBundle
from machine_health.registry import ModelRef


class Doubler(ModelBundle):
    """Scores x as 2x; `delay_s` per call; raises on x == `bad`; NaN on x == `nan`."""

    domain = "vibration"

    def __init__(self, delay_s: float = 0.0, bad: float | None = None, nan: float | None = None):
        self.delay_s, self.bad, self.nan = delay_s, bad, nan

    def predict(self, inputs: Sequence[Any]) -> list[dict[str, Any]]:
        time.sleep(self.delay_s)
        if self.bad is not None and self.bad in inputs:
            raise ValueError(f"cannot score {self.bad}")
        return [{"y": math.nan if x == self.nan else 2.0 * x} for x in inputs]

    def smoke_inputs(self) -> list[Any]:
        return [1.0]

    def save_files(self, path: Path) -> None:  # never saved: set into the holder directly
        raise NotImplementedError

    @classmethod
    def load_files(cls, path: Path) -> ModelBundle:
        raise NotImplementedError


def _loaded(bundle: ModelBundle, version: str) -> LoadedModel:
    ref = ModelRef(name="m", version=version, alias=None, run_id="r", source="s")
    return LoadedModel("vibration", bundle, ref, datetime.now(UTC))


def _holder(champion: ModelBundle, shadow: ModelBundle) -> ModelHolder:
    holder = ModelHolder(Settings(_env_file=None, env="test"), ["vibration"])
    holder._models["vibration"] = _loaded(champion, "1")
    holder._shadows["vibration"] = _loaded(shadow, "2")
    return holder


async def _scored(shadow: ModelBundle, items: list[float], budget_s: float, **lane: Any) -> tuple:
    holder = _holder(Doubler(), shadow)
    shadow_lane = ShadowLane(holder, "vibration", max_batch=8, max_queue=lane.get("max_queue", 64))
    batcher = MicroBatcher(holder, "vibration", max_batch=8, shadow_lane=shadow_lane)
    batcher.start()
    shadow_lane.start()
    try:
        started = time.perf_counter()
        scored = await asyncio.gather(*(batcher.predict(x, shadow=True) for x in items))
        results = await asyncio.gather(
            *(shadow_result(s.shadow, s.shadow_model, budget_s, "vibration") for s in scored)
        )
        return scored, results, time.perf_counter() - started
    finally:
        await batcher.close()
        await shadow_lane.close()


def test_a_slow_shadow_is_late_and_never_delays_beyond_the_budget() -> None:
    scored, results, seconds = asyncio.run(_scored(Doubler(delay_s=1.0), [1.0, 2.0], 0.05))
    assert [s.output for s in scored] == [{"y": 2.0}, {"y": 4.0}]  # the champion answers
    assert {r["status"] for r in results} == {"late"}
    assert all(r["model_version"] == "2" for r in results)
    assert seconds < 0.9  # the answers did not wait for the shadow's second


def test_a_shadow_that_raises_or_gives_nan_fails_no_answer() -> None:
    shadow = Doubler(bad=3.0, nan=4.0)
    scored, results, _ = asyncio.run(_scored(shadow, [1.0, 3.0, 4.0, 5.0], 5.0))
    assert [s.output["y"] for s in scored] == [2.0, 6.0, 8.0, 10.0]
    by_item = dict(zip([1.0, 3.0, 4.0, 5.0], results, strict=True))
    assert by_item[1.0] == {"model_name": "m", "model_version": "2", "status": "ok",
                            "output": {"y": 2.0}}  # fmt: skip
    assert by_item[3.0]["status"] == "error" and "cannot score 3.0" in by_item[3.0]["reason"]
    assert by_item[4.0] == {"model_name": "m", "model_version": "2", "status": "error",
                            "reason": "non-finite output"}  # fmt: skip
    assert by_item[5.0]["status"] == "ok"  # one bad item fails none of its batch


def test_a_swamped_shadow_skips_at_once() -> None:
    items = [float(i) for i in range(8)]
    scored, results, _ = asyncio.run(_scored(Doubler(delay_s=0.3), items, 2.0, max_queue=2))
    assert [s.output["y"] for s in scored] == [2 * x for x in items]
    statuses = [r["status"] for r in results]
    assert statuses.count("skipped") >= 5, statuses  # room for 2 waiting: the rest skip
    assert "ok" in statuses

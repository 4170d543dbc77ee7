"""The turbofan demo traffic: C-MAPSS test units, cycle by cycle in order (units in parallel);
when a unit's series ends, its failure cycle (last cycle + the true RUL of RUL_FD00x) is posted,
which back-fills the true RUL of every archived cycle of that unit."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from rich.progress import Progress

from machine_health.domains.turbofan.data import SENSORS, SETTINGS, load_subset
from machine_health.simulate import ReplayOptions, Tally, post_label, post_prediction

DOMAIN = "turbofan"


def test_units(data_dir: Path, subset: str, units: int) -> list[tuple[int, Any, float]]:
    """(unit number, its test cycles in order, true RUL after the last cycle) for `units` units."""
    data = load_subset(data_dir, subset)
    true_rul = dict(zip(data.test_units.tolist(), data.rul.tolist(), strict=True))
    out = []
    for unit, rows in list(data.test.groupby("unit", sort=True))[:units]:
        out.append((int(unit), rows.sort_values("cycle"), float(true_rul[unit])))
    return out


async def replay(
    client: httpx.AsyncClient, data_dir: Path, options: ReplayOptions, tally: Tally,
    progress: Progress,
) -> None:  # fmt: skip
    subset, tag = options.subset, options.tag
    chosen = test_units(data_dir, subset, options.units)
    task = progress.add_task("turbofan cycles", total=sum(len(rows) for _, rows, _ in chosen))

    async def one_unit(unit: int, rows: Any, true_rul: float) -> None:
        unit_id = f"{subset}-{tag}-u{unit:03d}"
        last_cycle = 0
        for row in rows.itertuples(index=False):
            body = {
                "unit_id": unit_id,
                "cycle": int(row.cycle),
                "settings": [float(getattr(row, c)) for c in SETTINGS],
                "sensors": [float(getattr(row, c)) for c in SENSORS],
            }
            await post_prediction(client, DOMAIN, body, tally)
            last_cycle = int(row.cycle)
            progress.advance(task)
        failure = {"failure_cycle": last_cycle + int(true_rul)}
        await post_label(client, f"/assets/{unit_id}/failure", failure, tally, "failure")

    await asyncio.gather(*(one_unit(u, rows, rul) for u, rows, rul in chosen))

"""The real data sets, as the API's requests."""

from __future__ import annotations

from typing import Any


def turbofan_rows(data_dir: Any, units: int, cycles: int) -> dict[int, list[dict[str, Any]]]:
    """The first `cycles` cycles of the first `units` units of test_FD001, as request rows."""
    from machine_health.domains.turbofan.data import SENSORS, SETTINGS, load_subset

    test = load_subset(data_dir, "FD001").test
    out: dict[int, list[dict[str, Any]]] = {}
    for unit, rows in list(test.groupby("unit", sort=True))[:units]:
        out[int(unit)] = [
            {
                "cycle": int(r["cycle"]),
                "settings": [float(r[c]) for c in SETTINGS],
                "sensors": [float(r[c]) for c in SENSORS],
            }
            for _, r in rows.sort_values("cycle").head(cycles).iterrows()
        ]
    return out

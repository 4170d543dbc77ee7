"""`TurbofanBundle`: the fitted feature transform + the trained model(s), saved as one directory.

Files: `transform.json` (regimes, dropped sensors, per-regime scaling, window, RUL cap),
`members.json` + `member_<i>.keras` / `member_<i>.skops` (the estimators, their scoring params and
the ensemble's member weights, learned on validation; none saved = the plain mean), `smoke.json`
(a few real unit histories kept from training).
"""

from __future__ import annotations

import json
import logging
import operator
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from machine_health.domains.base import ModelBundle
from machine_health.domains.turbofan.features import VALUE_COLUMNS, FeatureTransform
from machine_health.domains.turbofan.models import Fitted, predict_member
from machine_health.errors import InputError, ModelError

logger = logging.getLogger(__name__)

History = pd.DataFrame | Sequence[dict[str, Any]]
_row_values = operator.itemgetter(*VALUE_COLUMNS)


class HistoryRow(dict[str, Any]):
    """One cycle as a history row (a dict of its columns) that also holds its `VALUE_COLUMNS`
    as float64, computed once when the row is made.

    The API keeps a unit's last cycles in memory and scores them again at every new cycle:
    stacking the rows' arrays costs a tenth of reading 100 x 25 dict entries each time. Rows are
    never modified after they are made (the array would no longer match).
    """

    __slots__ = ("values",)

    def __init__(self, columns: dict[str, Any]) -> None:
        super().__init__(columns)
        self.values = np.array(_row_values(self), dtype="float64")


def history_values(history: History, last: int) -> np.ndarray:
    """The last `last` rows of one unit's history as `(rows, VALUE_COLUMNS)` float64.

    InputError when it cannot be scored: no cycle, a missing column, a non-number, NaN/inf, or
    cycles that do not strictly increase.
    """
    if isinstance(history, pd.DataFrame):
        table: Any = history.tail(last)
        missing = [c for c in VALUE_COLUMNS if c not in history.columns]
    else:
        table = list(history)[-last:]
        missing = []
    if len(table) == 0:
        raise InputError("a unit history must hold at least one cycle")
    if missing:
        raise InputError(f"unit history lacks columns: {', '.join(missing)}")
    try:
        if isinstance(table, pd.DataFrame):
            values = table[VALUE_COLUMNS].to_numpy(dtype="float64")
        else:
            if all(isinstance(row, HistoryRow) for row in table):  # the API's cached rows
                # concatenate + reshape: a third of np.stack's cost for 100 rows
                values = np.concatenate([row.values for row in table]).reshape(len(table), -1)
            else:  # itemgetter reads a row's columns in C
                values = np.array([_row_values(row) for row in table], dtype="float64")
    except KeyError:
        missing = sorted({c for row in table for c in VALUE_COLUMNS if c not in row},
                         key=VALUE_COLUMNS.index)  # fmt: skip
        raise InputError(f"unit history lacks columns: {', '.join(missing)}") from None
    except (TypeError, ValueError) as exc:
        raise InputError(f"unit history holds a value that is not a number: {exc}") from exc
    if not np.isfinite(values).all():
        raise InputError("unit history holds NaN or infinite values")
    if (np.diff(values[:, 0]) <= 0).any():
        raise InputError("cycles of a unit history must strictly increase (last row = scored)")
    return values


class TurbofanBundle(ModelBundle):
    """Feature transform + model(s) of the turbofan RUL domain.

    `predict(batch)` takes a sequence of unit histories. Each history is ONE unit's cycles in
    cycle order, as a pandas DataFrame or a list of dicts, with the columns `unit`, `cycle`,
    `setting_1`..`setting_3`, `sensor_1`..`sensor_21` (extra columns are ignored). The LAST row is
    the cycle to score; only the last `window` rows are used, and a shorter history is padded by
    repeating its first row. It returns one dict per history:
    `{"rul": float, "cycles_in_window": int, "regime": int, "novelty": {...}}` (`rul` in
    cycles, >= 0; `novelty`: `{"novel": bool, "score": float, "reasons": [str]}`, whether the
    window is outside what training showed, `features.FeatureTransform.novelty`; absent for a
    bundle saved before novelty thresholds were fitted). A novel unit is still scored: the
    flag tells the client (and the archive, which keeps the answer) not to trust it blindly.
    The whole batch goes through each estimator in ONE call.
    """

    domain: ClassVar[str] = "turbofan"

    def __init__(
        self,
        transform: FeatureTransform,
        members: list[Fitted],
        *,
        model_name: str,
        smoke: list[list[dict[str, Any]]] | None = None,
        facts: dict[str, Any] | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        if not members:
            raise ModelError("a turbofan bundle needs at least one estimator")
        if weights is not None:
            weights = [float(w) for w in weights]
            if len(weights) != len(members) or min(weights) < 0 or not sum(weights) > 0:
                raise ModelError(
                    f"member weights {weights} do not fit {len(members)} members "
                    "(one non-negative weight each, not all zero)"
                )
            total = sum(weights)
            weights = [w / total for w in weights]
        self.weights: list[float] | None = weights
        self.transform = transform
        self.members = members
        self.model_name = model_name
        self.smoke = smoke or []
        self.facts = facts or {}

    @property
    def window(self) -> int:
        return self.transform.window

    @property
    def cap(self) -> float:
        return self.transform.cap

    # --- scoring --------------------------------------------------------------------------
    def predict_windows(self, windows: np.ndarray) -> np.ndarray:
        """RUL in cycles for windows `(n, window, features)`: the members' weighted mean (the
        weights learned on validation; plain mean without), clipped at 0."""
        features: dict[tuple[int, ...], np.ndarray] = {}  # computed once for all members
        scaled = np.average(
            [predict_member(m, windows, features) for m in self.members],
            axis=0, weights=self.weights,
        )  # fmt: skip
        return np.clip(scaled * self.cap, 0.0, None)

    def predict(self, inputs: Sequence[History]) -> list[dict[str, Any]]:
        """Score the LAST cycle of every unit history (format in the class docstring)."""
        if len(inputs) == 0:
            return []
        histories = [history_values(h, self.transform.history_cycles) for h in inputs]
        windows, regimes, novelty = self.transform.scored_windows(histories)
        rul = self.predict_windows(windows)
        out = [
            {"rul": float(r), "cycles_in_window": min(len(h), self.window), "regime": int(g)}
            for r, h, g in zip(rul, histories, regimes, strict=True)
        ]
        if novelty is not None:
            for answer, found in zip(out, novelty, strict=True):
                answer["novelty"] = found
        return out

    def explain(
        self, inputs: Sequence[History], outputs: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Per unit history, the sensors whose recent trends moved its RUL most, in cycles, and
        its regime (`explain.explain`: the trend of each sensor removed from the window and the
        window scored again, every variant of the batch in one `predict_windows` call)."""
        from machine_health.domains.turbofan.explain import explain

        return explain(self, inputs, outputs)

    def smoke_inputs(self) -> list[list[dict[str, Any]]]:
        return [list(h) for h in self.smoke]

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "members": [m.name for m in self.members],
            "weights": self.weights,
            "window": self.window,
            "rul_cap": self.cap,
            "regimes": self.transform.n_regimes,
            "sensors": self.transform.sensors,
            "dropped_sensors": self.transform.dropped,
            **self.facts,
        }

    # --- persistence ----------------------------------------------------------------------
    def save_files(self, path: Path) -> None:
        (path / "transform.json").write_text(json.dumps(self.transform.to_dict(), indent=1))
        index = []
        for i, member in enumerate(self.members):
            if member.kind == "keras":
                file = f"member_{i}.keras"
                member.estimator.save(path / file)
            else:
                import skops.io as sio

                file = f"member_{i}.skops"
                sio.dump(member.estimator, path / file)
            index.append(
                {"name": member.name, "kind": member.kind, "file": file, "params": member.params}
            )
        meta = {"model_name": self.model_name, "members": index, "facts": self.facts,
                "weights": self.weights}  # fmt: skip
        (path / "members.json").write_text(json.dumps(meta, indent=1, default=str))
        (path / "smoke.json").write_text(json.dumps(self.smoke))

    @classmethod
    def load_files(cls, path: Path) -> TurbofanBundle:
        transform = FeatureTransform.from_dict(json.loads((path / "transform.json").read_text()))
        meta = json.loads((path / "members.json").read_text())
        members = []
        for entry in meta["members"]:
            file = path / entry["file"]
            if entry["kind"] == "keras":
                import keras

                estimator = keras.saving.load_model(file, compile=False)
            elif entry["kind"] == "sklearn":
                estimator = _load_skops(file)
            else:
                raise ModelError(f"{file}: unknown estimator kind {entry['kind']!r}")
            members.append(Fitted(entry["name"], entry["kind"], estimator, history={},
                                  params=entry.get("params") or {}))  # fmt: skip
        smoke = json.loads((path / "smoke.json").read_text())
        return cls(
            transform, members, model_name=meta["model_name"], smoke=smoke, facts=meta["facts"],
            weights=meta.get("weights"),
        )  # fmt: skip


def _load_skops(file: Path) -> Any:
    """Load a scikit-learn estimator holding only allow-listed types (`skops_types.ALLOWED`)."""
    from machine_health.domains.skops_types import load_skops

    return load_skops(file)

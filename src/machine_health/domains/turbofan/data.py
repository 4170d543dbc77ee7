"""C-MAPSS files: loading with validation, RUL targets, the unit-wise split, cycle order checks.

A subset FD00x is three whitespace-separated files in one folder, plain or gzip-compressed:
`train_FD00x.txt[.gz]` (run-to-failure histories), `test_FD00x.txt[.gz]` (histories cut before
failure) and `RUL_FD00x.txt[.gz]` (true RUL after the last test cycle, line i = test unit i).
Rows have 26 numbers: unit, cycle, setting_1..setting_3, sensor_1..sensor_21.
"""

from __future__ import annotations

import gzip
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from machine_health.domains.sequence import check_next_cycle  # noqa: F401 - re-exported
from machine_health.errors import DataError

logger = logging.getLogger(__name__)

SETTINGS = [f"setting_{i}" for i in range(1, 4)]
SENSORS = [f"sensor_{i}" for i in range(1, 22)]
COLUMNS = ["unit", "cycle", *SETTINGS, *SENSORS]
SUBSETS = ("FD001", "FD002", "FD003", "FD004")
_SUBSET_RE = re.compile(r"^FD00[1-4]$")


@dataclass(frozen=True)
class Subset:
    """One C-MAPSS subset: training and test histories and the test units' true final RUL."""

    name: str
    train: pd.DataFrame
    test: pd.DataFrame
    rul: np.ndarray  # true RUL after the last test cycle, ordered like sorted test unit ids

    @property
    def test_units(self) -> np.ndarray:
        return np.sort(self.test["unit"].unique())


def resolve_cmapss_dir(data_dir: Path) -> Path:
    """`data_dir/cmapss` for a data root, or `data_dir` itself when it holds the files."""
    data_dir = Path(data_dir)
    nested = data_dir / "cmapss"
    return nested if nested.is_dir() else data_dir


def find_file(folder: Path, stem: str) -> Path:
    """`stem.txt` or `stem.txt.gz` inside `folder` (DataError naming both when neither exists)."""
    for candidate in (folder / f"{stem}.txt", folder / f"{stem}.txt.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder}: neither {stem}.txt nor {stem}.txt.gz exists")


def _open_text(path: Path) -> TextIO:
    return gzip.open(path, "rt") if path.suffix == ".gz" else path.open("r")


def _first_problem(path: Path, n_columns: int, names: Sequence[str]) -> str | None:
    """Scan `path` line by line and describe the first malformed line, or None."""
    with _open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != n_columns:
                return f"{path}:{line_no}: expected {n_columns} columns, found {len(fields)}"
            for name, text in zip(names, fields, strict=True):
                try:
                    value = float(text)
                except ValueError:
                    return f"{path}:{line_no}: {name} is not a number ({text!r})"
                if not math.isfinite(value):
                    return f"{path}:{line_no}: {name} is not finite ({text!r})"
    return None


def read_table(path: Path, names: Sequence[str]) -> pd.DataFrame:
    """Read a whitespace-separated numeric table; a malformed line raises DataError (file:line)."""
    path = Path(path)
    try:
        frame = pd.read_csv(
            path, sep=r"\s+", header=None, names=list(names), dtype="float64", engine="c"
        )
    except (ValueError, pd.errors.ParserError) as exc:
        problem = _first_problem(path, len(names), names)
        raise DataError(problem or f"{path}: cannot be parsed ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from exc
    # Missing trailing fields come back as NaN, extra ones shift columns: find the exact line.
    if frame.empty or not np.isfinite(frame.to_numpy()).all():
        problem = _first_problem(path, len(names), names)
        raise DataError(problem or f"{path}: no rows")
    return frame


def read_history(path: Path) -> pd.DataFrame:
    """A train or test file as a DataFrame with `COLUMNS`, validated (unit/cycle ints, order)."""
    frame = read_table(path, COLUMNS)
    for name in ("unit", "cycle"):
        values = frame[name].to_numpy()
        bad = np.flatnonzero((values != np.round(values)) | (values < 1))
        if bad.size:
            raise DataError(
                f"{path}:{bad[0] + 1}: {name} must be a positive integer, found {values[bad[0]]}"
            )
        frame[name] = values.astype("int64")
    units = frame["unit"].to_numpy()
    cycles = frame["cycle"].to_numpy()
    same_unit = units[1:] == units[:-1]
    backwards = np.flatnonzero(same_unit & (cycles[1:] <= cycles[:-1]))
    if backwards.size:
        row = backwards[0] + 1
        raise DataError(
            f"{path}:{row + 1}: unit {units[row]} cycle {cycles[row]} does not follow cycle "
            f"{cycles[row - 1]} (cycles must strictly increase)"
        )
    starts = units[np.r_[True, ~same_unit]]
    if len(starts) != len(np.unique(starts)):
        seen: set[int] = set()
        for row in np.flatnonzero(np.r_[True, ~same_unit]):
            if units[row] in seen:
                raise DataError(f"{path}:{row + 1}: unit {units[row]} starts a second block")
            seen.add(int(units[row]))
    return frame


def load_subset(data_dir: Path, subset: str = "FD001") -> Subset:
    """Load and validate train, test and RUL files of `subset` from a data dir (or its cmapss/)."""
    if not _SUBSET_RE.match(subset):
        raise DataError(f"unknown C-MAPSS subset {subset!r} (expected one of {', '.join(SUBSETS)})")
    folder = resolve_cmapss_dir(data_dir)
    train = read_history(find_file(folder, f"train_{subset}"))
    test = read_history(find_file(folder, f"test_{subset}"))
    rul_path = find_file(folder, f"RUL_{subset}")
    rul = read_table(rul_path, ["rul"])["rul"].to_numpy()
    n_units = test["unit"].nunique()
    if len(rul) != n_units:
        raise DataError(f"{rul_path}: {len(rul)} lines but the test file has {n_units} units")
    if (rul < 0).any():
        raise DataError(f"{rul_path}:{int(np.argmax(rul < 0)) + 1}: negative RUL")
    logger.info(
        "loaded %s: %d train rows (%d units), %d test rows (%d units)",
        subset, len(train), train["unit"].nunique(), len(test), n_units,
    )  # fmt: skip
    return Subset(name=subset, train=train, test=test, rul=rul.astype("float64"))


def rul_targets(frame: pd.DataFrame, cap: float | None) -> np.ndarray:
    """Piecewise-linear RUL of run-to-failure rows: min(last cycle of the unit - cycle, cap)."""
    last = frame.groupby("unit")["cycle"].transform("max").to_numpy()
    rul = (last - frame["cycle"].to_numpy()).astype("float64")
    return np.minimum(rul, cap) if cap is not None else rul


def split_units(
    frame: pd.DataFrame, *, val_fraction: float = 0.2, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split histories BY UNIT (rows of one engine are correlated: a row split leaks)."""
    units = np.sort(frame["unit"].unique())
    rng = np.random.default_rng(seed)
    n_val = max(1, round(len(units) * val_fraction))
    val_units = set(rng.choice(units, size=n_val, replace=False).tolist())
    in_val = frame["unit"].isin(val_units).to_numpy()
    return frame[~in_val].reset_index(drop=True), frame[in_val].reset_index(drop=True)

"""Turbofan data, features and metrics on the real C-MAPSS files."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from machine_health.domains import get_domain
from machine_health.domains.turbofan import DOMAIN, TurbofanCycle, check_next_cycle
from machine_health.domains.turbofan.data import (
    COLUMNS,
    SENSORS,
    load_subset,
    read_history,
    rul_targets,
    split_units,
)
from machine_health.domains.turbofan.features import (
    fit_transform,
    pad_windows,
    rolling_features,
    thin_rows,
)
from machine_health.domains.turbofan.metrics import phm08_score, rul_metrics, smape
from machine_health.domains.turbofan.models import FitConfig
from machine_health.domains.turbofan.training import (
    TEST_LIKE_MAX_RUL,
    TEST_LIKE_MIN_CYCLES,
    cut_scores,
    learn_weights,
    validation_cuts,
    window_stride,
)
from machine_health.errors import DataError, SequenceConflict


@pytest.fixture(scope="module")
def fd001(data_dir: Path):
    return load_subset(data_dir, "FD001")


@pytest.fixture(scope="module")
def fd002(data_dir: Path):
    return load_subset(data_dir, "FD002")


def test_fd001_shapes(fd001) -> None:
    assert fd001.train.shape == (20631, 26)
    assert fd001.test.shape == (13096, 26)
    assert list(fd001.train.columns) == COLUMNS
    assert fd001.train["unit"].nunique() == 100
    assert len(fd001.rul) == fd001.test["unit"].nunique() == 100


def test_fd002_reads_gzip(fd002) -> None:
    assert fd002.train.shape == (53759, 26)
    assert fd002.test.shape == (33991, 26)
    assert len(fd002.rul) == 259


def _corrupt(data_dir: Path, tmp_path: Path, line_no: int, new_line: str) -> Path:
    """Copy FD001 into tmp_path with one line of the training file replaced."""
    src = data_dir / "cmapss"
    lines = (src / "train_FD001.txt").read_text().splitlines()
    lines[line_no - 1] = new_line
    (tmp_path / "train_FD001.txt").write_text("\n".join(lines) + "\n")
    for name in ("test_FD001.txt", "RUL_FD001.txt"):
        (tmp_path / name).write_bytes((src / name).read_bytes())
    return tmp_path / "train_FD001.txt"


def test_bad_number_names_file_and_line(data_dir: Path, tmp_path: Path) -> None:
    row = (data_dir / "cmapss" / "train_FD001.txt").read_text().splitlines()[99].split()
    row[7] = "n/a"
    path = _corrupt(data_dir, tmp_path, 100, " ".join(row))
    with pytest.raises(DataError, match=rf"{path}:100: sensor_3 is not a number"):
        load_subset(tmp_path, "FD001")


def test_missing_column_names_line(data_dir: Path, tmp_path: Path) -> None:
    row = (data_dir / "cmapss" / "train_FD001.txt").read_text().splitlines()[41].split()
    path = _corrupt(data_dir, tmp_path, 42, " ".join(row[:-1]))
    with pytest.raises(DataError, match=rf"{path}:42: expected 26 columns, found 25"):
        load_subset(tmp_path, "FD001")


def test_backwards_cycle_names_line(data_dir: Path, tmp_path: Path) -> None:
    row = (data_dir / "cmapss" / "train_FD001.txt").read_text().splitlines()[4].split()
    row[1] = "2"  # line 5 is cycle 5 of unit 1
    path = _corrupt(data_dir, tmp_path, 5, " ".join(row))
    with pytest.raises(DataError, match=rf"{path}:5: unit 1 cycle 2 does not follow cycle 4"):
        load_subset(tmp_path, "FD001")


def test_nan_in_gzip_copy(data_dir: Path, tmp_path: Path) -> None:
    lines = (data_dir / "cmapss" / "train_FD001.txt").read_text().splitlines()
    fields = lines[9].split()
    fields[4] = "nan"
    lines[9] = " ".join(fields)
    path = tmp_path / "train_FD001.txt.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"{path}:10: setting_3 is not finite"):
        read_history(path)


def test_rul_file_length_checked(data_dir: Path, tmp_path: Path) -> None:
    src = data_dir / "cmapss"
    for name in ("train_FD001.txt", "test_FD001.txt"):
        (tmp_path / name).write_bytes((src / name).read_bytes())
    rul_lines = (src / "RUL_FD001.txt").read_text().splitlines()[:-1]
    (tmp_path / "RUL_FD001.txt").write_text("\n".join(rul_lines) + "\n")
    with pytest.raises(DataError, match="99 lines but the test file has 100 units"):
        load_subset(tmp_path, "FD001")


def test_rul_targets_piecewise(fd001) -> None:
    rul = rul_targets(fd001.train, cap=125)
    unit1 = fd001.train["unit"].to_numpy() == 1
    last = int(fd001.train.loc[unit1, "cycle"].max())  # unit 1 runs 192 cycles
    assert last == 192
    expected = np.minimum(last - fd001.train.loc[unit1, "cycle"].to_numpy(), 125)
    np.testing.assert_array_equal(rul[unit1], expected)
    assert rul.max() == 125
    # every unit ends at failure: its last row has RUL 0
    ends = fd001.train.groupby("unit").tail(1).index
    assert (rul[ends] == 0).all()
    assert rul_targets(fd001.train, cap=None).max() == fd001.train.groupby("unit").size().max() - 1


def test_pad_windows_repeats_first_row() -> None:
    rows = np.arange(12, dtype="float32").reshape(4, 3)
    every = pad_windows(rows, 6, every_cycle=True)
    assert every.shape == (4, 6, 3)
    np.testing.assert_array_equal(every[0], np.repeat(rows[:1], 6, axis=0))
    np.testing.assert_array_equal(every[-1], np.concatenate([np.repeat(rows[:1], 2, 0), rows]))
    last = pad_windows(rows, 3, every_cycle=False)
    np.testing.assert_array_equal(last[0], rows[-3:])


def test_pad_windows_keeps_only_the_chosen_ends() -> None:
    rows = np.arange(30, dtype="float32").reshape(10, 3)
    ends = np.zeros(10, dtype=bool)
    ends[[0, 4, 9]] = True
    every = pad_windows(rows, 4, every_cycle=True)
    np.testing.assert_array_equal(pad_windows(rows, 4, ends=ends), every[ends])


def test_thin_rows_keeps_every_units_last_cycle(fd001) -> None:
    frame = fd001.train
    keep = thin_rows(frame, 4)
    kept = frame[keep]
    # the last cycle of every unit, then every 4th going back from it
    last = frame.groupby("unit")["cycle"].max()
    assert (kept.groupby("unit")["cycle"].max() == last).all()
    assert ((last.loc[kept["unit"]].to_numpy() - kept["cycle"].to_numpy()) % 4 == 0).all()
    assert abs(len(kept) - len(frame) / 4) <= frame["unit"].nunique()
    assert thin_rows(frame, 1) is None


def test_window_budget_sets_the_stride() -> None:
    assert window_stride(30_000, FitConfig(max_windows=40_000)) == 1
    assert window_stride(120_000, FitConfig(max_windows=40_000)) == 3
    assert window_stride(120_001, FitConfig(max_windows=40_000)) == 4
    assert window_stride(10**6, FitConfig()) == 1  # no budget


def test_split_has_no_unit_on_both_sides(fd001) -> None:
    train, val = split_units(fd001.train, val_fraction=0.2, seed=3)
    assert set(train["unit"]).isdisjoint(set(val["unit"]))
    assert val["unit"].nunique() == 20
    assert len(train) + len(val) == len(fd001.train)


def test_fd001_features_drop_flat_sensors_one_regime(fd001) -> None:
    transform = fit_transform(fd001.train, window=30, cap=125)
    assert transform.n_regimes == 1
    # sensors that never move in FD001 (checked against the data, not a hard-coded list)
    flat = [s for s in SENSORS if fd001.train[s].nunique() == 1]
    assert flat and sorted(transform.dropped) == sorted(flat)


def test_fd002_regime_normalisation(fd002) -> None:
    transform = fit_transform(fd002.train, window=30, cap=125, use_cycle=False)
    assert transform.n_regimes == 6
    regimes = transform.regimes(fd002.train)
    assert len(np.unique(regimes)) == 6
    features = pd.DataFrame(transform.transform_rows(fd002.train), columns=transform.sensors)
    by_regime = features.groupby(regimes)
    # after normalisation each regime is centred and unit-scaled...
    assert np.abs(by_regime.mean().to_numpy()).max() < 1e-3
    std = by_regime.std(ddof=0).to_numpy()
    # (a sensor flat inside one regime but not in others is centred there, not scaled)
    assert (np.isclose(std, 1.0, atol=1e-3) | (std == 0)).all()
    assert np.isclose(std, 1.0, atol=1e-3).mean() > 0.9
    # ...while raw means differ a lot between regimes (the condition dominates the raw signal)
    raw = fd002.train[transform.sensors].groupby(regimes).mean()
    assert (raw.max() - raw.min()).max() > 100


def test_phm08_score_hand_computed() -> None:
    true = np.array([100.0, 50.0, 20.0])
    pred = np.array([90.0, 60.0, 20.0])  # d = -10 (early), +10 (late), 0
    expected = (math.exp(10 / 13) - 1) + (math.exp(10 / 10) - 1) + 0.0
    assert phm08_score(true, pred) == pytest.approx(expected)
    assert phm08_score(true, pred) == pytest.approx(1.1582 + 1.7183, abs=1e-3)


def test_rul_metrics() -> None:
    true = np.array([10.0, 20.0, 30.0, 0.0])
    pred = np.array([12.0, 18.0, 30.0, 0.0])
    metrics = rul_metrics(true, pred)
    assert metrics["rmse"] == pytest.approx(math.sqrt(2.0))
    assert metrics["mae"] == pytest.approx(1.0)
    assert smape(true, pred) == pytest.approx(100 * (4 / 22 + 4 / 38) / 4)


def test_sequence_conflicts() -> None:
    check_next_cycle("u1", [], 1)
    check_next_cycle("u1", [1, 2, 3], 4)
    check_next_cycle("u1", [1, 2, 3], 10)  # gaps are allowed
    with pytest.raises(SequenceConflict, match="cycle 3 was already recorded"):
        check_next_cycle("u1", [1, 2, 3], 3)
    with pytest.raises(SequenceConflict, match="goes backwards"):
        check_next_cycle("u1", [1, 2, 5], 4)


def test_input_schema_and_example(data_dir: Path) -> None:
    assert get_domain("turbofan") is DOMAIN
    example = DOMAIN.example_input(data_dir)
    cycle = TurbofanCycle.model_validate(example)
    assert cycle.unit_id == "FD001-1"
    assert len(cycle.sensors) == 21
    assert cycle.as_row()["sensor_2"] == example["sensors"][1]
    with pytest.raises(ValidationError, match="finite"):
        TurbofanCycle.model_validate({**example, "sensors": [math.nan, *example["sensors"][1:]]})
    with pytest.raises(ValidationError):
        TurbofanCycle.model_validate({**example, "settings": example["settings"][:2]})
    with pytest.raises(ValidationError):
        TurbofanCycle.model_validate({**example, "unit_id": "bad id!"})
    with pytest.raises(ValidationError):
        TurbofanCycle.model_validate({**example, "cycle": 0})


def test_validation_cuts_are_cuts_scored_against_the_uncapped_rul(fd001) -> None:
    _, val = split_units(fd001.train, val_fraction=0.2, seed=3)
    mask, rul = validation_cuts(val)
    assert len(mask) == len(val) and len(rul) == mask.sum()
    cut = val[mask]
    # only validation units, each at least TEST_LIKE_MIN_CYCLES into its history
    assert set(cut["unit"]) == set(val["unit"])
    first = val.groupby("unit")["cycle"].transform("min")[mask]
    assert ((cut["cycle"] - first + 1) >= TEST_LIKE_MIN_CYCLES).all()
    # the true RUL, not capped at 125: up to TEST_LIKE_MAX_RUL
    np.testing.assert_array_equal(rul, rul_targets(val, cap=None)[mask])
    assert rul.min() == 0 and rul.max() == TEST_LIKE_MAX_RUL > 125
    # every eligible cycle of a long unit: RUL 0 .. TEST_LIKE_MAX_RUL
    long_unit = val.groupby("unit").size().idxmax()
    assert (cut["unit"] == long_unit).sum() == TEST_LIKE_MAX_RUL + 1
    scores = cut_scores(rul, rul + 10.0)
    assert scores["val_rmse_last"] == pytest.approx(10.0)
    assert scores["val_phm_last"] == pytest.approx(100 * math.expm1(1.0))


def test_learned_weights_follow_the_better_member() -> None:
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 150, size=500)
    good = true / 125 + rng.normal(0, 0.02, size=500)
    bad = true / 125 + rng.normal(0, 0.3, size=500)
    weights = learn_weights(["cnn", "cnn", "hgb"], [bad, bad, good], true, 125.0)
    assert weights[0] == weights[1] and sum(weights) == pytest.approx(1.0)
    assert weights[2] >= 0.9
    # two equally good, independent members: a mix beats either alone
    other = true / 125 + rng.normal(0, 0.02, size=500)
    mixed = learn_weights(["cnn", "hgb"], [good, other], true, 125.0)
    assert 0.25 <= mixed[0] <= 0.75


def test_rolling_features_scales() -> None:
    windows = np.arange(2 * 20 * 3, dtype="float32").reshape(2, 20, 3)
    plain = rolling_features(windows)
    multi = rolling_features(windows, (5, 10))
    assert plain.shape == (2, 18) and multi.shape == (2, 18 + 2 * 2 * 3)
    np.testing.assert_array_equal(multi[:, :18], plain)
    np.testing.assert_allclose(multi[:, 18:21], windows[:, -5:, :].mean(axis=1))
    np.testing.assert_allclose(multi[:, 21:24], 3.0)  # slope per cycle of an arange

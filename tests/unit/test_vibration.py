"""Vibration domain: manifest loading, time split, envelope physics, input schema (real data)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.io import wavfile

from machine_health.domains.vibration import (
    DOMAIN,
    SKF_6205,
    FeatureConfig,
    VibrationInput,
    extract_features,
    feature_names,
    load_manifest,
    make_windows,
    resolve_manifest_dir,
    time_split,
)
from machine_health.domains.vibration.physics import bandpass_sos, envelope_spectrum, resample
from machine_health.domains.vibration.training import conformal_threshold, split_fit_calibration
from machine_health.errors import DataError

NORMAL_FILE = "normal_0_97.mat"


@pytest.fixture(scope="module")
def cwru(data_dir: Path) -> Path:
    return data_dir / "cwru"


@pytest.fixture(scope="module")
def recordings(cwru: Path):
    return load_manifest(cwru)


def manifest_rows(cwru: Path) -> list[dict[str, str]]:
    with (cwru / "labels.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_manifest(directory: Path, rows: list[dict[str, str]]) -> Path:
    with (directory / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return directory


@pytest.fixture
def normal_only(tmp_path: Path, cwru: Path) -> tuple[Path, dict[str, str]]:
    """A manifest directory holding a copy of the real normal recording and its row."""
    shutil.copy(cwru / NORMAL_FILE, tmp_path / NORMAL_FILE)
    row = next(r for r in manifest_rows(cwru) if r["file"] == NORMAL_FILE)
    return tmp_path, row


# --- manifest -----------------------------------------------------------------------------------
def test_real_manifest_loads_every_recording_with_its_sample_count(recordings, cwru: Path) -> None:
    rows = {r["file"]: r for r in manifest_rows(cwru)}
    assert {r.file for r in recordings} == set(rows)
    for rec in recordings:
        assert len(rec.signal) == int(rows[rec.file]["n_samples"])
        assert rec.sample_rate == 48_000
        assert rec.channel == "accelerometer"
        assert rec.label == rows[rec.file]["label"]
    assert {r.label for r in recordings} == {"normal", "inner_race", "outer_race", "ball"}


def test_manifest_dir_resolves_from_the_data_root(data_dir: Path, cwru: Path) -> None:
    assert resolve_manifest_dir(data_dir) == cwru
    assert resolve_manifest_dir(cwru) == cwru


def test_missing_file_is_named(normal_only) -> None:
    directory, row = normal_only
    write_manifest(directory, [row, {**row, "file": "gone.mat"}])
    with pytest.raises(DataError, match=r"gone\.mat: file not found.*line 3"):
        load_manifest(directory)


def test_unknown_key_is_named_with_the_keys_the_file_has(normal_only) -> None:
    directory, row = normal_only
    write_manifest(directory, [{**row, "de_key": "X999_DE_time"}])
    with pytest.raises(DataError) as info:
        load_manifest(directory)
    message = str(info.value)
    assert NORMAL_FILE in message
    assert "'X999_DE_time' not found" in message
    assert "X097_DE_time" in message


def test_wrong_sample_count_is_named(normal_only) -> None:
    directory, row = normal_only
    write_manifest(directory, [{**row, "n_samples": "1000"}])
    with pytest.raises(DataError, match=rf"{NORMAL_FILE}: 243938 samples, the manifest says 1000"):
        load_manifest(directory)


def test_missing_columns_and_missing_manifest(tmp_path: Path, normal_only) -> None:
    directory, row = normal_only
    write_manifest(directory, [{k: v for k, v in row.items() if k != "de_key"}])
    with pytest.raises(DataError, match=r"missing columns.*de_key"):
        load_manifest(directory)
    with pytest.raises(DataError, match=r"no labels\.csv"):
        resolve_manifest_dir(tmp_path / "nowhere")


def test_wav_recording_loads_as_the_acoustic_channel(tmp_path: Path, recordings) -> None:
    normal = next(r for r in recordings if r.label == "normal")
    wave = normal.signal[:48_000] / np.abs(normal.signal).max() * 0.5
    wavfile.write(tmp_path / "mic.wav", 48_000, (wave * 32767).astype(np.int16))
    write_manifest(
        tmp_path,
        [{"file": "mic.wav", "label": "normal", "rpm": "1796", "fs_hz": "48000", "de_key": "",
          "n_samples": str(len(wave))}],
    )  # fmt: skip
    (rec,) = load_manifest(tmp_path)
    assert rec.channel == "microphone"
    assert rec.sample_rate == 48_000
    np.testing.assert_allclose(rec.signal, wave, atol=2 / 32768)  # 16-bit quantisation

    write_manifest(
        tmp_path,
        [{"file": "mic.wav", "label": "normal", "rpm": "1796", "fs_hz": "44100", "de_key": "",
          "n_samples": str(len(wave))}],
    )  # fmt: skip
    with pytest.raises(DataError, match=r"mic\.wav: sampled at 48000 Hz, the manifest says 44100"):
        load_manifest(tmp_path)


# --- time split ---------------------------------------------------------------------------------
def test_time_split_leaves_no_test_window_overlapping_training(recordings) -> None:
    window, hop = 2048, 256
    train = make_windows(recordings, portion="train", window=window, hop=hop, sample_rate=48_000)
    test = make_windows(recordings, portion="test", window=window, hop=hop, sample_rate=48_000)
    for rec in recordings:
        boundary = time_split(len(rec.signal))["train"][1]
        assert boundary == int(len(rec.signal) * 0.7)
        train_starts = train.starts[train.sources == rec.file]
        test_starts = test.starts[test.sources == rec.file]
        assert train_starts.max() + window <= boundary <= test_starts.min()
        # Every window really is the recording's samples at its start offset.
        i = len(test_starts) // 2
        np.testing.assert_array_equal(
            test.windows[test.sources == rec.file][i],
            rec.signal[test_starts[i] : test_starts[i] + window],
        )
    normal = next(r for r in recordings if r.label == "normal")
    # The normal class is small: 70 % of 243938 samples with a 256 hop.
    assert (train.labels == "normal").sum() == (int(len(normal.signal) * 0.7) - window) // hop + 1


def test_detector_calibration_windows_follow_the_fit_windows_in_time(recordings) -> None:
    train = make_windows(recordings, portion="train", window=2048, hop=256, sample_rate=48_000)
    fit, calibration = split_fit_calibration(train)
    assert not (train.labels[fit | calibration] != "normal").any()
    assert train.starts[fit].max() + 2048 <= train.starts[calibration].min()
    assert calibration.sum() > 100
    assert fit.sum() > 2 * calibration.sum()


def test_conformal_threshold_is_the_max_for_small_calibration_sets() -> None:
    scores = np.arange(1.0, 51.0)
    assert conformal_threshold(scores, 0.01) == 50.0
    assert conformal_threshold(np.arange(1.0, 1001.0), 0.01) == 991.0


# --- physics ------------------------------------------------------------------------------------
def bearing_fault_waveform(
    defect_hz: float, sample_rate: float, seconds: float, seed: int = 0
) -> np.ndarray:
    """Impacts every 1/defect_hz ringing a 3.5 kHz resonance, in white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    impulses = np.zeros_like(t)
    impulses[(np.arange(0, seconds, 1 / defect_hz) * sample_rate).astype(int)] = 1.0
    ring_t = np.arange(int(0.004 * sample_rate)) / sample_rate
    ring = np.exp(-ring_t * 1500) * np.sin(2 * np.pi * 3_500 * ring_t)
    return np.convolve(impulses, ring)[: len(t)] + 0.05 * rng.standard_normal(len(t))


def envelope_peak_hz(x: np.ndarray, sample_rate: float) -> float:
    sos = bandpass_sos(2_000, 8_000, sample_rate)
    freqs, amp = envelope_spectrum(x[None, :], sample_rate, sos, n_fft=4 * len(x))
    search = (freqs > 20) & (freqs < 400)
    return float(freqs[search][np.argmax(amp[0, search])])


def test_defect_frequencies_of_the_cwru_bearing() -> None:
    lines = SKF_6205.defect_frequencies(1796)
    assert lines["bpfo"] == pytest.approx(107.4, abs=0.3)  # the data README: ~107 Hz
    assert lines["bpfi"] == pytest.approx(162.2, abs=0.3)  # ~162 Hz
    assert lines["shaft"] == pytest.approx(29.93, abs=0.01)


def test_synthetic_outer_race_defect_shows_its_envelope_peak_at_bpfo() -> None:
    bpfo = SKF_6205.defect_frequencies(1796)["bpfo"]
    x = bearing_fault_waveform(bpfo, 48_000, seconds=1.0)
    # 1 s window: 1 Hz resolution; the peak lies within one bin of the zero-padded grid.
    assert envelope_peak_hz(x, 48_000) == pytest.approx(bpfo, abs=1.0)


def test_resampling_keeps_the_envelope_peak() -> None:
    bpfi = SKF_6205.defect_frequencies(1796)["bpfi"]
    x = bearing_fault_waveform(bpfi, 96_000, seconds=1.0)
    at_48k = resample(x, 96_000, 48_000)
    assert len(at_48k) == 48_000
    assert envelope_peak_hz(at_48k, 48_000) == pytest.approx(bpfi, abs=1.0)
    # Also from a rate with no small integer ratio to the model's (25.6 kHz acquisition cards).
    y = bearing_fault_waveform(bpfi, 25_600, seconds=1.0)
    assert envelope_peak_hz(resample(y, 25_600, 48_000), 48_000) == pytest.approx(bpfi, abs=1.0)


def test_envelope_features_point_at_the_defect_of_a_2048_sample_window() -> None:
    config = FeatureConfig()
    names = feature_names(config)
    lines = SKF_6205.defect_frequencies(1796)
    outer = bearing_fault_waveform(lines["bpfo"], 48_000, seconds=2048 / 48_000)
    inner = bearing_fault_waveform(lines["bpfi"], 48_000, seconds=2048 / 48_000)
    features = extract_features(np.stack([outer, inner]), np.array([1796.0, 1796.0]), config)
    assert features.shape == (2, len(names))
    assert np.all(np.isfinite(features))
    bpfo, bpfi = names.index("env_bpfo_h1"), names.index("env_bpfi_h1")
    assert features[0, bpfo] > features[0, bpfi] + 1
    assert features[1, bpfi] > features[1, bpfo] + 1


def test_features_do_not_depend_on_the_batch() -> None:
    rng = np.random.default_rng(1)
    batch = rng.standard_normal((5, 2048))
    config = FeatureConfig()
    together = extract_features(batch, np.full(5, 1796.0), config)
    alone = extract_features(batch[2:3], np.array([1796.0]), config)
    np.testing.assert_allclose(together[2], alone[0], rtol=1e-9, atol=1e-12)


def test_training_sized_batches_match_the_serving_path(recordings) -> None:
    """A batch of several chunks (thread pool) gives each window's single-request features."""
    from machine_health.domains.vibration import features as feature_module

    windows = make_windows(
        recordings[:2], portion="train", window=2048, hop=2048, sample_rate=48_000.0
    )
    n = 2 * feature_module._CHUNK + 7  # three chunks, the last one short
    batch = np.resize(windows.windows, (n, 2048)) + np.arange(n)[:, None] * 1e-3
    rpm = np.resize(windows.rpm, n)
    config = FeatureConfig()
    together = extract_features(batch, rpm, config)
    assert together.shape == (n, len(feature_names(config)))
    for i in (0, feature_module._CHUNK - 1, feature_module._CHUNK, n - 1):
        alone = extract_features(batch[i : i + 1], rpm[i : i + 1], config)
        np.testing.assert_allclose(together[i], alone[0], rtol=1e-9, atol=1e-12)


# --- schema -------------------------------------------------------------------------------------
def test_example_input_is_a_real_test_window_that_validates(data_dir: Path, recordings) -> None:
    example = DOMAIN.example_input(data_dir)
    item = VibrationInput(**example)
    assert len(item.samples) == 2048
    inner = next(r for r in recordings if r.file == "48k_Drive_End_IR007_0_109.mat")
    start = time_split(len(inner.signal))["test"][0]
    np.testing.assert_allclose(item.samples, inner.signal[start : start + 2048], atol=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"samples": [0.0] * 300 + [float("nan")]}, "finite numbers: nan at index 300"),
        ({"samples": [0.0] * 300 + [float("inf")]}, "finite numbers: inf at index 300"),
        ({"samples": [0.0] * 10}, "samples must hold 256..65536 values, got 10"),
        ({"sample_rate": 500.0}, "greater than or equal to 1000"),
        ({"rpm": -5.0}, "greater than or equal to 60"),
        ({"asset_id": "motor 7"}, "pattern"),
        ({"channel": "laser"}, "accelerometer"),
    ],
)
def test_input_model_rejects_bad_requests(change: dict, message: str) -> None:
    good = {"asset_id": "motor-7", "samples": [0.0] * 300, "sample_rate": 48_000.0, "rpm": 1796}
    VibrationInput(**good)
    with pytest.raises(ValidationError, match=message):
        VibrationInput(**{**good, **change})

"""Acoustic domain on the real DCASE 2023 valve clips: split, features, bundle, request model."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.io import wavfile

from machine_health.domains.acoustic import (
    DOMAIN,
    AcousticBundle,
    AcousticInput,
    Prepared,
    all_clips,
    archived_form,
    evaluate_bundle,
    read_manifest,
    resolve_dataset_dir,
    spectrogram_from_archive,
    train_bundle,
    wav_base64,
)
from machine_health.domains.acoustic.data import PARTS
from machine_health.domains.acoustic.training import conformal_threshold
from machine_health.domains.base import load_bundle
from machine_health.errors import InputError, ModelError

RATE = 16_000


@pytest.fixture(scope="module")
def prepared(data_dir: Path) -> Prepared:
    """All 200 real clips with their spectrograms, computed once (~5 s)."""
    return all_clips(data_dir)


@pytest.fixture(scope="module")
def trained(prepared: Prepared) -> tuple[AcousticBundle, object]:
    return train_bundle(prepared, seed=0)


def _wav_b64(samples: np.ndarray, rate: int) -> str:
    buffer = io.BytesIO()
    wavfile.write(buffer, rate, samples)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _refused(audio: str) -> str:
    with pytest.raises(ValidationError) as caught:
        AcousticInput(asset_id="valve-1", audio=audio)
    return str(caught.value)


# --- data ---------------------------------------------------------------------------------------
def test_split_keeps_whole_clips_apart_and_trains_on_normals_only(data_dir: Path) -> None:
    clips = read_manifest(resolve_dataset_dir(data_dir))
    assert len(clips) == 200
    seen = {}
    for clip in clips:
        assert seen.setdefault(clip.file, clip.part) == clip.part  # one part per clip
        if clip.is_anomaly:
            assert clip.part != "train"
    for domain in ("source", "target"):
        normal = [c.part for c in clips if c.domain == domain and not c.is_anomaly]
        anomaly = [c.part for c in clips if c.domain == domain and c.is_anomaly]
        assert [normal.count(p) for p in PARTS] == [25, 10, 15]
        assert [anomaly.count(p) for p in PARTS] == [0, 20, 30]


def test_spectrograms_are_finite_log_mel(prepared: Prepared) -> None:
    assert prepared.spectra.shape == (200, 311, 128)
    assert np.isfinite(prepared.spectra).all()
    assert prepared.spectra.min() >= -100.0  # the epsilon floor, never -inf


# --- model --------------------------------------------------------------------------------------
def test_threshold_gives_about_the_target_false_alarm_rate(trained) -> None:
    bundle, result = trained
    assert result.n_train == 50 and result.n_calibration == 20
    # conformal rank 19 of 20 validation normals: 1 of 20 above (<= the 10 % target)
    assert 0.0 < result.calibration_fpr <= bundle.target_fpr
    assert conformal_threshold(np.arange(20.0), 0.1) == 18.0


def test_detector_separates_test_anomalies_better_than_chance(trained, prepared) -> None:
    bundle, _ = trained
    metrics = evaluate_bundle(bundle, prepared, "test")
    assert metrics["n_clips"] == 90
    # the test normals were neither fitted nor used for the threshold
    assert metrics["auc_source"] > 0.55 and metrics["auc_target"] > 0.55
    # No bound on the test false-alarm rate: 20 calibration normals set it loosely (measured
    # in docs/BENCHMARKS.md); the bound that holds is the validation one above.
    assert 0.0 <= metrics["false_alarm_rate"] <= 1.0


def test_bundle_round_trips_and_predicts_identically(trained, prepared, tmp_path: Path) -> None:
    bundle, _ = trained
    items = [{"samples": prepared.clips.waves[i], "sample_rate": RATE} for i in (0, 60, 130, 199)]
    loaded = load_bundle(bundle.save(tmp_path / "model"))
    assert isinstance(loaded, AcousticBundle)
    assert loaded.predict(items) == bundle.predict(items)
    assert loaded.describe() == bundle.describe()
    smoke = loaded.predict(loaded.smoke_inputs())
    assert len(smoke) == 2 and all(np.isfinite(r["anomaly_score"]) for r in smoke)


def test_a_model_file_holding_pickles_is_refused(trained, tmp_path: Path) -> None:
    bundle, _ = trained
    path = bundle.save(tmp_path / "model")
    np.savez(path / "detector.npz", kind=np.array([object()], dtype=object))
    with pytest.raises(ModelError, match="cannot load"):
        load_bundle(path)


def test_the_posted_wav_scores_like_the_clip_and_the_archive_form(trained, data_dir) -> None:
    bundle, _ = trained
    example = DOMAIN.example_input(data_dir)
    item = AcousticInput(**example)
    samples, rate = item.decoded()
    direct = bundle.predict([{"samples": samples, "sample_rate": rate}])[0]
    assert bundle.predict([item])[0] == direct == bundle.predict([example])[0]
    assert direct["seconds"] == 10.0
    record = archived_form(item)
    assert len(record["log_mel_f16_base64"]) < 30_000  # vs 427 kB of posted audio
    # one log-mel per request: the archived form reads the one the model scored
    assert item.spectrogram(bundle.config) is item.spectrogram(bundle.config)
    assert len(item._spectra) == 1
    from_archive = bundle.score_spectrograms([spectrogram_from_archive(record)])[0]
    assert from_archive == pytest.approx(direct["anomaly_score"], rel=1e-2)


def test_higher_rates_are_resampled_and_lower_ones_refused(trained, prepared) -> None:
    bundle, _ = trained
    clip = prepared.clips.waves[0]
    at_48k = np.repeat(clip, 3)  # a zero-order hold: the same content up to 8 kHz
    score_16k = bundle.predict([{"samples": clip, "sample_rate": RATE}])[0]["anomaly_score"]
    score_48k = bundle.predict([{"samples": at_48k, "sample_rate": 48_000}])[0]["anomaly_score"]
    assert np.isfinite(score_48k) and abs(score_48k - score_16k) < 1.0
    with pytest.raises(InputError, match="below the model's 16000 Hz"):
        bundle.predict([{"audio": wav_base64(clip[::2], 8_000)}])


# --- the request model refuses hostile input with clear errors ----------------------------------
def test_input_model_refuses_hostile_audio(prepared) -> None:
    clip = (prepared.clips.waves[0] * 32768).astype(np.int16)
    assert AcousticInput(asset_id="valve-1", audio=_wav_b64(clip, RATE)).decoded()[1] == RATE
    assert "sample rate 4000 Hz outside 8000..48000 Hz" in _refused(
        _wav_b64(np.tile(clip, 2)[:40_000], 4_000)
    )
    assert "sample rate 96000 Hz outside" in _refused(_wav_b64(clip[: 96_000 * 5 // 10], 96_000))
    assert "clip lasts 3.000 s, must last 5.0..12.0 s" in _refused(_wav_b64(clip[: 3 * RATE], RATE))
    assert "clip lasts 13.000 s" in _refused(_wav_b64(np.tile(clip, 2)[: 13 * RATE], RATE))
    assert "at least 106728 characters" in _refused(_wav_b64(clip[:RATE], RATE))
    assert "mono 16-bit PCM, got 2 channel(s)" in _refused(
        _wav_b64(np.stack([clip, clip], axis=1), RATE)
    )
    floats = prepared.clips.waves[0].copy()
    floats[10] = np.nan  # float WAVs can carry non-finite samples: only 16-bit PCM is accepted
    assert "not a PCM WAV file" in _refused(_wav_b64(floats, RATE))
    good = _wav_b64(clip, RATE)
    assert "not valid base64" in _refused("!" + good[1:])
    assert "not valid base64" in _refused(good[:1000] + "\n" + good[1000:])
    truncated = base64.b64encode(base64.b64decode(good)[:-5000]).decode("ascii")
    assert "WAV truncated" in _refused(truncated)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        AcousticInput(asset_id="valve-1", audio=good, sample_rate=16000)


def test_in_process_samples_must_be_finite_pcm(trained) -> None:
    bundle, _ = trained
    samples = np.zeros(6 * RATE, dtype=np.float32)
    samples[5] = np.inf
    with pytest.raises(InputError, match="finite and within the PCM range"):
        bundle.predict([{"samples": samples, "sample_rate": RATE}])
    with pytest.raises(InputError, match=r"clip lasts 1\.000 s"):
        bundle.predict([{"samples": np.zeros(RATE), "sample_rate": RATE}])

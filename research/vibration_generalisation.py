"""Does the vibration fault-TYPE classifier carry over to a fault size it never saw?

    .venv/bin/python -m research.vibration_generalisation

Data: the 7 CWRU 48 kHz drive-end recordings at 0 hp (one speed, 1796-1797 rpm; one recording
per class and fault size). Windows of 2048 samples (the served window) every 512 samples.

Splits, each with the product's classifier (`train_bundle`: the 30-round HistGradientBoosting
on normal-standardised features, fitted with the detector on the same rows):
- RECORDING split (leave-one-size-out): train on every window of the 0.007 in ball / inner /
  outer recordings, test on every window of the 0.014 in ones (whole recordings never seen),
  and the reverse. The normal class has ONE recording: it is split in TIME (first 70 % with the
  training faults, last 30 % with the test faults) in both directions.
- TIME split (the product's benchmark split, within one fault size): first 70 % of each of the
  size's recordings (+ normal) to train, last 30 % to test.

Figure: macro fault-TYPE accuracy = mean over ball / inner_race / outer_race of the share of
that class's fault windows whose most probable FAULT class is right (normal excluded from the
argmax: the type question is asked of windows known to be faulty). The 4-class macro accuracy
(normal included, plain argmax) is printed beside it, and the detector's AUROC / recall.

Features: `current` = the served `extract_features`; `order` = order-domain envelope-spectrum
features (`order_features` below): band-pass, Hilbert envelope, envelope spectrum with its
frequency axis divided by the shaft rate (orders), line heights at BPFO / BPFI / 2xBSF / BSF /
FTF x 1-3 and the sidebands +-1 order (+-FTF for the ball lines) relative to the median
envelope level, and the three defect families' shares of their sum. The band is chosen on the
TRAINING size only: the candidate where the training faults' own defect lines stand highest
above the median envelope level. `order-rule` = no learning at all: the fault type whose line
family (x 1-3) is the highest share, in the band chosen as above (what physics alone says).
Windows of 8192 samples (every 2048) are studied too: four times the order resolution.

Uncertainty: a moving-block bootstrap of the test windows within each recording (blocks of
8 hops, i.e. 2-8 non-overlapping windows' span), 1000 draws, 2.5-97.5 %, and the per-recording
accuracies. With one recording per class and size, the spread between recordings of one size
cannot be measured: the intervals are within-recording only, the real uncertainty is larger.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from machine_health.config import get_settings
from machine_health.domains.vibration import (
    NORMAL,
    SKF_6205,
    FeatureConfig,
    WindowSet,
    extract_features,
    load_manifest,
    make_windows,
    resolve_manifest_dir,
    train_bundle,
)
from machine_health.domains.vibration.physics import bandpass_sos, envelope_spectrum

logger = logging.getLogger("research.vibration_generalisation")

KINDS = ("current", "order", "order-rule")
SAMPLE_RATE = 48_000.0
SIZES = ("0.007", "0.014")
FAULTS = ("ball", "inner_race", "outer_race")
#: candidate envelope bands (Hz): around the structural resonances the impacts excite
BANDS = ((1_000, 4_000), (2_000, 8_000), (3_000, 6_000), (4_000, 10_000), (8_000, 16_000),
         (8_000, 20_000))  # fmt: skip
HARMONICS = 3
#: each fault's own defect order family (a ball defect strikes both races: 2 x BSF)
OWN_LINE = {"ball": "2bsf", "inner_race": "bpfi", "outer_race": "bpfo"}
N_BOOT = 1000
BLOCK = 8  # windows per bootstrap block: 8 x 512 = 4096 samples, two non-overlapping windows
_EPS = 1e-12


@dataclass(frozen=True)
class OrderConfig:
    band: tuple[float, float]
    sample_rate: float = SAMPLE_RATE
    pad: int = 4
    #: orders above which the median envelope level (the background) is taken, and below
    background: tuple[float, float] = (0.5, 20.0)


def _orders() -> dict[str, float]:
    """Defect frequencies in orders of the shaft rate (geometry only, no speed)."""
    per_rev = SKF_6205.defect_frequencies(60.0)  # 1 rev/s: Hz == orders
    return {
        "bpfo": per_rev["bpfo"],
        "bpfi": per_rev["bpfi"],
        "2bsf": 2 * per_rev["bsf"],
        "bsf": per_rev["bsf"],
        "ftf": per_rev["ftf"],
    }


def order_feature_names() -> list[str]:
    names = [f"ord_{d}_h{h}" for d in _orders() for h in range(1, HARMONICS + 1)]
    names += ["sb_bpfi_pm1", "sb_bpfo_pm1", "sb_2bsf_pmftf"]
    names += ["share_bpfo", "share_bpfi", "share_2bsf"]
    return names


def order_features(windows: np.ndarray, rpm: np.ndarray, config: OrderConfig) -> np.ndarray:
    """Order-domain envelope features of `(n, length)` windows at `config.sample_rate`."""
    x = np.atleast_2d(windows)
    speeds = np.asarray(rpm, float)
    return np.concatenate(
        [_order_chunk(x[i : i + 512], speeds[i : i + 512], config) for i in range(0, len(x), 512)]
    )


def _order_chunk(x: np.ndarray, rpm: np.ndarray, config: OrderConfig) -> np.ndarray:
    length = x.shape[1]
    sos = bandpass_sos(*config.band, config.sample_rate)
    shaft = rpm[:, None] / 60.0
    freqs, amp = envelope_spectrum(x, config.sample_rate, sos, n_fft=length * config.pad)
    orders = freqs[None, :] / shaft  # (n, bins): each window on its own order axis
    lo, hi = config.background
    in_band = (orders > lo) & (orders < hi)
    background = np.nanmedian(np.where(in_band, amp, np.nan), axis=1) + _EPS
    # Half the spectral resolution, in orders, plus a little for the speed's uncertainty.
    tol = (config.sample_rate / length) / shaft / 2 + 0.05

    def line(order: float) -> np.ndarray:
        near = np.abs(orders - order) <= tol
        return np.where(near, amp, 0.0).max(axis=1) / background

    cols = []
    heights = {}
    defects = _orders()
    for name, order in defects.items():
        for h in range(1, HARMONICS + 1):
            heights[(name, h)] = line(order * h)
            cols.append(np.log(heights[(name, h)] + _EPS))
    for name, offset in (("bpfi", 1.0), ("bpfo", 1.0), ("2bsf", defects["ftf"])):
        side = (line(defects[name] - offset) + line(defects[name] + offset)) / 2
        cols.append(np.log(side + _EPS))
    family = {n: sum(heights[(n, h)] for h in range(1, HARMONICS + 1)) for n in OWN_LINE.values()}
    total = sum(family.values()) + _EPS
    cols += [family[n] / total for n in ("bpfo", "bpfi", "2bsf")]
    return np.column_stack(cols)


def choose_band(train: WindowSet) -> tuple[tuple[float, float], dict[str, float]]:
    """The band where the TRAINING faults' own defect lines stand highest (mean log height)."""
    faults = train.subset(np.isin(train.labels, FAULTS))
    names = order_feature_names()
    scores = {}
    for band in BANDS:
        feats = order_features(faults.windows, faults.rpm, OrderConfig(band=band))
        own = [
            feats[faults.labels == label, names.index(f"ord_{line}_h1")].mean()
            for label, line in OWN_LINE.items()
        ]
        scores[f"{band[0]}-{band[1]}"] = float(np.mean(own))
    best = max(scores, key=scores.get)
    lo, hi = best.split("-")
    return (float(lo), float(hi)), scores


def _of_size(windows: WindowSet, size: str, meta: dict[str, str]) -> WindowSet:
    keep = np.array([meta[s] == size for s in windows.sources]) | (windows.labels == NORMAL)
    return windows.subset(keep)


def type_predictions(proba: np.ndarray, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(fault-type argmax over the fault classes only, plain argmax over all classes)."""
    names = np.asarray(labels)
    fault_cols = [i for i, n in enumerate(labels) if n in FAULTS]
    fault_pick = names[np.asarray(fault_cols)[proba[:, fault_cols].argmax(axis=1)]]
    return fault_pick, names[proba.argmax(axis=1)]


def macro_accuracy(truth: np.ndarray, predicted: np.ndarray, classes: Sequence[str]) -> float:
    """Mean over the `classes` present in `truth` of the share of their rows named right."""
    return float(
        np.mean([np.mean(predicted[truth == c] == c) for c in classes if (truth == c).any()])
    )


def block_bootstrap(
    truth: np.ndarray,
    predicted: np.ndarray,
    sources: np.ndarray,
    rng: np.random.Generator,
    block: int = BLOCK,
) -> tuple[float, float]:
    """95 % interval of the fault-type macro accuracy, blocks of windows resampled per recording."""
    correct = {}
    for source in np.unique(sources[np.isin(truth, FAULTS)]):
        rows = sources == source
        correct[source] = ((predicted[rows] == truth[rows]).astype(float), truth[rows][0])
    stats = []
    for _ in range(N_BOOT):
        per_class: dict[str, list[float]] = {}
        for hits, label in correct.values():
            n_blocks = max(1, len(hits) // block)
            starts = rng.integers(0, max(1, len(hits) - block + 1), n_blocks)
            sample = np.concatenate([hits[s : s + block] for s in starts])
            per_class.setdefault(label, []).append(sample.mean())
        stats.append(np.mean([np.mean(v) for v in per_class.values()]))
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def _rule(features: np.ndarray) -> np.ndarray:
    """Physics alone: the fault type whose line family holds the largest share."""
    names = order_feature_names()
    shares = np.column_stack([features[:, names.index(f"share_{OWN_LINE[c]}")] for c in FAULTS])
    return np.asarray(FAULTS)[shares.argmax(axis=1)]


def _evaluate(train: WindowSet, test: WindowSet, kind: str, seed: int) -> dict:
    settings = get_settings()
    band_scores: dict[str, float] = {}
    band = None
    if kind == "current":
        config = FeatureConfig(sample_rate=SAMPLE_RATE, window=train.windows.shape[1])
        f_train = extract_features(train.windows, train.rpm, config)
        f_test = extract_features(test.windows, test.rpm, config)
    else:
        band, band_scores = choose_band(train)
        f_train = order_features(train.windows, train.rpm, OrderConfig(band=band))
        f_test = order_features(test.windows, test.rpm, OrderConfig(band=band))
    faulty = np.isin(test.labels, FAULTS)
    extra: dict = {}
    if kind == "order-rule":
        type_pick = _rule(f_test)
    else:
        fit = train_bundle(settings, train, seed=seed, features=f_train)
        scores, proba = fit.bundle.score_features(f_test)
        type_pick, all_pick = type_predictions(proba, fit.bundle.labels)
        flagged = scores > fit.bundle.threshold
        extra = {
            "macro_accuracy_4class": round(
                macro_accuracy(test.labels, all_pick, (*FAULTS, NORMAL)), 4
            ),
            "anomaly_auroc": round(float(roc_auc_score(test.is_fault, scores)), 4),
            "recall_at_threshold": round(float(flagged[faulty].mean()), 4),
            "false_alarm_rate": round(float(flagged[~test.is_fault].mean()), 4),
        }
    per_recording = {
        str(s): round(float(np.mean(type_pick[rows] == test.labels[rows])), 4)
        for s in np.unique(test.sources[faulty])
        for rows in [test.sources == s]
    }
    confusion = {
        c: {p: int(np.sum((test.labels == c) & (type_pick == p))) for p in FAULTS} for c in FAULTS
    }
    lo, hi = block_bootstrap(test.labels, type_pick, test.sources, np.random.default_rng(seed))
    return {
        "features": kind,
        "window": int(train.windows.shape[1]),
        "band_hz": band,
        "band_scores": band_scores,
        "n_features": int(f_train.shape[1]),
        "n_train": len(train),
        "n_test_fault": int(faulty.sum()),
        "type_macro_accuracy": round(macro_accuracy(test.labels, type_pick, FAULTS), 4),
        "type_interval_95": [round(lo, 4), round(hi, 4)],
        "per_recording": per_recording,
        "confusion": confusion,
        **extra,
    }


def _splits(recordings: list, window: int, hop: int, meta: dict[str, str]):
    """(split, train size, test size, train windows, test windows) of every split studied."""
    cut = {
        p: make_windows(recordings, portion=p, window=window, hop=hop, sample_rate=SAMPLE_RATE)
        for p in ("train", "test", "all")
    }
    faults = cut["all"].labels != NORMAL
    for train_size, test_size in (SIZES, SIZES[::-1]):
        # Recording split: whole recordings of the other size; the one normal split in time.
        train = _concat(
            cut["all"].subset(faults & _sized(cut["all"], train_size, meta)),
            cut["train"].subset(cut["train"].labels == NORMAL),
        )
        test = _concat(
            cut["all"].subset(faults & _sized(cut["all"], test_size, meta)),
            cut["test"].subset(cut["test"].labels == NORMAL),
        )
        yield "recording", train_size, test_size, train, test
        # Time split within the training size (the product's benchmark split).
        keep_train = _sized(cut["train"], train_size, meta) | (cut["train"].labels == NORMAL)
        keep_test = _sized(cut["test"], train_size, meta) | (cut["test"].labels == NORMAL)
        yield (
            "time",
            train_size,
            train_size,
            cut["train"].subset(keep_train),
            cut["test"].subset(keep_test),
        )


def main(argv: list[str]) -> dict:
    settings = get_settings()
    recordings = load_manifest(resolve_manifest_dir(settings.data_dir))
    meta = {r.file: r.meta.get("fault_diameter_in", "") for r in recordings}
    results = []
    for window, hop, kinds in ((2048, 512, KINDS), (8192, 2048, KINDS[1:])):
        for split, train_size, test_size, train, test in _splits(recordings, window, hop, meta):
            for kind in kinds:
                row = _evaluate(train, test, kind, seed=0)
                results.append({"split": split, "train": train_size, "test": test_size, **row})
                logger.info("%s window %d %s %s -> %s: %.3f", kind, window, split, train_size,
                            test_size, row["type_macro_accuracy"])  # fmt: skip
    print(
        "| features | window | split | train -> test | band (Hz) | type macro acc | 95 % interval "
        "| per recording | 4-class macro | AUROC |"
    )
    print("|---|---:|---|---|---|---:|---|---|---:|---:|")
    for r in results:
        per = ", ".join(f"{k.split('_')[3]}: {v:.2f}" for k, v in r["per_recording"].items())
        band = "-" if r["band_hz"] is None else f"{r['band_hz'][0]:.0f}-{r['band_hz'][1]:.0f}"
        four = r.get("macro_accuracy_4class")
        auroc = r.get("anomaly_auroc")
        print(
            f"| {r['features']} | {r['window']} | {r['split']} | {r['train']} -> {r['test']} | "
            f"{band} | {r['type_macro_accuracy']:.3f} | {r['type_interval_95'][0]:.3f}-"
            f"{r['type_interval_95'][1]:.3f} | {per} | "
            f"{'-' if four is None else f'{four:.3f}'} | "
            f"{'-' if auroc is None else f'{auroc:.3f}'} |"
        )
    oracle = _oracle_bands(recordings)
    print("Diagnostic, NOT a selection (reads the test recordings): per recording, the best")
    print("share of windows the physics rule names right over every candidate band:")
    for window, rows in oracle.items():
        print(f"  window {window}: " + ", ".join(f"{k}: {v:.2f}" for k, v in rows.items()))
    if "--json" in argv:
        print(json.dumps(results, indent=1))
    return {"results": results, "oracle_rule": oracle}


def _oracle_bands(recordings: list) -> dict[int, dict[str, float]]:
    """Per fault recording, the physics rule's best accuracy over all candidate bands."""
    best: dict[int, dict[str, float]] = {}
    for window in (2048, 8192):
        cut = make_windows(
            [r for r in recordings if r.label in FAULTS],
            portion="all",
            window=window,
            hop=window // 4,
            sample_rate=SAMPLE_RATE,
        )
        rows: dict[str, float] = {}
        for band in BANDS:
            picks = _rule(order_features(cut.windows, cut.rpm, OrderConfig(band=band)))
            for source in np.unique(cut.sources):
                mine = cut.sources == source
                hit = float(np.mean(picks[mine] == cut.labels[mine]))
                key = source.split("_")[3]
                rows[key] = max(rows.get(key, 0.0), hit)
        best[window] = rows
    return best


def _sized(windows: WindowSet, size: str, meta: dict[str, str]) -> np.ndarray:
    return np.array([meta[s] == size for s in windows.sources])


def _concat(a: WindowSet, b: WindowSet) -> WindowSet:
    return WindowSet(
        np.concatenate([a.windows, b.windows]),
        np.concatenate([a.labels, b.labels]),
        np.concatenate([a.rpm, b.rpm]),
        np.concatenate([a.sources, b.sources]),
        np.concatenate([a.starts, b.starts]),
        a.sample_rate,
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(sys.argv[1:])

"""Figures of a vibration run (matplotlib `Figure` objects, no global pyplot state)."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay

from machine_health.domains.vibration.data import NORMAL, WindowSet
from machine_health.domains.vibration.features import DEFECTS, FeatureConfig
from machine_health.domains.vibration.physics import bandpass_sos, envelope_spectrum


def confusion_figure(metrics: dict[str, Any]) -> Figure:
    """Confusion matrix of the fault classifier (rows: true class)."""
    figure = Figure(figsize=(6, 5), layout="constrained")
    axes = figure.subplots()
    classifier = metrics["classifier"]
    ConfusionMatrixDisplay(
        np.asarray(classifier["confusion"]), display_labels=classifier["labels"]
    ).plot(ax=axes, colorbar=False, xticks_rotation=30)
    axes.set_title(f"accuracy {classifier['accuracy']:.4f}, macro-F1 {classifier['macro_f1']:.4f}")
    return figure


def score_histogram(scores: np.ndarray, is_fault: np.ndarray, threshold: float) -> Figure:
    """Anomaly scores of normal vs fault windows (log scale) and the decision threshold."""
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    bins = np.geomspace(max(scores.min(), 1e-3), scores.max() * 1.01, 60)
    axes.hist(scores[~is_fault], bins=bins, alpha=0.7, label=f"normal (n={(~is_fault).sum()})")
    axes.hist(scores[is_fault], bins=bins, alpha=0.7, label=f"fault (n={is_fault.sum()})")
    axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.2f}")
    axes.set_xscale("log")
    axes.set_xlabel("anomaly score (Mahalanobis distance to normal features)")
    axes.set_ylabel("windows")
    axes.legend()
    return figure


def envelope_figure(windows: WindowSet, config: FeatureConfig, max_hz: float = 600) -> Figure:
    """Mean envelope spectrum of each class with the defect frequencies marked."""
    labels = sorted(set(windows.labels.tolist()), key=lambda label: (label != NORMAL, label))
    figure = Figure(figsize=(8, 2.2 * len(labels)), layout="constrained")
    axes_list = np.atleast_1d(figure.subplots(len(labels), 1, sharex=True))
    sos = bandpass_sos(*config.envelope_band, config.sample_rate)
    rpm = np.nanmedian(windows.rpm) if np.isfinite(windows.rpm).any() else config.nominal_rpm
    lines = config.bearing.defect_frequencies(float(rpm))
    colours = dict(zip((*DEFECTS, "shaft"), ("C1", "C2", "C3", "C4", "C7"), strict=True))
    for axes, label in zip(axes_list, labels, strict=True):
        rows = windows.windows[windows.labels == label][:200]
        freqs, amp = envelope_spectrum(
            rows, config.sample_rate, sos, n_fft=rows.shape[1] * config.envelope_pad
        )
        keep = freqs <= max_hz
        axes.plot(freqs[keep], amp[:, keep].mean(axis=0), color="C0", linewidth=1)
        for name, hz in lines.items():
            axes.axvline(hz, color=colours[name], linestyle=":", label=f"{name} {hz:.0f} Hz")
        axes.set_title(f"{label} ({len(rows)} windows)", fontsize=9)
        axes.set_ylabel("envelope")
    axes_list[0].legend(fontsize=7, ncol=5, loc="upper right")
    axes_list[-1].set_xlabel(f"Hz (band-pass {config.envelope_band[0]:.0f}-"
                             f"{config.envelope_band[1]:.0f} Hz, rpm {rpm:.0f})")  # fmt: skip
    return figure

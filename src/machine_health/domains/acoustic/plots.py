"""Figures of an acoustic training run (matplotlib `Figure` objects, no global pyplot state)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from machine_health.domains.acoustic.data import NORMAL

if TYPE_CHECKING:
    from machine_health.domains.acoustic.bundle import AcousticBundle
    from machine_health.domains.acoustic.training import Prepared


def score_figure(bundle: AcousticBundle, prepared: Prepared) -> Figure:
    """Anomaly scores of the `validation` clips, normal vs anomalous, and the alarm threshold."""
    rows = prepared.part("validation")
    scores = bundle.score_spectrograms(list(prepared.spectra[rows]))
    normal = [c.label == NORMAL for c, keep in zip(prepared.clips.clips, rows, strict=True) if keep]
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    for label, flag in (("normal", True), ("anomaly", False)):
        ax.hist([s for s, n in zip(scores, normal, strict=True) if n == flag], bins=20,
                alpha=0.6, label=label)  # fmt: skip
    ax.axvline(bundle.threshold, color="black", linestyle="--", label="threshold")
    title = f"validation scores (threshold at {bundle.target_fpr:.0%} false alarms)"
    ax.set(xlabel="anomaly score", ylabel="validation clips", title=title)
    ax.legend()
    fig.tight_layout()
    return fig

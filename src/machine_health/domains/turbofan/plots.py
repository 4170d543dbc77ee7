"""Figures of a turbofan run (logged to MLflow by `workflow` and the pipeline's train step)."""

from __future__ import annotations

from typing import Any

import numpy as np


def plot_predictions(rul_true: np.ndarray, rul_pred: np.ndarray, title: str) -> Any:
    """Predicted vs true RUL per test unit, units sorted by true RUL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(rul_true)
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(np.asarray(rul_true)[order], "k-", label="true RUL")
    ax.plot(np.asarray(rul_pred)[order], "o", ms=3, label="predicted RUL")
    ax.set_xlabel("test unit (sorted by true RUL)")
    ax.set_ylabel("RUL (cycles)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_learning_curves(history: dict[str, dict[str, list[float]]], title: str) -> Any:
    """Training and validation loss per epoch (or per tree for boosting) of every member."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, curves in history.items():
        for key, style in (("loss", "-"), ("val_loss", "--")):
            if curves.get(key):
                ax.plot(curves[key], style, label=f"{name} {key}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch (trees for hgb)")
    ax.set_ylabel("MSE of RUL / cap")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig

"""Draw images/architecture.png, the README's picture of the loop.

Run: .venv/bin/python scripts/draw_architecture.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

BOXES = {
    "clients": (0.2, 4.2, "Clients\n(motors, engines,\nscripts)", "#e8eef7"),
    "api": (3.2, 4.2, "FastAPI serving pods\nJWT · /predict · /reload\nN replicas", "#d6eadf"),
    "mongo": (6.6, 4.2, "MongoDB\n(archive of every\nprediction + labels)", "#fbe3c9"),
    "ui": (0.2, 0.1, "Streamlit UI\n(over the API)", "#e8eef7"),
    "airflow": (
        6.6,
        1.9,
        "Airflow DAG per domain\nKubernetesPodOperator\nor local runner",
        "#e6dcf2",
    ),
    "steps": (
        3.2,
        0.1,
        "extract ▸ validate ▸ rescale ▸ train\n▸ evaluate-gate ▸ register ▸ reload",
        "#f3f3f3",
    ),
    "mlflow": (3.2, 1.9, "MLflow registry\n@champion @challenger\n@previous (DagsHub)", "#f7d9d9"),
}
W, H = 2.7, 1.3


def center(name: str, dx: float = 0.5, dy: float = 0.5) -> tuple[float, float]:
    x, y, *_ = BOXES[name]
    return x + W * dx, y + H * dy


def arrow(
    ax, a: tuple[float, float], b: tuple[float, float], text: str = "", rad: float = 0
) -> None:
    ax.add_patch(
        FancyArrowPatch(
            a,
            b,
            arrowstyle="-|>",
            mutation_scale=14,
            lw=1.3,
            color="#444",
            connectionstyle=f"arc3,rad={rad}",
        )
    )
    if text:
        ax.text(
            (a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 0.12, text, ha="center", fontsize=8, color="#333"
        )


def main() -> None:
    fig, ax = plt.subplots(figsize=(10, 6.2), dpi=120)
    for x, y, label, colour in BOXES.values():
        ax.add_patch(FancyBboxPatch((x, y), W, H, boxstyle="round,pad=0.05", fc=colour, ec="#555"))
        ax.text(x + W / 2, y + H / 2, label, ha="center", va="center", fontsize=9)
    arrow(ax, center("clients", 1), center("api", 0), "JWT")
    arrow(ax, center("api", 1), center("mongo", 0), "archive")
    arrow(ax, center("ui", 0.5, 1), center("api", 0.1, 0), "HTTP")
    arrow(ax, center("mongo", 0.5, 0), center("airflow", 0.5, 1), "labelled data")
    arrow(ax, center("airflow", 0.5, 0), center("steps", 1, 0.5), "pods")
    arrow(ax, center("steps", 0.5, 1), center("mlflow", 0.5, 0), "register")
    arrow(ax, center("mlflow", 0.5, 1), center("api", 0.5, 0), "load @champion")
    arrow(ax, center("steps", 0, 0.8), center("api", 0, 0.3), "", rad=-0.6)
    ax.text(1.2, 2.6, "PUT /reload on\nevery replica", fontsize=8, ha="center")
    ax.set_xlim(0, 9.6)
    ax.set_ylim(-0.1, 5.7)
    ax.axis("off")
    ax.set_title("machine-health: the loop from prediction to retraining", fontsize=12)
    out = Path(__file__).resolve().parents[1] / "images" / "architecture.png"
    fig.savefig(out, bbox_inches="tight")
    print(out)


if __name__ == "__main__":
    main()

"""What the Streamlit pages draw for one domain: the `VIEW` of a domain's `<package>.ui` module.

Kept apart from `Domain` because the UI image carries no scikit-learn, TensorFlow, MLflow or
store driver: a domain's `ui` module (and its package's `__init__`) may import Streamlit, pandas,
numpy, scipy and `machine_health.ui`, and reads everything else through the API.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar


class DomainView(ABC):
    """The per-domain parts of the predictions, test-prediction, projection and drift pages."""

    #: The live-performance metric the drift page plots over time, per model version.
    performance_metric: ClassVar[str]
    #: Colour options of the projection page: point column -> whether it is a category.
    projection_colours: ClassVar[dict[str, bool]]
    #: How the true labels arrive, in words (the drift page's hint when none has).
    labels_hint: ClassVar[str]

    @abstractmethod
    def summary(self, output: dict[str, Any]) -> str:
        """One line saying what the model answered (an archived prediction's `output`)."""

    @abstractmethod
    def show_prediction(self, item: dict[str, Any]) -> None:
        """The predictions page's detail of one archived prediction (a GET /predictions item)."""

    @abstractmethod
    def test_body(self) -> dict[str, Any] | None:
        """The test-prediction page's form: a request body, or None until one is complete."""

    @abstractmethod
    def show_answer(
        self, body: dict[str, Any], answer: dict[str, Any], columns: Sequence[Any]
    ) -> None:
        """A /predict-test answer: its two main figures in `columns` (two Streamlit columns),
        then any chart of the input below them."""


def show_anomaly_score(column: Any, output: dict[str, Any]) -> None:
    """An anomaly detector's score in a Streamlit column, the threshold in the help."""
    column.metric(
        "Anomaly score",
        f"{output.get('anomaly_score', 0):.3f}",
        help=f"threshold {output.get('threshold', 0):.3f}",
    )


def show_score_and_label(columns: Sequence[Any], output: dict[str, Any], label: Any) -> None:
    """An anomaly detector's archived answer in two Streamlit columns: its score
    (`show_anomaly_score`) and the prediction's true label, if any."""
    show_anomaly_score(columns[0], output)
    columns[1].metric("Label", label or "not labelled")

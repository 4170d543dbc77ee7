"""The domain interface: what a kind of machine (vibration, turbofan, ...) must provide.

A domain is one package implementing `Domain`; the API, the pipeline steps, the monitoring, the
CLI and the UI only speak to this interface (they never compare domain names), so a third domain
is one new package registered in `machine_health.domains.DOMAINS` (see the README's "Adding a
domain"). Besides `Domain`, a package may hold two light modules found by name:
`<package>.commands` (Typer commands `train`, `benchmark`, `evaluate`) and `<package>.ui` (a
`machine_health.domains.view.DomainView` named `VIEW`, what the Streamlit pages draw).

A trained model is a `ModelBundle`: every fitted transform (scalers, regime normalisation,
feature selection, thresholds) together with the estimator, saved as ONE directory and
registered as ONE MLflow artifact, so serving can never pair a model with the wrong scaler.
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from pydantic import BaseModel

from machine_health.errors import ModelError

if TYPE_CHECKING:  # heavy or circular at import time; the methods receive them ready-made
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    from rich.progress import Progress

    from machine_health.config import Settings
    from machine_health.simulate import ReplayOptions, Tally

BUNDLE_MANIFEST = "bundle.json"
#: the keys every explanation holds (`ModelBundle.explain`)
EXPLANATION_KEYS = ("method", "summary", "evidence")
BUNDLE_FORMAT_VERSION = 1


class ModelBundle(ABC):
    """Fitted transforms + model of one domain, saved and loaded as one directory."""

    domain: ClassVar[str]

    @abstractmethod
    def save_files(self, path: Path) -> None:
        """Write the bundle's own files into the (existing, empty) directory `path`."""

    @classmethod
    @abstractmethod
    def load_files(cls, path: Path) -> ModelBundle:
        """Read what `save_files` wrote."""

    @abstractmethod
    def predict(self, inputs: Sequence[Any]) -> list[dict[str, Any]]:
        """Score a batch of domain inputs (one model call for the whole batch)."""

    @abstractmethod
    def smoke_inputs(self) -> list[Any]:
        """A few real inputs kept from training; a loadable model must score them finitely."""

    def describe(self) -> dict[str, Any]:
        """Small JSON-able facts about the model (kind, features, window...)."""
        return {}

    def explain(
        self, inputs: Sequence[Any], outputs: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Why each output is what it is: one compact JSON-able explanation per input (the same
        inputs `predict` took, and its outputs for them), with the evidence ranked, most
        important first. Shape (`EXPLANATION_KEYS`): `method` (how it was made), `summary` (one
        line an operator reads) and `evidence` (a list of `{"name", "value", ...}` rows, at most
        a few), plus domain-specific keys. Costs more than `predict`: the API calls it only
        when a request asks (`?explain=true`) or in the background, never on the hot path."""
        raise NotImplementedError(f"{type(self).__name__} gives no explanation")

    # --- one directory, one manifest ------------------------------------------------------
    def save(self, path: Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=False)
        cls = type(self)
        manifest = {
            "format_version": BUNDLE_FORMAT_VERSION,
            "domain": self.domain,
            "class": f"{cls.__module__}:{cls.__qualname__}",
            "describe": self.describe(),
        }
        self.save_files(path)
        (path / BUNDLE_MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        return path


def load_bundle(path: Path) -> ModelBundle:
    """Load any domain's bundle from its directory, refusing classes outside our domains."""
    path = Path(path)
    manifest_path = path / BUNDLE_MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{manifest_path}: not a model bundle ({exc})") from exc
    if manifest.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise ModelError(
            f"{manifest_path}: unsupported bundle format {manifest.get('format_version')!r}"
        )
    module_name, _, class_name = str(manifest.get("class", "")).partition(":")
    # Only our own domain modules may be imported from a manifest read off the registry.
    if not module_name.startswith("machine_health.domains."):
        raise ModelError(
            f"{manifest_path}: bundle class {module_name!r} is not a machine-health domain"
        )
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"{manifest_path}: cannot import bundle class ({exc})") from exc
    if not (isinstance(cls, type) and issubclass(cls, ModelBundle)):
        raise ModelError(f"{manifest_path}: {class_name} is not a ModelBundle")
    try:
        return cls.load_files(path)
    except ModelError:
        raise
    except Exception as exc:  # a corrupt artifact can fail in any library; report it as ours
        raise ModelError(f"{path}: cannot load {class_name} ({type(exc).__name__}: {exc})") from exc


#: How a domain's true labels reach the archive:
#: - "feedback": an operator posts the inspected label of ONE prediction (POST /feedback);
#: - "failure_backfill": a unit's failure cycle (POST /assets/{unit_id}/failure) back-fills the
#:   label (cycles left) of every archived cycle of that unit.
LabelMode = Literal["feedback", "failure_backfill"]


class Workspace(Protocol):
    """What a domain uses of a retraining run's workspace (`pipeline.workspace.Workspace`)."""

    def file(self, name: str) -> Path:
        """The path of `name` in the run's directory."""
        ...


class Reference(Protocol):
    """What a domain uses of a drift reference (`monitoring.reference.Reference`)."""

    #: what the training that logged it recorded (e.g. its feature configuration)
    meta: dict[str, Any]


#: (rule, boolean mask of the snapshot rows that break it): one finding of the validate step.
Problem = tuple[str, "np.ndarray"]


@dataclass
class TrainingSet:
    """What a domain's `train` takes (its own type in `data`), plus facts for the run's params."""

    data: Any
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvaluationSet:
    """The frozen held-out data champion and challenger are both scored on, plus facts (the
    excluded units/windows) for the gate report."""

    data: Any
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class ItemScores:
    """One bundle's per-item outputs on one gate slice, from which the slice's metrics can be
    recomputed on any resample of its items (the gate's paired bootstrap, `pipeline.bootstrap`).

    Champion and challenger are scored on the same items in the same order, so one resample of
    the groups indexes both."""

    #: per item: the resampling unit (a turbofan unit, a block of a recording or asset, a clip);
    #: items of one group are correlated (overlapping windows), so whole groups are drawn
    groups: np.ndarray
    #: per-item arrays (truth, prediction, score...) that `metrics` reads
    columns: dict[str, np.ndarray]
    #: the metrics of a subset of the items (`columns` indexed by a resample); None: undefined
    metrics: Callable[[dict[str, np.ndarray]], dict[str, float | None]]
    #: the metrics the gate judges on this slice and whether lower or higher is better (the
    #: domain's `primary_metrics`, or what a slice's labels can define, e.g. no source/target
    #: split in field clips)
    directions: dict[str, Literal["min", "max"]]
    #: per item: groups are drawn within their stratum (keeps the class balance); None: one
    strata: np.ndarray | None = None


#: share of each asset group's most recent labelled rows the field slice holds out of training
FIELD_SHARE = 0.2
#: at most this many snapshot rows in the field slice (the most recent ones): bounded scoring time
FIELD_MAX_ROWS = 5000


def recent_rows(
    table: pa.Table, share: float = FIELD_SHARE, cap: int = FIELD_MAX_ROWS
) -> np.ndarray:
    """Mask of the last `share` of each asset's rows by time of observation (`created_at`),
    at most `cap` rows overall (the most recent): the default field holdout."""
    import numpy as np

    n = table.num_rows
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    assets = np.asarray(table.column("asset_id").to_pylist(), dtype=object).astype(str)
    times = table.column("created_at").cast("int64").to_numpy(zero_copy_only=False)
    times = np.nan_to_num(times.astype("float64"), nan=-np.inf)
    for asset in np.unique(assets):
        rows = np.flatnonzero(assets == asset)
        take = int(share * len(rows))
        if take:
            mask[rows[np.argsort(times[rows], kind="stable")[-take:]]] = True
    if mask.sum() > cap:
        held = np.flatnonzero(mask)
        mask[held[np.argsort(times[held], kind="stable")[:-cap]]] = False
    return mask


def round_robin(groups: Sequence[Sequence[Any]]) -> list[Any]:
    """The items of `groups` interleaved: the first of each group, then the second of each...
    (the demo's traffic mixes its assets and classes this way)."""
    longest = max((len(g) for g in groups), default=0)
    return [g[i] for i in range(longest) for g in groups if i < len(g)]


def labelled_by_version(
    records: Iterable[Mapping[str, Any]], output_key: str
) -> dict[str, list[Mapping[str, Any]]]:
    """The archived predictions that carry a true label and `output_key` in their output, per
    model version (in their order): what a domain's live performance scores."""
    by_version: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        if record.get("label") is not None and output_key in (record.get("output") or {}):
            by_version[str(record["model_version"])].append(record)
    return by_version


@dataclass(frozen=True)
class TrainResult:
    """What the pipeline's train step gets back from `Domain.train`."""

    bundle: ModelBundle
    #: flat numeric facts of the training (seconds, validation scores...) for the step's result
    metrics: dict[str, float]


#: The `Domain` methods a domain implements as module functions of the same name and signature
#: (without `self`), per part: `Domain.parts` names the module of each part.
PART_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "retrain": (
        "snapshot_schema", "snapshot_row", "validation_problems", "validation_facts",
        "training_set", "reference_set", "field_set", "evaluation_set", "rescale",
        "transform_gap", "train",
    ),
    "reference": ("item_scores", "live_item_scores"),
    "monitoring": ("projection_features",),
}  # fmt: skip


class Domain(ABC):
    """One kind of machine: schemas, data, training, evaluation, monitoring and labels.

    Heavy libraries (TensorFlow, scikit-learn, MLflow, matplotlib) are imported inside the
    methods (or the submodules they call), never by the module defining the subclass: the API
    imports every registered domain at start-up, the CLI and the UI import their light parts.

    The methods listed in `PART_FUNCTIONS` delegate to the same-named function of the module a
    subclass declares for that part in `parts` (imported on first use); a subclass may still
    override any of them where it does more than delegate.
    """

    name: ClassVar[str]
    #: One scoring request item (what a client posts to /predict/{domain}); its field
    #: constraints are the validation ranges of a request.
    input_model: ClassVar[type[BaseModel]]
    #: What the API answers for one item.
    output_model: ClassVar[type[BaseModel]]
    #: The metrics the retraining gate compares, and whether lower or higher is better.
    primary_metrics: ClassVar[dict[str, Literal["min", "max"]]]
    #: How true labels arrive (see `LabelMode`); /feedback accepts only "feedback" domains.
    label_mode: ClassVar[LabelMode]
    #: Labelled units (sequence domains) or predictions a model version needs before its live
    #: performance is judged (fewer: "insufficient_labels", never a retrain trigger).
    min_labelled: ClassVar[int]
    #: Columns of the live-performance table (`machine-health performance`), after the
    #: version, its status and its verdict.
    live_columns: ClassVar[tuple[str, ...]]
    #: The module implementing each part of `PART_FUNCTIONS` (part -> dotted module name),
    #: e.g. `{"retrain": "machine_health.domains.<name>.retrain", "reference": ..., ...}`.
    parts: ClassVar[Mapping[str, str]]

    def part(self, name: str) -> ModuleType:
        """The module implementing part `name` (see `parts`), imported on first use."""
        return importlib.import_module(self.parts[name])

    # --- requests -------------------------------------------------------------------------
    @abstractmethod
    def example_input(self, data_dir: Path) -> dict[str, Any]:
        """A real input built from the data set (OpenAPI examples, smoke calls, the demo)."""

    def archived_input(self, item: BaseModel) -> dict[str, Any] | None:
        """What the archive keeps of one validated request item, or None to keep the item as
        it is (a waveform's samples stored as float32 bytes). A domain whose inputs are large
        (e.g. audio) keeps a compact form here, which its `snapshot_row`, `drift_features`
        and UI view read back."""
        return None

    # --- retraining pipeline: extract, validate, rescale, train, evaluate -------------------
    def snapshot_schema(self) -> pa.Schema:
        """Columns of the extract step's Parquet snapshot after the common ones
        (`pipeline.extract.COMMON_FIELDS`), ending with `label`."""
        return self.part("retrain").snapshot_schema()

    def snapshot_row(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """The domain's columns of one archived labelled prediction (malformed values are kept
        visible as None/NaN for the validate step to report, never dropped here)."""
        return self.part("retrain").snapshot_row(doc)

    def validation_problems(self, table: pa.Table, settings: Settings) -> list[Problem]:
        """Every rule a snapshot row breaks (the validate step quarantines those rows)."""
        return self.part("retrain").validation_problems(table, settings)

    def validation_facts(self, table: pa.Table) -> dict[str, Any]:
        """Facts of the validated snapshot for the validate step's result (label balance...)."""
        return self.part("retrain").validation_facts(table)

    def training_set(self, settings: Settings, table: pa.Table) -> TrainingSet:
        """The base real training data WITHOUT the reference carve-out (`reference_set`) + the
        snapshot's labelled rows (the field holdout already removed), as `train` takes them."""
        return self.part("retrain").training_set(settings, table)

    #: What the frozen reference slice is (recorded with every trained model and gate report).
    reference_rule: ClassVar[str]

    def reference_set(self, settings: Settings) -> EvaluationSet:
        """The gate's frozen REFERENCE slice: a fixed, deterministic carve-out of the base
        TRAINING data (never the headline test data) that `training_set` excludes, so neither a
        retrained challenger nor a champion trained by this code ever fitted it."""
        return self.part("retrain").reference_set(settings)

    def field_holdout(self, table: pa.Table) -> np.ndarray:
        """Mask of the snapshot rows held out of this retrain as the gate's FIELD slice: the most
        recent labelled rows of each asset group (`recent_rows`). The pipeline gives
        `training_set` the other rows and `field_set` these."""
        return recent_rows(table)

    def field_set(self, settings: Settings, table: pa.Table) -> EvaluationSet | None:
        """The held-out snapshot rows (`field_holdout`) as scorable data; None when they hold
        nothing the domain can score."""
        return self.part("retrain").field_set(settings, table)

    def item_scores(self, bundle: ModelBundle, evaluation: EvaluationSet) -> ItemScores:
        """`bundle`'s per-item outputs on a reference or field slice (see `ItemScores`)."""
        return self.part("reference").item_scores(bundle, evaluation)

    def live_item_scores(
        self, records: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, Any]]
    ) -> ItemScores | None:
        """The per-item scores of `outputs` (one per archived labelled record, e.g. the
        champion's answers or the shadow's outputs for the same requests) against the records'
        labels, grouped as the records are correlated: what a shadow is judged on, paired with
        the champion (`monitoring.shadow`). None when no record is usable."""
        return self.part("reference").live_item_scores(records, outputs)

    def evaluation_set(self, settings: Settings, table: pa.Table) -> EvaluationSet:
        """The real held-out headline test data minus anything the snapshot holds (the demo
        replays test data, so a model must never be scored on what it trained on);
        `ValidationFailed` when nothing is left. Reported beside the gate, never judged."""
        return self.part("retrain").evaluation_set(settings, table)

    def rescale(self, settings: Settings, training: TrainingSet, ws: Workspace) -> dict[str, Any]:
        """Fit the feature scaling exactly as `train` will, write it and the rescaled training
        set into the workspace; return the step's facts (with `transform`: the file)."""
        return self.part("retrain").rescale(settings, training, ws)

    def transform_gap(self, bundle: ModelBundle, ws: Workspace) -> float:
        """Largest difference between the bundle's fitted scaling and the one `rescale` wrote
        (0: the bundle carries exactly this run's transform)."""
        return self.part("retrain").transform_gap(bundle, ws)

    def train(self, settings: Settings, training: TrainingSet, ws: Workspace) -> TrainResult:
        """Train the challenger and log its params, metrics, plots and drift reference into the
        active MLflow run (the caller opened it and logs the bundle)."""
        return self.part("retrain").train(settings, training, ws)

    @abstractmethod
    def score(self, bundle: ModelBundle, evaluation: EvaluationSet) -> dict[str, float]:
        """The domain's metrics of `bundle` on the evaluation set (flat name -> value; holds
        every `primary_metrics` name)."""

    # --- monitoring -----------------------------------------------------------------------
    @abstractmethod
    def drift_features(
        self, records: Sequence[Mapping[str, Any]], reference: Reference
    ) -> tuple[pd.DataFrame, list[str] | None]:
        """The drift features of archived predictions, comparable with `reference` (the one
        `train` logged), and the sampling unit of each row (None: rows are independent)."""

    def projection_features(
        self, records: Sequence[Mapping[str, Any]], bundle: ModelBundle | None
    ) -> pd.DataFrame:
        """One row of features per archived record for the projection page (the drift features,
        with the served `bundle`'s configuration when it has one); NaN where a record's
        features cannot be made."""
        return self.part("monitoring").projection_features(records, bundle)

    @abstractmethod
    def live_performance(
        self, records: Sequence[Mapping[str, Any]], settings: Settings
    ) -> dict[str, dict[str, Any]]:
        """Per model version: metrics of labelled archived predictions and `status` ("ok" or
        "insufficient_labels" below `min_labelled`)."""

    @abstractmethod
    def degraded(self, metrics: Mapping[str, Any], settings: Settings) -> bool:
        """Whether one version's live metrics (status "ok") cross the retraining threshold."""

    # --- the demo's traffic ---------------------------------------------------------------
    @abstractmethod
    async def replay(
        self, client: Any, data_root: Path, options: ReplayOptions, tally: Tally,
        progress: Progress,
    ) -> None:  # fmt: skip
        """Post the domain's real test data to /predict/{name} through `client` (an
        authenticated httpx.AsyncClient), then its true labels the way they arrive."""

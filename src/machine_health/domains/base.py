"""The domain interface: what a kind of machine (vibration, turbofan, ...) must provide.

A domain is one module (or package) implementing `Domain` plus its data loader; the API, the
pipeline steps, the registry and the UI only speak to this interface, so a third domain is one
new module registered in `machine_health.domains.DOMAINS`.

A trained model is a `ModelBundle`: every fitted transform (scalers, regime normalisation,
feature selection, thresholds) together with the estimator, saved as ONE directory and
registered as ONE MLflow artifact, so serving can never pair a model with the wrong scaler.
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel

from machine_health.errors import ModelError

BUNDLE_MANIFEST = "bundle.json"
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


class Domain(ABC):
    """One kind of machine: schemas, training, evaluation and labels."""

    name: ClassVar[str]
    #: One scoring request item (what a client posts to /predict/{domain}).
    input_model: ClassVar[type[BaseModel]]
    #: What the API answers for one item.
    output_model: ClassVar[type[BaseModel]]
    #: The metrics the retraining gate compares, and whether lower or higher is better.
    primary_metrics: ClassVar[dict[str, Literal["min", "max"]]]

    @abstractmethod
    def example_input(self, data_dir: Path) -> dict[str, Any]:
        """A real input built from the data set (OpenAPI examples, smoke calls, the demo)."""

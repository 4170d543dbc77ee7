"""The session's trained models: every domain trained ONCE per test session, with their own
training functions (small, fast settings), into a session MLflow store.

`trained_models` (the fixture of tests/conftest.py) is that store: API tests point
`MH_MLFLOW_TRACKING_URI` at it, so servers load real `@champion` models without training, and
some register more versions into it. `pristine_models` is a copy of the registry database as
training left it (version 1 of each domain, nothing registered since), for tests that list the
versions; its artifacts are the session's, read in place. Tests that promote, roll back or
register corrupt versions copy the bundles into a registry of their own (`register_version`).

MH_TEST_TRAINED_TRACKING_URI may name a tracking store that already holds version 1 of every
domain (e.g. one `make run` trained): training is then skipped (local iteration only).
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from machine_health.config import Settings
from tests.support.paths import DATA_DIR
from tests.support.settings import make_settings

if TYPE_CHECKING:
    from machine_health.monitoring.reference import Reference


@dataclass(frozen=True)
class TrainedModels:
    tracking_uri: str
    vibration_version: str
    turbofan_version: str
    #: a copy of the registry database as training left it (for `pristine_copy`), if one was kept
    as_trained: Path | None = None
    #: the other registered domains' versions (the API is ready once every domain is served)
    others: tuple[tuple[str, str], ...] = ()

    def version(self, domain: str) -> str:
        versions = {"vibration": self.vibration_version, "turbofan": self.turbofan_version}
        return {**versions, **dict(self.others)}[domain]


def train_small_models(var_dir: Path) -> TrainedModels:
    """Register version 1 (@champion) of every registered domain, trained with fast settings."""
    from machine_health.domains import DOMAINS
    from machine_health.domains.turbofan.models import FitConfig
    from machine_health.domains.turbofan.workflow import train_and_register as train_turbofan
    from machine_health.domains.vibration.workflow import train_and_register as train_vibration

    settings = Settings(
        _env_file=None, env="test", var_dir=var_dir, data_dir=DATA_DIR,
        jwt_secret=secrets.token_urlsafe(48), service_token=secrets.token_urlsafe(48),
    )  # fmt: skip
    vibration = train_vibration(settings)
    # No refit on all units: serving tests need a real Keras model, not the best one (-10 s).
    quick = FitConfig(epochs=3, patience=2, refit_all=False)
    turbofan = train_turbofan(settings, model_name="cnn", config=quick)
    others = []
    if "acoustic" in DOMAINS:
        from machine_health.domains.acoustic.workflow import train_and_register as train_acoustic

        others.append(("acoustic", str(train_acoustic(settings)["version"])))
    as_trained = var_dir / "registry-as-trained.db"
    shutil.copyfile(settings.tracking_uri.removeprefix("sqlite:///"), as_trained)
    return TrainedModels(
        tracking_uri=settings.tracking_uri,
        vibration_version=str(vibration["version"]),
        turbofan_version=str(turbofan["version"]),
        as_trained=as_trained,
        others=tuple(others),
    )


def existing_models() -> TrainedModels | None:
    """The models MH_TEST_TRAINED_TRACKING_URI names (version 1 of every domain), if set."""
    existing = os.environ.get("MH_TEST_TRAINED_TRACKING_URI")
    if not existing:
        return None
    as_trained = None
    if existing.startswith("sqlite:///"):
        as_trained = Path(existing.removeprefix("sqlite:///"))
    from machine_health.domains import DOMAINS

    others = tuple((d, "1") for d in DOMAINS if d not in ("vibration", "turbofan"))
    return TrainedModels(existing, "1", "1", as_trained=as_trained, others=others)


def pristine_copy(models: TrainedModels, dest_dir: Path) -> TrainedModels:
    """`models` in a registry of their own: a copy of the registry database as training left
    it. The artifacts are read in place; versions added to the copy stay there."""
    if models.as_trained is None:
        raise RuntimeError(f"no copy of {models.tracking_uri} as trained: it is not sqlite")
    dest_dir.mkdir(parents=True, exist_ok=True)
    copy = dest_dir / "mlflow.db"
    shutil.copyfile(models.as_trained, copy)
    return replace(models, tracking_uri=f"sqlite:///{copy}")


def api_settings(
    tmp_path: Path, store_uri: str, models: TrainedModels, **overrides: object
) -> Settings:
    """Test settings whose registry is `models`' tracking store."""
    return make_settings(tmp_path, store_uri, mlflow_tracking_uri=models.tracking_uri, **overrides)


def register_version(
    settings: Settings,
    bundle: Any,
    run_name: str,
    domain: str,
    *,
    aliases: tuple[str, ...] = (),
    reference: Reference | None = None,
) -> str:
    """Register `bundle` as a new version of the domain's model (with `aliases`, and the drift
    `reference` logged beside it as training does); its number."""
    from machine_health import registry
    from machine_health.monitoring.reference import log_reference

    with registry.start_run(settings, run_name=run_name, tags={"domain": domain}):
        if reference is not None:
            log_reference(reference)
        return registry.log_bundle(settings, bundle, aliases=aliases).version


def load_trained(settings: Settings, models: TrainedModels, domain: str) -> Any:
    """The session's trained bundle of `domain` (read from `models`' registry)."""
    from machine_health import registry

    source = settings.model_copy(update={"mlflow_tracking_uri": models.tracking_uri})
    bundle, _ = registry.load(source, domain, version=models.version(domain))
    return bundle


def register_champion(
    settings: Settings, models: TrainedModels, domain: str, reference: Reference | None = None
) -> str:
    """Version 1 @champion of `settings`' own registry: the session's trained `domain` bundle,
    copied (no training) with the drift `reference` training logs beside it; its number."""
    from machine_health import registry

    bundle = load_trained(settings, models, domain)
    return register_version(
        settings, bundle, f"initial-{domain}", domain, aliases=(registry.CHAMPION,),
        reference=reference,
    )  # fmt: skip

"""The only module that talks to MLflow (tracking and model registry).

A model version holds ONE artifact: an MLflow pyfunc model whose `artifacts/bundle/` directory is
the domain's `ModelBundle` (fitted transforms + estimator). Aliases, never stages:
`champion` (served), `challenger` (last registered), `previous` (the champion before the last
promotion, the target of a rollback), `shadow` (scored beside the champion on live requests,
never answering: judged on the labels that arrive, then promoted or dropped).

Local default: sqlite + artifacts under var/mlflow. Production (DagsHub-hosted MLflow or any
tracking server): set MH_MLFLOW_TRACKING_URI and the standard MLFLOW_TRACKING_USERNAME /
MLFLOW_TRACKING_PASSWORD variables; nothing here needs the `dagshub` client.
"""

from __future__ import annotations

import hashlib
import logging
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from machine_health import __version__
from machine_health.config import Settings
from machine_health.domains.base import ModelBundle, load_bundle
from machine_health.errors import (
    AlreadyExists,
    ConfigurationError,
    ModelError,
    ModelNotFound,
    ModelRejected,
)

logger = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
#: the version every replica also scores each request with, archived beside the answer
SHADOW = "shadow"
#: what a served model is for: the answer (`champion`), or scored beside it (`shadow`)
Slot = Literal["champion", "shadow"]


def slot_key(domain: str, slot: Slot) -> str:
    """How a replica's workers name a served model (`D`, or `D@shadow`): their heartbeats, the
    versions they were asked to follow, and what the reload step reads back."""
    return domain if slot == "champion" else f"{domain}@{SHADOW}"


#: model-version tag: sha256 of every file of the version's artifact, recorded at registration
#: and checked at every load (`artifact_digest`)
DIGEST_TAG = "artifact_sha256"
_BUNDLE_ARTIFACT = "bundle"
_MODEL_NAME_IN_RUN = "model"


@dataclass(frozen=True)
class ModelRef:
    """Which registry version a bundle came from."""

    name: str
    version: str
    alias: str | None
    run_id: str | None
    source: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class BundlePyfunc(mlflow.pyfunc.PythonModel):
    """Lets generic MLflow tooling (`mlflow models serve`, pyfunc.load_model) use a bundle."""

    def load_context(self, context: Any) -> None:
        self.bundle = load_bundle(Path(context.artifacts[_BUNDLE_ARTIFACT]))

    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        records = (
            model_input.to_dict(orient="records")
            if hasattr(model_input, "to_dict")
            else model_input
        )
        return self.bundle.predict(records)


#: written into a logged model by MLflow itself at each registration (the registered name and
#: version; a second registration of the same logged model rewrites it), read by nothing here
_REGISTRY_META = "registered_model_meta"


def artifact_digest(directory: Path) -> str:
    """sha256 over every file of a downloaded model (relative path and content sha256 of each,
    in path order), MLflow's own `registered_model_meta` aside: any changed, added, removed or
    renamed file changes it."""
    outer = hashlib.sha256()
    files = (p for p in directory.rglob("*") if p.is_file())
    for file in sorted(f for f in files if f.relative_to(directory).as_posix() != _REGISTRY_META):
        inner = hashlib.sha256()
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                inner.update(block)
        outer.update(f"{file.relative_to(directory).as_posix()}\0{inner.hexdigest()}\n".encode())
    return outer.hexdigest()


def _digest_of(uri: str) -> str:
    with tempfile.TemporaryDirectory(prefix="mh-pin-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        except (MlflowException, OSError) as exc:
            raise ModelError(f"cannot read {uri} to pin its digest: {exc}") from exc
        return artifact_digest(Path(local))


def _verify_digest(mv: Any, local: Path, what: str) -> None:
    """Refuse a downloaded version whose files differ from what was registered."""
    expected = (mv.tags or {}).get(DIGEST_TAG)
    if expected is None:  # registered before digests were recorded
        logger.warning("%s has no %s tag: loaded without a digest check", what, DIGEST_TAG)
        return
    actual = artifact_digest(local)
    if actual != expected:
        raise ModelRejected(
            f"{what}: artifact digest mismatch (registered sha256 {expected[:16]}..., "
            f"downloaded {actual[:16]}...): the stored files changed after registration; refused"
        )


def configure(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured store and make sure the experiment exists."""
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    except MlflowException as exc:
        if _auth_refused(exc):
            raise ConfigurationError(
                f"the MLflow tracking server at {uri} refused the credentials "
                "(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD): "
                f"{exc.error_code or 'HTTP 401/403'}"
            ) from exc
        raise
    if experiment is None:
        # A local store keeps artifacts beside the db; a server decides its own location.
        location = settings.artifact_root.as_uri() if uri.startswith("sqlite:") else None
        client.create_experiment(settings.mlflow_experiment, artifact_location=location)
    mlflow.set_experiment(settings.mlflow_experiment)
    return client


def _auth_refused(exc: MlflowException) -> bool:
    """A 401/403 answer of a tracking server (a DagsHub token that is wrong or expired)."""
    if exc.error_code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return True
    return re.search(r"\berror code 40[13]\b", str(exc)) is not None


def git_commit() -> str:
    """The commit of the running code, or 'unknown' outside a checkout (e.g. in an image)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


@contextmanager
def start_run(
    settings: Settings, *, run_name: str, tags: Mapping[str, str] | None = None
) -> Iterator[Run]:
    """An MLflow run tagged with the code version; nested inside an active run if any."""
    configure(settings)
    all_tags = {"machine_health.version": __version__, "git_commit": git_commit(), **(tags or {})}
    with mlflow.start_run(
        run_name=run_name, tags=all_tags, nested=mlflow.active_run() is not None
    ) as run:
        yield run


def end_abandoned_runs(settings: Settings, tags: Mapping[str, str]) -> list[str]:
    """Mark KILLED the runs with these tags still RUNNING: a try that was killed mid-run (a
    retried pipeline step) never ended its run. Returns their ids."""
    client = configure(settings)
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    # The tags are matched here, not in the filter string: a run id may hold any character.
    running = client.search_runs(
        [experiment.experiment_id], filter_string="attributes.status = 'RUNNING'"
    )
    runs = [r for r in running if all(r.data.tags.get(k) == v for k, v in tags.items())]
    for run in runs:
        client.set_terminated(run.info.run_id, status="KILLED")
        logger.warning("MLflow run %s of an earlier, killed try marked KILLED", run.info.run_id)
    return [run.info.run_id for run in runs]


def log_bundle(
    settings: Settings,
    bundle: ModelBundle,
    *,
    register: bool = True,
    aliases: tuple[str, ...] = (CHALLENGER,),
) -> ModelRef:
    """Log `bundle` as the pyfunc model of the active run and (by default) register it.

    Must be called inside `start_run`. Returns the new version (or the run's model when not
    registered). The metrics and params of the run are the caller's to log.
    """
    run = mlflow.active_run()
    if run is None:
        raise ModelError("log_bundle needs an active MLflow run (use registry.start_run)")
    name = settings.model_name(bundle.domain)
    with tempfile.TemporaryDirectory(prefix="mh-bundle-") as tmp:
        bundle_dir = bundle.save(Path(tmp) / _BUNDLE_ARTIFACT)
        info = mlflow.pyfunc.log_model(
            name=_MODEL_NAME_IN_RUN,
            python_model=str(Path(__file__).with_name("registry_pyfunc.py")),
            artifacts={_BUNDLE_ARTIFACT: str(bundle_dir)},
            # Explicit requirements: inferring them re-imports the model in a subprocess.
            pip_requirements=[f"machine-health=={__version__}"],
            registered_model_name=name if register else None,
        )
    if not register:
        return ModelRef(
            name=name, version="", alias=None, run_id=run.info.run_id, source=info.model_uri
        )
    version = str(info.registered_model_version)
    client = MlflowClient()
    client.set_model_version_tag(name, version, "domain", bundle.domain)
    # pinned from what the registry now serves for the version, before any alias points at it
    client.set_model_version_tag(name, version, DIGEST_TAG, _digest_of(f"models:/{name}/{version}"))
    for alias in aliases:
        client.set_registered_model_alias(name, alias, version)
    logger.info("registered %s version %s (aliases %s)", name, version, ",".join(aliases) or "-")
    return ModelRef(
        name=name, version=version, alias=aliases[0] if aliases else None, run_id=run.info.run_id
    )


def register_logged(
    settings: Settings,
    domain: str,
    model_uri: str,
    *,
    tags: Mapping[str, str] | None = None,
    aliases: tuple[str, ...] = (CHALLENGER,),
) -> ModelRef:
    """Register a bundle logged earlier (`log_bundle(register=False)`) as a new version.

    Lets a pipeline train in one step and register in another, after its gate.
    """
    configure(settings)
    name = settings.model_name(domain)
    digest = _digest_of(model_uri)  # what the gate evaluated is what gets served
    try:
        mv = mlflow.register_model(
            model_uri, name, tags={"domain": domain, **(tags or {}), DIGEST_TAG: digest}
        )
    except MlflowException as exc:
        raise ModelError(f"cannot register {model_uri} as {name}: {exc}") from exc
    client = MlflowClient()
    for alias in aliases:
        client.set_registered_model_alias(name, alias, str(mv.version))
    logger.info("registered %s version %s (aliases %s)", name, mv.version, ",".join(aliases))
    return ModelRef(
        name=name,
        version=str(mv.version),
        alias=aliases[0] if aliases else None,
        run_id=mv.run_id,
        source=mv.source,
    )


@contextmanager
def resume_run(settings: Settings, run_id: str) -> Iterator[Run]:
    """Re-open a finished run to add artifacts or metrics (e.g. a gate report)."""
    configure(settings)
    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None) as run:
        yield run


def _client(settings: Settings) -> MlflowClient:
    return configure(settings)


def resolve(
    settings: Settings, domain: str, *, alias: str | None = CHAMPION, version: str | None = None
) -> ModelRef:
    """The registry version behind `alias` (or the explicit `version`) of a domain's model."""
    return _resolve(settings, domain, alias=alias, version=version)[0]


def _resolve(
    settings: Settings, domain: str, *, alias: str | None, version: str | None
) -> tuple[ModelRef, Any]:
    """`resolve`, with the MLflow model version it read (its tags: `DIGEST_TAG`)."""
    client = _client(settings)
    name = settings.model_name(domain)
    try:
        if version is not None:
            mv = client.get_model_version(name, str(version))
            alias = None
        else:
            mv = client.get_model_version_by_alias(name, alias or CHAMPION)
    except MlflowException as exc:
        what = f"version {version}" if version is not None else f"alias @{alias}"
        raise ModelNotFound(f"no {what} for model {name!r} ({exc.error_code})") from exc
    ref = ModelRef(
        name=name, version=str(mv.version), alias=alias, run_id=mv.run_id, source=mv.source
    )
    return ref, mv


def load(
    settings: Settings, domain: str, *, alias: str | None = CHAMPION, version: str | None = None
) -> tuple[ModelBundle, ModelRef]:
    """Download the bundle of a registry version, check its digest (`DIGEST_TAG`), load it."""
    ref, mv = _resolve(settings, domain, alias=alias, version=version)
    with tempfile.TemporaryDirectory(prefix="mh-load-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{ref.name}/{ref.version}", dst_path=tmp
            )
        except (MlflowException, OSError) as exc:
            raise ModelError(f"cannot download {ref.name} v{ref.version}: {exc}") from exc
        _verify_digest(mv, Path(local), f"{ref.name} v{ref.version}")
        bundle = load_bundle(Path(local) / "artifacts" / _BUNDLE_ARTIFACT)
    if bundle.domain != domain:
        raise ModelError(
            f"{ref.name} v{ref.version} holds a {bundle.domain!r} model, not {domain!r}"
        )
    return bundle, ref


def load_uri(settings: Settings, uri: str, domain: str) -> tuple[ModelBundle, ModelRef | None]:
    """A `domain` bundle from `models:/<name>@<alias>`, `models:/<name>/<version>`, or a local
    directory (a bundle, or a downloaded MLflow model holding one; its ModelRef is None)."""
    ref: ModelRef | None = None
    if not uri.startswith("models:/"):
        path = Path(uri)
        nested = path / "artifacts" / _BUNDLE_ARTIFACT
        bundle = load_bundle(nested if nested.is_dir() else path)
    else:
        spec = uri.removeprefix("models:/")
        name, at, alias = spec.partition("@")
        version = ""
        if not at:
            name, _, version = spec.rpartition("/")
        if not name or not (alias or version):
            raise ModelNotFound(f"{uri!r}: expected models:/<name>@<alias> or models:/<name>/<n>")
        client = _client(settings)
        try:
            mv = (
                client.get_model_version_by_alias(name, alias)
                if at
                else client.get_model_version(name, version)
            )
        except MlflowException as exc:
            raise ModelNotFound(f"{uri}: no such model version ({exc.error_code})") from exc
        ref = ModelRef(
            name=name, version=str(mv.version), alias=alias or None, run_id=mv.run_id,
            source=mv.source,
        )  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="mh-load-") as tmp:
            try:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{name}/{mv.version}", dst_path=tmp
                )
            except (MlflowException, OSError) as exc:
                raise ModelError(f"cannot download {uri}: {exc}") from exc
            _verify_digest(mv, Path(local), f"{name} v{mv.version}")
            bundle = load_bundle(Path(local) / "artifacts" / _BUNDLE_ARTIFACT)
    if bundle.domain != domain:
        raise ModelError(f"{uri} holds a {bundle.domain!r} model, not {domain!r}")
    return bundle, ref


def load_run_dict(
    settings: Settings, domain: str, version: str, artifact_file: str
) -> dict[str, Any] | None:
    """A JSON artifact (`log_dict`) of the run that registered a version; None when absent."""
    ref = resolve(settings, domain, version=version)
    if not ref.run_id:
        return None
    try:
        return mlflow.artifacts.load_dict(f"runs:/{ref.run_id}/{artifact_file}")
    except (MlflowException, OSError) as exc:
        logger.info("%s v%s: no %s (%s)", ref.name, version, artifact_file, exc)
        return None


def run_artifact_texts(
    settings: Settings, domain: str, version: str, keyword: str, *, max_bytes: int = 1_000_000
) -> dict[str, str]:
    """Path -> text of the JSON/markdown artifacts whose name holds `keyword` (e.g. the gate
    report), in the run that registered a version and one folder deep; empty when none."""
    ref = resolve(settings, domain, version=version)
    if not ref.run_id:
        return {}
    client = _client(settings)
    found: dict[str, str] = {}
    try:
        entries = list(client.list_artifacts(ref.run_id))
        for entry in list(entries):
            if entry.is_dir and keyword in entry.path:
                entries += client.list_artifacts(ref.run_id, entry.path)
        for entry in entries:
            name = entry.path.rsplit("/", 1)[-1]
            if entry.is_dir or keyword not in entry.path or not name.endswith((".json", ".md")):
                continue
            if (entry.file_size or 0) > max_bytes:
                continue
            found[entry.path] = mlflow.artifacts.load_text(f"runs:/{ref.run_id}/{entry.path}")
    except (MlflowException, OSError) as exc:
        logger.info("%s v%s: cannot list %s artifacts (%s)", ref.name, version, keyword, exc)
    return found


def aliases(settings: Settings, domain: str) -> dict[str, str]:
    """alias -> version of a domain's registered model (empty when none is registered)."""
    client = _client(settings)
    try:
        model = client.get_registered_model(settings.model_name(domain))
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise  # anything else is not "no model": a caller must not train a new champion on it
    return {alias: str(v) for alias, v in model.aliases.items()}


def set_alias(settings: Settings, domain: str, alias: str, version: str) -> None:
    _client(settings).set_registered_model_alias(settings.model_name(domain), alias, str(version))


def set_shadow(settings: Settings, domain: str, version: str) -> dict[str, str | None]:
    """Point `shadow` at `version` (every replica scores requests with it too, never answering
    with it); AlreadyExists (409) for the champion itself. The old and new shadow versions."""
    resolve(settings, domain, version=version)  # ModelNotFound before any alias moves
    current = aliases(settings, domain)
    if current.get(CHAMPION) == str(version):  # a conflict with the aliases as they are: 409
        raise AlreadyExists(f"{domain} v{version} is the champion: it cannot shadow itself")
    set_alias(settings, domain, SHADOW, str(version))
    logger.info("%s: shadow %s -> %s", domain, current.get(SHADOW), version)
    return {"old": current.get(SHADOW), "new": str(version)}


def clear_shadow(settings: Settings, domain: str) -> str | None:
    """Remove the `shadow` alias; the version it named (None when there was none)."""
    old = aliases(settings, domain).get(SHADOW)
    if old is not None:
        _client(settings).delete_registered_model_alias(settings.model_name(domain), SHADOW)
        logger.info("%s: shadow v%s dropped", domain, old)
    return old


def promote(settings: Settings, domain: str, version: str) -> dict[str, str | None]:
    """Move `champion` to `version`; the old champion becomes `previous`. A version promoted
    from the shadow stops being the shadow (a champion never shadows itself)."""
    current = aliases(settings, domain)
    old = current.get(CHAMPION)
    if current.get(SHADOW) == str(version):
        clear_shadow(settings, domain)
    if old == str(version):
        return {"old": old, "new": str(version)}
    if old is not None:
        set_alias(settings, domain, PREVIOUS, old)
    set_alias(settings, domain, CHAMPION, str(version))
    logger.info("%s: champion %s -> %s", domain, old, version)
    return {"old": old, "new": str(version)}


def rollback(settings: Settings, domain: str) -> dict[str, str | None]:
    """Move `champion` back to `previous` (and `previous` to the version it replaced)."""
    current = aliases(settings, domain)
    prev = current.get(PREVIOUS)
    if prev is None:
        raise ModelNotFound(f"{domain}: no @previous version to roll back to")
    old = current.get(CHAMPION)
    set_alias(settings, domain, CHAMPION, prev)
    if old is not None:
        set_alias(settings, domain, PREVIOUS, old)
    logger.info("%s: rolled back champion %s -> %s", domain, old, prev)
    return {"old": old, "new": prev}


def ensure_champion(settings: Settings, domain: str, version: str) -> bool:
    """Give `version` the champion alias if the model has none yet; True if it did."""
    if CHAMPION in aliases(settings, domain):
        return False
    set_alias(settings, domain, CHAMPION, version)
    return True


def first_version(settings: Settings, domain: str) -> str | None:
    """The oldest version of a domain's model still registered (the gate's baseline), or None."""
    name = settings.model_name(domain)
    found = _client(settings).search_model_versions(f"name='{name}'")
    return min((str(mv.version) for mv in found), key=int, default=None)


def list_versions(settings: Settings, domain: str) -> list[dict[str, Any]]:
    """Every version of a domain's model with its aliases, run metrics and creation time."""
    client = _client(settings)
    name = settings.model_name(domain)
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases(settings, domain).items():
        by_version.setdefault(version, []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name='{name}'"):
        metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
        rows.append(
            {
                "name": name,
                "version": str(mv.version),
                "aliases": sorted(by_version.get(str(mv.version), [])),
                "run_id": mv.run_id,
                "created_at": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(),
                "metrics": dict(metrics),
                "tags": dict(mv.tags),
            }
        )
    return sorted(rows, key=lambda r: int(r["version"]), reverse=True)


# --- logging into the active run (domains and steps call these, never mlflow itself) --------
def log_params(params: Mapping[str, Any]) -> None:
    mlflow.log_params({k: str(v)[:500] for k, v in params.items()})


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_figure(figure: Any, artifact_file: str) -> None:
    """Log a matplotlib/plotly figure as an artifact of the active run (e.g. 'plots/x.png')."""
    mlflow.log_figure(figure, artifact_file)


def log_dict(data: Mapping[str, Any] | list[Any], artifact_file: str) -> None:
    mlflow.log_dict(data, artifact_file)


def log_text(text: str, artifact_file: str) -> None:
    mlflow.log_text(text, artifact_file)


def set_tags(tags: Mapping[str, str]) -> None:
    mlflow.set_tags(dict(tags))

"""The only Settings class of the platform.

Every knob is an environment variable with the prefix ``MH_`` (or a line of ``.env``). Nothing here
touches the disk or the network at import time: secrets are resolved when ``get_settings()`` is
first called.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from machine_health.errors import ConfigurationError

# Values that people paste from examples; refused outside development.
_PLACEHOLDERS = {"", "changeme", "change-me", "secret", "password", "admin", "xxx", "todo"}
_MIN_SECRET_LENGTH = 32
#: the secret settings: each is required only by the components that use it
_SECRETS = ("jwt_secret", "service_token")


def _default_data_dir() -> Path:
    """`../shared/data` when it exists beside the checkout, else `data/` (filled by `make data`)."""
    shared = Path("../shared/data")
    return shared if shared.is_dir() else Path("data")


class Settings(BaseSettings):
    """Configuration of every part of machine-health (API, steps, UI, CLI)."""

    model_config = SettingsConfigDict(
        env_prefix="MH_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: Literal["dev", "test", "prod"] = Field(
        "dev",
        description="dev generates and keeps local secrets; test/prod require them where they "
        "are used (the API, the reload step) and refuse placeholders.",
    )
    var_dir: Path = Field(Path("var"), description="Local state: store, spool, runs, secrets.")
    data_dir: Path = Field(
        default_factory=_default_data_dir, description="Root of the cmapss/ and cwru/ data sets."
    )
    log_json: bool = Field(False, description="Log JSON lines instead of human-readable text.")
    log_level: str = Field("INFO", description="Root log level.")

    # --- document store -------------------------------------------------------------------
    mongodb_uri: SecretStr | None = Field(
        None, description="External MongoDB URI; unset = the embedded nx-27017 store."
    )
    mongodb_db: str = Field("machine_health", description="Database name.")
    store_host: str = Field("127.0.0.1", description="Bind address of the embedded store.")
    store_port: int = Field(27117, description="Port of the embedded store.")
    store_timeout_ms: int = Field(2000, description="Server selection timeout of the clients.")
    mongodb_write_concern_w: str = Field(
        "majority",
        description="Write concern `w` of every client (API and steps): `majority` (default) "
        "acknowledges a prediction only once most replica-set members hold it, so a primary's "
        "failover cannot roll back an answered prediction; a number >= 1 or a tag set name "
        "also works. 0 (unacknowledged) is refused: the archive promises durability.",
    )
    mongodb_journal: bool = Field(
        True,
        description="Write concern `j`: acknowledged only once in the on-disk journal, so a "
        "crash of the acknowledging members right after the answer loses nothing.",
    )
    mongodb_write_timeout_ms: int = Field(
        10_000,
        ge=0,
        description="Write concern `wtimeout`: how long a write waits for its majority before "
        "the API spools it instead (0 = forever; a stalled majority would stall predictions).",
    )

    # --- registry ---------------------------------------------------------------------------
    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI; unset = sqlite under var/mlflow. DagsHub: its MLflow URL "
        "plus MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD.",
    )
    mlflow_experiment: str = Field("machine-health", description="MLflow experiment name.")
    model_name_prefix: str = Field(
        "machine-health", description="Registered model name = <prefix>-<domain>."
    )

    # --- serving ----------------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="Bind address of `machine-health serve`.")
    api_port: int = Field(8000, description="Port of the API.")
    replica_name: str = Field("local", description="This replica's name in GET /version.")
    workers: int = Field(
        1, ge=1, description="uvicorn worker processes of `serve` (a reload reaches them all)."
    )
    serving_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://127.0.0.1:8000"],
        description="Comma-separated API replicas the reload step calls (local mode).",
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body the API reads (else 413)."
    )
    predict_batch_limit: int = Field(
        64, ge=1, description="Most items in one POST /predict/{domain}/batch."
    )
    model_batch_max: int = Field(
        64, ge=1, description="Most concurrent requests the API scores in one model call."
    )
    promotion: Literal["champion", "shadow"] = Field(
        "champion",
        description="What a retrain does with a challenger that passed the gate: serve it, or "
        "score it as the @shadow until its live comparison promotes it.",
    )
    shadow_budget_ms: float = Field(
        50.0, ge=1, le=10_000,
        description="Longest a shadow model may delay an answer (then archived as `late`).",
    )  # fmt: skip
    # Both queues hold the requests' inputs (an acoustic clip: ~0.4 MB): their bounds are
    # memory bounds too. 256 is 5x what 50 ms of a saturated replica's traffic puts there.
    shadow_queue_max: int = Field(
        256, ge=1, description="Requests waiting for the shadow beyond which more skip it."
    )
    shadow_sync_s: float = Field(
        30.0, ge=0, description="How often a replica follows the registry's @shadow (0: never)."
    )
    explain_archived: bool = Field(
        True, description="Explain every archived prediction, in the background (off the answer)."
    )
    explain_share: float = Field(
        0.25, gt=0, le=1,
        description="Most of its time the background explainer may work (it rests the rest).",
    )  # fmt: skip
    explain_queue_max: int = Field(
        256, ge=1, description="Predictions waiting to be explained beyond which more are not."
    )
    spool_max_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Spool size (store down) beyond which API says 503."
    )
    turbofan_cache_units: int = Field(
        10_000, ge=1, description="Units whose recent cycles the API keeps in memory."
    )
    bench_routes: bool = Field(False, description="Expose POST /echo (the load benchmark's base).")
    ui_host: str = Field(
        "127.0.0.1", description="Bind address of `machine-health ui` (0.0.0.0 in a pod)."
    )
    ui_port: int = Field(8501, description="Port of the Streamlit UI.")
    api_url: str = Field(
        "http://127.0.0.1:8000", description="The API the UI (and other clients) talk to."
    )
    airflow_url: str | None = Field(
        None, description="Airflow api-server the UI lists and triggers runs on; unset = local."
    )
    airflow_username: str = Field("admin", description="Airflow user of the UI's runs page.")
    airflow_password: SecretStr | None = Field(
        None, description="Its password; unset = the local stack's var/airflow/passwords.json."
    )
    airflow_port: int = Field(8080, description="Port of the Airflow api-server.")

    # --- security ---------------------------------------------------------------------------
    jwt_secret: SecretStr | None = Field(
        None, description="HS256 signing key; dev generates one under var/secrets/."
    )
    jwt_previous_secret: SecretStr | None = Field(
        None, description="Previous key, still accepted during a rotation grace period."
    )
    jwt_previous_secret_until: AwareDatetime | None = Field(
        None,
        description="End of that grace period (ISO 8601 with a UTC offset); after it a token "
        "of the previous key is refused. Unset = accepted until the key is removed.",
    )
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = Field("HS256", description="JWT alg.")
    jwt_issuer: str = Field("machine-health", description="`iss` claim issued and required.")
    jwt_audience: str = Field("machine-health-api", description="`aud` claim issued and required.")
    jwt_ttl_minutes: int = Field(60, ge=1, description="Lifetime of an access token.")
    service_token: SecretStr | None = Field(
        None, description="Bearer token of the pipeline's reload calls; dev generates one."
    )
    self_registration: bool = Field(False, description="Let anyone POST /register as viewer.")
    login_max_failures: int = Field(
        5, ge=1, description="Failed logins per user or client before 429 (within the window)."
    )
    login_window_seconds: int = Field(
        300, ge=1, description="Window of the login throttle (and how long a lockout lasts)."
    )
    user_cache_seconds: float = Field(
        30.0, ge=0, le=60,
        description="How long a replica trusts a user record it read (role, disabled, token "
        "version): the longest a disabled, demoted or deleted user's token keeps working.",
    )  # fmt: skip

    # --- domains ----------------------------------------------------------------------------
    rul_cap: int = Field(125, ge=1, description="Cap of the piecewise-linear RUL target.")
    turbofan_window: int = Field(100, ge=2, description="Cycles per turbofan model window.")
    target_fpr: float = Field(
        0.01, gt=0, lt=1, description="Anomaly detector's false-alarm rate on normal windows."
    )
    vibration_min_samples: int = Field(
        256, ge=16, description="Fewest waveform samples one vibration/acoustic request may carry."
    )
    vibration_max_samples: int = Field(
        65_536, ge=1024, description="Most waveform samples one vibration/acoustic request carries."
    )
    # A commercial turbofan flies a few cycles a day for ~30 years (< 60,000 cycles in its
    # life); C-MAPSS units fail within 550. 100,000 leaves room for any real engine and keeps
    # every cycle (and failure_cycle - cycle) far inside int64 and the retrain's label range.
    turbofan_max_cycle: int = Field(
        100_000,
        ge=1,
        le=2**63 - 1,
        description="Largest plausible turbofan cycle number a request (or a failure) may carry.",
    )
    max_cycle_jump: int = Field(
        1_000,
        ge=1,
        description="Most cycles a unit's new cycle may lie ahead of its last known cycle "
        "(a new unit's first cycle: at most this), so one bad cycle cannot hijack a unit.",
    )
    turbofan_max_rul_label: int = Field(
        10_000,
        ge=1,
        le=10_000,
        description="Largest true RUL a posted failure may give an archived cycle "
        "(failure_cycle - cycle); the retrain's validate step refuses labels above 10,000.",
    )
    stats_max_days: float = Field(
        31.0,
        gt=0,
        description="Widest since/until window of GET /stats/overview (wider: 422).",
    )
    stats_max_rows: int = Field(
        50_000,
        ge=1_000,
        description="Most archived predictions a windowed GET /stats/overview reads per domain "
        "(beyond: counts of the newest ones, flagged `truncated`).",
    )

    # --- monitoring -------------------------------------------------------------------------
    drift_threshold: float = Field(
        0.5, gt=0, le=1, description="Share of drifted input features that flags a domain's drift."
    )
    drift_window_hours: float = Field(
        24.0,
        gt=0,
        description="Archive window a retrain run's check measures drift over when "
        "the run has no data interval (a manual run); else the run's interval.",
    )
    live_rmse_max: float = Field(
        25.0, gt=0, description="Turbofan live RMSE (known failures) above which to retrain."
    )
    live_recall_min: float = Field(
        0.8, ge=0, le=1, description="Vibration live fault recall below which to retrain."
    )
    retrain_cooldown_hours: float = Field(
        24.0, ge=0, description="Quiet time after a drift/performance retrain before the next one."
    )
    metrics_refresh_seconds: float = Field(
        30.0, gt=0, description="How often the API re-reads drift/performance reports for /metrics."
    )

    # --- retraining pipeline ------------------------------------------------------------------
    execution_mode: Literal["local", "kubernetes"] = Field(
        "local",
        description="How the retrain DAGs run steps: `local` = this machine's CLI, `kubernetes` = "
        "one KubernetesPodOperator pod per step; also where reload finds the replicas.",
    )
    retrain_schedule: str = Field(
        "@daily", description="Schedule of the retrain DAGs (cron or preset; `none` = manual)."
    )
    retrain_min_new_labels: int = Field(
        50, ge=1, description="New labelled predictions a scheduled run needs to retrain."
    )
    gate_tolerance: float = Field(
        0.02,
        ge=0,
        description="Relative margin (of the champion's value) by which a challenger may trail "
        "the champion on each primary metric of the gate's frozen reference slice before it "
        "fails, when that loss is beyond the margin with 95 % confidence (paired bootstrap).",
    )
    retrain_turbofan_model: str = Field(
        "ensemble",
        description="Turbofan model the retrain step trains (ensemble = `train turbofan`'s "
        "default, so a challenger is the champion's kind; hgb alone is cheaper).",
    )
    retrain_epochs: int = Field(30, ge=1, description="Most epochs of a retrained Keras model.")
    retrain_max_windows: int = Field(
        40_000,
        ge=1_000,
        description="Training-time budget of a turbofan retrain: above this many training "
        "windows (one per archived or base cycle), each unit keeps every k-th cycle's window.",
    )
    reload_timeout_s: float = Field(
        60.0, gt=0, description="Time every replica has to report the new version after reload."
    )
    serving_service: str | None = Field(
        None, description="Kubernetes Service of the API (its EndpointSlices = the replicas)."
    )
    serving_label_selector: str | None = Field(
        None, description="Label selector of the API pods (used when no Service is named)."
    )
    kubernetes_namespace: str | None = Field(
        None, description="Namespace of the API pods; unset = the pipeline pod's own namespace."
    )

    @field_validator("serving_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [u.strip().rstrip("/") for u in value.split(",") if u.strip()]
        return value

    @field_validator("mongodb_write_concern_w")
    @classmethod
    def _acknowledged_writes(cls, value: str) -> str:
        value = value.strip()
        if not value or (value.isdigit() and int(value) < 1):
            raise ValueError("must be 'majority', a number >= 1 or a tag set name (0 is refused)")
        return value

    @property
    def write_concern(self) -> dict[str, object]:
        """The write concern of every client, as pymongo's client options."""
        w = self.mongodb_write_concern_w
        return {
            "w": int(w) if w.isdigit() else w,
            "journal": self.mongodb_journal,
            "wTimeoutMS": self.mongodb_write_timeout_ms,
        }

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        """Outside dev, a secret that IS set must be a real one (missing ones: `require_secrets`).

        Settings are built by every component, and not every component gets every secret (the
        UI gets none): whether a secret must be present is decided where it is used.
        """
        if self.env == "dev":
            return self
        for name in _SECRETS:
            if getattr(self, name) is not None:
                self._check_secret(name)
        return self

    def _check_secret(self, name: str) -> None:
        value: SecretStr | None = getattr(self, name)
        raw = value.get_secret_value() if value else ""
        if raw.strip().lower() in _PLACEHOLDERS or len(raw) < _MIN_SECRET_LENGTH:
            raise ConfigurationError(
                f"MH_{name.upper()} must be set to a random value of at least "
                f"{_MIN_SECRET_LENGTH} characters when MH_ENV={self.env} "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )

    def require_secrets(self, *names: str) -> Settings:
        """These settings, or ConfigurationError when one of the named secrets is missing or weak.

        Called where a secret is used: the API (it signs and verifies tokens: `jwt_secret`,
        `service_token`), the reload step (`service_token`). In dev, `ensure_dev_secrets()`
        fills them first; a secret still missing is refused in every environment.
        """
        unknown = set(names) - set(_SECRETS)
        if unknown:
            raise ValueError(f"not a secret setting: {', '.join(sorted(unknown))}")
        for name in names:
            if self.env != "dev" or getattr(self, name) is None:
                self._check_secret(name)
        return self

    # --- derived values ---------------------------------------------------------------------
    @property
    def embedded_store(self) -> bool:
        """True when no external MongoDB is configured and the project runs its own store."""
        return self.mongodb_uri is None

    @property
    def store_uri(self) -> str:
        if self.mongodb_uri is not None:
            return self.mongodb_uri.get_secret_value()
        return f"mongodb://{self.store_host}:{self.store_port}/"

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.var_dir / 'mlflow' / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> Path:
        return (self.var_dir / "mlflow" / "artifacts").resolve()

    @property
    def runs_dir(self) -> Path:
        return self.var_dir / "runs"

    @property
    def spool_dir(self) -> Path:
        return self.var_dir / "spool"

    def model_name(self, domain: str) -> str:
        return f"{self.model_name_prefix}-{domain}"

    def as_env(self) -> dict[str, str]:
        """These settings as MH_* variables, for the child processes we start (replicas, steps)."""
        env: dict[str, str] = {}
        for name, value in self:
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, list):
                value = ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                value = "1" if value else "0"
            env[f"MH_{name.upper()}"] = str(value)
        return env

    def ensure_dev_secrets(self) -> Settings:
        """In dev, create once (and then reuse) the JWT key and service token under var/secrets.

        Every local replica started from the same checkout reads the same files, so tokens
        survive restarts and are accepted by all of them.
        """
        if self.env != "dev":
            return self
        updates: dict[str, SecretStr] = {}
        for name in _SECRETS:
            if getattr(self, name) is None:
                updates[name] = SecretStr(_read_or_create_secret(self.var_dir / "secrets" / name))
        return self.model_copy(update=updates) if updates else self


def _read_or_create_secret(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    value = secrets.token_urlsafe(48)
    # O_EXCL: two replicas starting at once must not write two different keys.
    try:
        with path.open("x") as handle:
            handle.write(value)
        path.chmod(0o600)
    except FileExistsError:
        return path.read_text().strip()
    return value


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (secrets resolved). Tests build their own `Settings`."""
    return Settings().ensure_dev_secrets()

"""What every benchmark that starts its own stack shares: the settings of a throwaway
deployment (a fresh embedded store on `port`, fresh secrets, its own var/)."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from machine_health.config import Settings


def bench_settings(
    port: int | None, var_dir: Path, db: str = "bench", **overrides: Any
) -> Settings:
    """Settings of a benchmark's own deployment: store `mongodb://127.0.0.1:<port>/<db>` (none
    when `port` is None), new JWT and service secrets (never a default), `overrides` on top."""
    values: dict[str, Any] = {
        "env": "test",
        "var_dir": var_dir,
        "jwt_secret": secrets.token_urlsafe(48),
        "service_token": secrets.token_urlsafe(48),
    }
    if port is not None:
        values |= {"mongodb_uri": f"mongodb://127.0.0.1:{port}/", "mongodb_db": db}
    return Settings(_env_file=None, **(values | overrides))


def stop(replicas: Iterable[Any], store: subprocess.Popen) -> None:
    """Stop a benchmark's API replicas, then its store (each waited for)."""
    for replica in replicas:
        replica.stop()
    store.terminate()
    store.wait(10)

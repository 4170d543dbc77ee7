"""Logging, configured once at each entry point (CLI, API, steps); modules only getLogger."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from machine_health.config import Settings

# Libraries whose INFO lines drown ours.
_QUIET = ("mlflow", "alembic", "urllib3", "httpx", "pymongo", "tensorflow", "absl", "h5py")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what log shippers (Loki, Fluent Bit) parse without rules."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(settings: Settings) -> None:
    """Install one stderr handler on the root logger (text, or JSON when MH_LOG_JSON=1)."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)

"""Logging is configured once; MH_LOG_JSON=1 gives one JSON object per line."""

from __future__ import annotations

import json
import logging

import pytest

from machine_health.config import Settings
from machine_health.logs import configure_logging


def test_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings(_env_file=None, log_json=True))
    try:
        logging.getLogger("machine_health.test").warning("scored %d windows for %s", 3, "m-1")
        try:
            raise ValueError("bad window")
        except ValueError:
            logging.getLogger("machine_health.test").exception("failed")
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["msg"] == "scored 3 windows for m-1"
    assert lines[0]["level"] == "WARNING"
    assert lines[0]["logger"] == "machine_health.test"
    assert "ValueError: bad window" in lines[1]["exc"]


def test_configuring_twice_keeps_one_handler() -> None:
    settings = Settings(_env_file=None)
    configure_logging(settings)
    configure_logging(settings)
    try:
        assert len(logging.getLogger().handlers) == 1
    finally:
        logging.getLogger().handlers.clear()

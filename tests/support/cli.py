"""The project's command line run in-process by Typer's CliRunner: the same Typer app, commands
and exit codes as `machine-health ...`, without starting a Python (and its imports) per call.
For tests of what a command does; a test of a process's lifecycle (signals, a server that must
come up and stop) starts the real process instead."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from click.testing import Result
from typer.testing import CliRunner


def run_cli(
    args: list[str] | tuple[str, ...],
    env: Mapping[str, str | None] | None = None,
    input: str | None = None,
) -> Result:
    """`machine-health *args` with `env` over this process's environment (a None value unsets
    the variable) and `input` on stdin; its exit code, stdout and stderr in the Result.

    Settings are read afresh (get_settings' cache is cleared before and after) and the logging
    set-up the command installs on the root logger is undone afterwards."""
    from machine_health.cli import app
    from machine_health.config import get_settings

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, list(args), env=dict(env or {}), input=input)
    finally:
        get_settings.cache_clear()
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, saved in levels.items():
            logging.getLogger(name).setLevel(saved)

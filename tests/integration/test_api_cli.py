"""`machine-health users create` and `machine-health serve`, as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from pymongo.database import Database

from machine_health.config import Settings
from machine_health.domains import DOMAINS
from machine_health.security import verify_password
from tests.support.cli import run_cli
from tests.support.paths import REPO
from tests.support.servers import free_port

CLI = [sys.executable, "-m", "machine_health"]


def _run(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`machine-health *args` in-process (Typer's CliRunner): the command, not a process."""
    done = run_cli(args, env={**settings.as_env(), **env})
    return subprocess.CompletedProcess(args, done.exit_code, done.stdout, done.stderr)


def test_users_create_reads_the_password_from_the_named_variable(
    settings: Settings, db: Database
) -> None:
    args = ("users", "create", "ana", "--role", "admin", "--password-env", "MH_TEST_PW")
    created = _run(settings, *args, MH_TEST_PW="a-long-admin-passphrase")
    assert created.returncode == 0, created.stderr
    user = db["users"].find_one({"username": "ana"})
    assert user["role"] == "admin"
    assert verify_password("a-long-admin-passphrase", user["password_hash"])
    assert "a-long-admin-passphrase" not in created.stdout + created.stderr
    again = _run(settings, *args, MH_TEST_PW="another-passphrase")
    assert again.returncode == 1 and "exists" in again.stderr
    unset = _run(settings, "users", "create", "bob", "--role", "viewer", "--password-env", "NOPE")
    assert unset.returncode == 1 and db["users"].find_one({"username": "bob"}) is None
    bad_role = _run(
        settings,
        "users",
        "create",
        "eve",
        "--role",
        "root",
        "--password-env",
        "X",
        X="long-enough-pw",
    )
    assert bad_role.returncode == 1 and "role" in bad_role.stderr


def _run_with_stdin(settings: Settings, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    # The hidden prompt reads `stdin`, as under a pipe (CliRunner gives no terminal either).
    done = run_cli(args, env=settings.as_env(), input=stdin)
    return subprocess.CompletedProcess(args, done.exit_code, done.stdout, done.stderr)


def test_users_create_prompts_for_the_password_twice(settings: Settings, db: Database) -> None:
    created = _run_with_stdin(
        settings, "a-prompted-passphrase\na-prompted-passphrase\n",
        "users", "create", "root-admin", "--role", "admin",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "Repeat for confirmation" in created.stdout + created.stderr
    user = db["users"].find_one({"username": "root-admin"})
    assert user["role"] == "admin"
    assert verify_password("a-prompted-passphrase", user["password_hash"])
    assert "a-prompted-passphrase" not in created.stdout + created.stderr

    differ = _run_with_stdin(
        settings, "first-passphrase\nsecond-passphrase\n",
        "users", "create", "other-admin", "--role", "admin",
    )  # fmt: skip
    assert differ.returncode != 0
    assert "do not match" in differ.stdout + differ.stderr
    assert db["users"].find_one({"username": "other-admin"}) is None
    short = _run_with_stdin(settings, "short\nshort\n", "users", "create", "x", "--role", "admin")
    assert short.returncode == 1 and "at least" in short.stderr
    assert db["users"].find_one({"username": "x"}) is None


def test_serve_starts_the_api(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*CLI, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **settings.as_env()}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert health is not None and health.json()["status"] == "ok"
        ready = httpx.get(f"http://127.0.0.1:{port}/ready")
        assert ready.status_code == 503  # no model registered in this test's registry
        assert set(ready.json()["models_missing"]) == set(DOMAINS)  # every registered domain
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()

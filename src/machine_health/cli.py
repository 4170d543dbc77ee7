"""The `machine-health` command line (Typer + rich).

Commands import their heavy modules lazily, so `machine-health store status` does not load
TensorFlow. Every command configures logging once and turns a `MachineHealthError` into a red
message and exit code 1.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from machine_health.cli_support import (
    DataDirOption,
    JsonOption,
    command,
    console,
    print_table,
    settings_with_data_dir,
    write_json,
)
from machine_health.config import Settings, get_settings
from machine_health.domains import DOMAINS, domain_module
from machine_health.errors import MachineHealthError
from machine_health.pipeline import STEPS, Step

app = typer.Typer(
    help="machine-health: predictive maintenance, prediction to retraining.", no_args_is_help=True
)
store_app = typer.Typer(help="The embedded document store (nx-27017).", no_args_is_help=True)
benchmark_app = typer.Typer(
    help="Train and score every model of a domain on real data.", no_args_is_help=True
)
train_app = typer.Typer(help="Train a domain's model and register it.", no_args_is_help=True)
evaluate_app = typer.Typer(
    help="Score a trained or registered model on labelled data.", no_args_is_help=True
)
app.add_typer(store_app, name="store")
app.add_typer(benchmark_app, name="benchmark")
app.add_typer(train_app, name="train")
app.add_typer(evaluate_app, name="evaluate")

_DOMAIN_NAMES = ", ".join(DOMAINS)

logger = logging.getLogger(__name__)


# --- store -----------------------------------------------------------------------------------
@store_app.command("start")
@command
def store_start() -> None:
    """Start the embedded store in the background (data under var/store)."""
    from machine_health import embedded_store

    st = embedded_store.start(get_settings())
    console.print(
        f"[green]store running[/] at {st.uri} (pid {st.pid}, data {st.data_dir}, log {st.log_file})"
    )


@store_app.command("stop")
@command
def store_stop() -> None:
    """Stop the embedded store."""
    from machine_health import embedded_store

    stopped = embedded_store.stop(get_settings())
    console.print("store stopped" if stopped else "store was not running")


@store_app.command("status")
@command
def store_status() -> None:
    """Say whether the store answers, and where."""
    from machine_health import embedded_store

    st = embedded_store.status(get_settings())
    state = "[green]running[/]" if st.running else "[red]not running[/]"
    console.print(f"store {state} at {st.uri} (pid {st.pid or '-'}, data {st.data_dir})")
    if not st.running:
        raise typer.Exit(3)


StoreDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Store data dir (default: var/store).")
]


@store_app.command("backup")
@command
def store_backup(
    dest: Annotated[Path, typer.Argument(help="New directory for the snapshot.")],
    data_dir: StoreDirOption = None,
) -> None:
    """Online, consistent snapshot of the embedded store's files (WAL included)."""
    from machine_health import store_backup as backups

    manifest = backups.backup(data_dir or get_settings().var_dir / "store", dest)
    for entry in manifest["files"]:
        console.print(f"{entry['name']}: {entry['bytes']} bytes, sha256 {entry['sha256'][:16]}")
    console.print(f"[green]backup written[/] to {dest}")


@store_app.command("restore")
@command
def store_restore(
    src: Annotated[Path, typer.Argument(help="A directory written by `store backup`.")],
    data_dir: StoreDirOption = None,
) -> None:
    """Replace the (stopped) embedded store's files by a snapshot; old files are kept aside."""
    from machine_health import store_backup as backups

    settings = get_settings()
    result = backups.restore(src, data_dir or settings.var_dir / "store", settings.store_uri)
    console.print(f"[green]restored[/] {', '.join(result['restored'])}; previous files in "
                  f"{result['previous_files'] or '-'}")  # fmt: skip


@store_app.command("recount")
@command
def store_recount() -> None:
    """Rebuild the archive's pre-aggregated counters (the UI overview) from the archive: after
    a manual edit or deletion of archived predictions (a full read of the archive)."""
    from machine_health.archive import counters
    from machine_health.archive.client import open_db

    with open_db(get_settings()) as db:
        read = counters.rebuild(db)
    console.print(f"[green]counters rebuilt[/] from {read} archived predictions")


@store_app.command("reset-extract")
@command
def store_reset_extract(
    domain: Annotated[str, typer.Argument(help="The domain whose extract checkpoint to drop.")],
) -> None:
    """Make the domain's next extract a full one (after a restore or a manual deletion)."""
    from machine_health.archive.client import open_db
    from machine_health.pipeline import checkpoint

    with open_db(get_settings()) as db:
        dropped = checkpoint.reset(db, domain)
    console.print(f"{domain}: {'checkpoint dropped' if dropped else 'no checkpoint'}; "
                  "the next extract reads every labelled row")  # fmt: skip


@app.command("stack")
@command
def stack(
    airflow: Annotated[bool, typer.Option(help="Start Airflow and run a retrain.")] = True,
    demo: Annotated[bool, typer.Option(help="Replay real test data as traffic.")] = True,
) -> None:
    """Run the whole loop locally in the foreground (what `make run` does)."""
    from machine_health.stack import run_stack

    run_stack(get_settings(), with_airflow=airflow, demo=demo)


@app.command("simulate")
@command
def simulate(
    api_url: Annotated[
        str, typer.Option(help="Base URL of one API replica.")
    ] = "http://127.0.0.1:8000",
    domain: Annotated[str, typer.Option(help=f"{_DOMAIN_NAMES} or all.")] = "all",
    limit: Annotated[
        int, typer.Option(help="Windows to send per windowed domain (vibration: ~110).")
    ] = 110,
    units: Annotated[int, typer.Option(help="Units to replay per sequence domain.")] = 8,
    username: Annotated[str, typer.Option(help="An operator's user name.")] = "demo-operator",
    password_env: Annotated[
        str, typer.Option(help="Variable holding the password.")
    ] = "MH_SIMULATOR_PASSWORD",  # noqa: S107 (the name of a variable, not a password)
    data_dir: DataDirOption = None,
    json_out: JsonOption = None,
) -> None:
    """Replay every domain's real test data (e.g. C-MAPSS units, CWRU windows) and labels."""
    import asyncio
    import os

    from machine_health.simulate import simulate as run_simulation

    password = os.environ.get(password_env)
    if not password:
        raise typer.BadParameter(f"set ${password_env}", param_hint="--password-env")
    domains = list(DOMAINS) if domain == "all" else [domain]
    settings = settings_with_data_dir(data_dir)
    result = asyncio.run(
        run_simulation(api_url, username, password, settings.data_dir, domains=domains,
                       units=units, limit=limit)
    )  # fmt: skip
    write_json(result, json_out)


# --- one train / benchmark / evaluate subcommand per domain that has it ----------------------
def _add_domain_commands() -> None:
    """Register the `train`, `benchmark` and `evaluate` functions of every registered domain's
    `commands` module (light: the commands import their heavy modules when they run)."""
    groups = {"train": train_app, "benchmark": benchmark_app, "evaluate": evaluate_app}
    for name in DOMAINS:
        module = domain_module(name, "commands")
        for verb, group in groups.items():
            func = getattr(module, verb, None) if module is not None else None
            if func is not None:
                group.command(name)(command(func))


_add_domain_commands()


users_app = typer.Typer(help="Users of the API (stored in the archive).", no_args_is_help=True)
app.add_typer(users_app, name="users")


@app.command("serve")
@command
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings).")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="uvicorn worker processes (default: settings).")
    ] = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            envvar="MH_FORWARDED_ALLOW_IPS",
            help="Peers (addresses or CIDRs, comma-separated) whose X-Forwarded-For names the "
            "client, e.g. the ingress controller's pod range; from anyone else it is ignored "
            "(default: uvicorn's FORWARDED_ALLOW_IPS, else 127.0.0.1).",
        ),
    ] = None,
) -> None:
    """Serve the prediction API with uvicorn (models @champion, archive, metrics)."""
    import os
    import shutil

    import uvicorn

    from machine_health.api import workers as worker_sync
    from machine_health.api.app import API_SECRETS

    settings = get_settings()
    settings.require_secrets(*API_SECRETS)  # refused here, before uvicorn and its workers
    count = workers or settings.workers
    # The workers read their count from the environment (they are spawned, not forked).
    os.environ["MH_WORKERS"] = str(count)
    get_settings.cache_clear()
    directory = worker_sync.prepare(settings, os.getpid()) if count > 1 else None
    try:
        uvicorn.run(
            "machine_health.api.app:create_app",
            factory=True,
            host=host or settings.api_host,
            port=port or settings.api_port,
            workers=count,
            log_level=settings.log_level.lower(),
            access_log=False,
            # The client address (the login throttle's per-client key) comes from
            # X-Forwarded-For only when the direct peer is one of these.
            proxy_headers=True,
            forwarded_allow_ips=forwarded_allow_ips or None,
        )
    finally:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


@app.command("ui")
@command
def ui(
    port: Annotated[int | None, typer.Option(help="Port (default: MH_UI_PORT).")] = None,
) -> None:
    """Serve the Streamlit inspection UI on MH_UI_HOST (it talks to MH_API_URL; holds no secret)."""
    import os
    import sys

    settings = get_settings()
    script = Path(__file__).with_name("ui") / "app.py"
    args = [sys.executable, "-m", "streamlit", "run", str(script), "--server.address",
            settings.ui_host, "--server.port", str(port or settings.ui_port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "minimal"]  # fmt: skip
    # exec, not a child: a supervisor's SIGTERM must reach Streamlit itself
    os.execv(sys.executable, args)  # noqa: S606 - fixed argv, no shell


@users_app.command("create")
@command
def users_create(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Option(help="admin, operator, viewer or service.")],
    password_env: Annotated[
        str | None,
        typer.Option(help="Read the password from this environment variable (else prompt)."),
    ] = None,
) -> None:
    """Create an API user (there is no default user or password)."""
    import os

    from machine_health.archive import users
    from machine_health.security import hash_password

    if password_env:
        password = os.environ.get(password_env)
        if not password:
            raise MachineHealthError(f"environment variable {password_env} is empty or unset")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    user = _users_db(lambda db: users.create_user_sync(db, name, hash_password(password), role))
    console.print(f"[green]user created[/] {user['username']} (role {user['role']})")


def _users_db(action: Callable[[Any], Any]) -> Any:
    """Run `action(db)` on the store's database (indexes ensured), closing the client after."""
    from machine_health.archive.client import open_db

    with open_db(get_settings()) as db:
        return action(db)


def _os_user() -> str:
    """Who runs a command, for the audit log (the OS user: the CLI has no login)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _operator() -> str:
    """Who runs a users command, for the log of the change."""
    return f"cli:{_os_user()}"


UserArg = Annotated[str, typer.Argument(help="User name.")]


@users_app.command("list")
@command
def users_list() -> None:
    """Every user with its role and whether it is disabled."""
    from machine_health.archive import users

    rows = _users_db(users.list_users_sync)
    print_table("users", rows, ["username", "role", "disabled", "token_version", "created_at"])


def _users_update(name: str, **change: Any) -> None:
    from machine_health.archive import users

    user = _users_db(lambda db: users.update_user_sync(db, name, by=_operator(), **change))
    state = "disabled" if user.get("disabled") else "enabled"
    console.print(f"[green]user updated[/] {user['username']} (role {user['role']}, {state}); "
                  "its earlier tokens are refused within a minute")  # fmt: skip


@users_app.command("disable")
@command
def users_disable(name: UserArg) -> None:
    """Disable a user: no login, and its existing tokens are refused."""
    _users_update(name, disabled=True)


@users_app.command("enable")
@command
def users_enable(name: UserArg) -> None:
    """Enable a disabled user again (it logs in again; older tokens stay refused)."""
    _users_update(name, disabled=False)


@users_app.command("set-role")
@command
def users_set_role(
    name: UserArg,
    role: Annotated[str, typer.Argument(help="admin, operator, viewer or service.")],
) -> None:
    """Give a user another role; its existing tokens are refused."""
    _users_update(name, role=role)


@users_app.command("delete")
@command
def users_delete(
    name: UserArg,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a user; its existing tokens are refused."""
    from machine_health.archive import users

    if not yes:
        typer.confirm(f"delete user {name!r}?", abort=True)
    _users_db(lambda db: users.delete_user_sync(db, name, by=_operator()))
    console.print(f"[green]user deleted[/] {name}")


# --- units: repair a unit's archived cycles -------------------------------------------------------
units_app = typer.Typer(
    help="Units of the sequence domains (turbofan): repair their archived cycles.",
    no_args_is_help=True,
)
app.add_typer(units_app, name="units")


async def _uncount(settings: Settings, removed: list[dict[str, Any]]) -> None:
    """Take purged predictions out of the archive's counters (the API does it in the route)."""
    from machine_health.archive import counters
    from machine_health.archive.client import async_client

    client = async_client(settings)
    try:
        await counters.count_removed(client[settings.mongodb_db], removed)
    finally:
        await client.close()


@units_app.command("purge")
@command
def units_purge(
    domain: Annotated[str, typer.Argument(help="The unit's domain (turbofan).")],
    unit: Annotated[str, typer.Argument(help="The unit id.")],
    from_cycle: Annotated[
        int, typer.Option(min=1, help="Delete the unit's archived cycles >= this one.")
    ],
) -> None:
    """Delete a unit's archived cycles from a cycle on and reset its serving state (audited).

    Repairs a unit a wrong cycle made unusable (every real cycle a 409); the API rebuilds the
    unit's state from the archive at its next cycle. Same as `DELETE /assets/{unit}/cycles`.
    """
    import re

    from machine_health.archive import unit_state
    from machine_health.archive.audit import audit_entry, record_audit_sync
    from machine_health.archive.client import open_db
    from machine_health.archive.predictions import purge_unit_cycles_sync

    if not re.fullmatch(r"[a-z_]{1,32}", domain) or not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,64}",
                                                                       unit):  # fmt: skip
        raise MachineHealthError("domain or unit id holds characters no unit id may hold")
    user = _os_user()
    settings = get_settings()
    with open_db(settings) as db:
        purged = purge_unit_cycles_sync(db, domain, unit, from_cycle)
        asyncio.run(_uncount(settings, purged.pop("removed")))
        reset = unit_state.delete_sync(db, domain, unit)
        logging.getLogger(__name__).warning(
            "audit: %s (cli) purged %d archived cycle(s) >= %d of %s unit %s; last cycle now %s",
            user, purged["deleted"], from_cycle, domain, unit, purged["last_cycle"],
        )  # fmt: skip
        record_audit_sync(db, audit_entry(
            "purge_unit_cycles", user=user, via="cli", domain=domain, unit_id=unit,
            from_cycle=from_cycle, deleted=purged["deleted"], state_reset=reset,
        ))  # fmt: skip
    console.print(
        f"{domain} unit {unit}: deleted {purged['deleted']} archived cycle(s) >= {from_cycle}; "
        f"last cycle now {purged['last_cycle']}; serving state "
        f"{'reset' if reset else 'absent'}"
    )


# --- retraining pipeline and registry versions ------------------------------------------------
pipeline_app = typer.Typer(
    help="Retraining steps (each prints a small JSON result; in a pod also the XCom file).",
    no_args_is_help=True,
)
models_app = typer.Typer(help="Registered model versions and their aliases.", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(models_app, name="models")

DomainOption = Annotated[str, typer.Option("--domain", help=f"One of {_DOMAIN_NAMES}.")]
RunIdOption = Annotated[str, typer.Option("--run-id", help="The run's id (Airflow run id).")]
StartOption = Annotated[str, typer.Option("--interval-start", help="ISO start of the interval.")]
EndOption = Annotated[str, typer.Option("--interval-end", help="ISO end of the data interval.")]
ForceOption = Annotated[
    bool, typer.Option("--force/--no-force", help="Run again even if already done.")
]


def _pipeline_step(step: Step) -> None:
    """`machine-health pipeline <step>`: one declared step of one run, its result as JSON."""

    def step_command(
        domain: DomainOption, run_id: RunIdOption, interval_start: StartOption,
        interval_end: EndOption, force: ForceOption = False,
    ) -> None:  # fmt: skip
        from machine_health.pipeline import emit_xcom

        result = step.function()(
            settings=get_settings(), domain=domain, run_id=run_id,
            interval_start=interval_start, interval_end=interval_end, force=force,
        )  # fmt: skip
        emit_xcom(result)
        write_json(result, None)

    step_command.__doc__ = step.summary
    pipeline_app.command(step.name)(command(step_command))


for _step in STEPS.values():
    _pipeline_step(_step)


@pipeline_app.command("run-all")
@command
def pipeline_run_all(
    domain: DomainOption, run_id: RunIdOption, interval_start: StartOption,
    interval_end: EndOption, force: ForceOption = False,
) -> None:  # fmt: skip
    """Every step in order on this machine (the local runner, no Airflow needed)."""
    from machine_health.pipeline import run_all

    results = run_all(
        settings=get_settings(), domain=domain, run_id=run_id,
        interval_start=interval_start, interval_end=interval_end, force=force,
    )  # fmt: skip
    write_json({step: _brief_step(r) for step, r in results.items()}, None)


def _brief_step(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("step", "domain", "run_id", "interval")}


@models_app.command("list")
@command
def models_list(domain: DomainOption) -> None:
    """Every registered version of a domain with its aliases and main metrics."""
    from machine_health import registry
    from machine_health.domains import get_domain

    rows = registry.list_versions(get_settings(), domain)
    primary = list(get_domain(domain).primary_metrics)
    table_rows = [
        {"version": r["version"], "aliases": ",".join(r["aliases"]) or "-",
         "created_at": r["created_at"][:19], "run": r["tags"].get("pipeline_run_id", "-"),
         **{m: r["metrics"].get(f"eval_{m}", r["metrics"].get(m)) for m in primary}}
        for r in rows
    ]  # fmt: skip
    print_table(
        f"{domain} versions", table_rows, ["version", "aliases", "created_at", "run", *primary]
    )


@models_app.command("promote")
@command
def models_promote(
    domain: DomainOption,
    version: Annotated[str, typer.Option("--version", help="Version to serve.")],
    reload: Annotated[bool, typer.Option(help="Reload every serving replica.")] = True,
) -> None:
    """Make a version the champion (the old one becomes previous) and reload every replica."""
    from machine_health import registry
    from machine_health.pipeline.reload import reload_replicas

    settings = get_settings()
    registry.resolve(settings, domain, version=version)  # fail before touching any alias
    result: dict[str, Any] = {"domain": domain, **registry.promote(settings, domain, version)}
    if reload:
        result["reload"] = reload_replicas(settings, domain, version)
    write_json(result, None)


@models_app.command("rollback")
@command
def models_rollback(
    domain: DomainOption,
    reload: Annotated[bool, typer.Option(help="Reload every serving replica.")] = True,
) -> None:
    """Move champion back to previous and reload every serving replica."""
    from machine_health import registry
    from machine_health.pipeline.reload import reload_replicas

    settings = get_settings()
    result: dict[str, Any] = {"domain": domain, **registry.rollback(settings, domain)}
    if reload and result["new"] is not None:
        result["reload"] = reload_replicas(settings, domain, str(result["new"]))
    write_json(result, None)


@models_app.command("shadow")
@command
def models_shadow(
    domain: DomainOption,
    version: Annotated[str, typer.Option("--version", help="Version scored beside the champion.")],
    reload: Annotated[bool, typer.Option(help="Reload every serving replica and wait.")] = True,
) -> None:
    """Score every archived request with a version beside the champion (@shadow), on every
    replica; its answers are archived, never returned."""
    from machine_health import registry
    from machine_health.pipeline.reload import reload_replicas

    settings = get_settings()
    result: dict[str, Any] = {"domain": domain, **registry.set_shadow(settings, domain, version)}
    if reload:
        result["reload"] = reload_replicas(settings, domain, version, slot="shadow")
    write_json(result, None)


@models_app.command("shadow-drop")
@command
def models_shadow_drop(
    domain: DomainOption,
    reload: Annotated[bool, typer.Option(help="Reload every serving replica and wait.")] = True,
) -> None:
    """Stop scoring with the shadow on every replica (the @shadow alias is removed)."""
    from machine_health import registry
    from machine_health.pipeline.reload import reload_replicas

    settings = get_settings()
    result: dict[str, Any] = {"domain": domain, "dropped": registry.clear_shadow(settings, domain)}
    if reload:
        result["reload"] = reload_replicas(settings, domain, None, slot="shadow")
    write_json(result, None)


@models_app.command("shadow-report")
@command
def models_shadow_report(
    domain: DomainOption,
    version: Annotated[str | None, typer.Option("--version", help="Shadow version.")] = None,
    at: Annotated[str | None, typer.Option("--at", help="ISO time (default now).")] = None,
) -> None:
    """Champion vs shadow on the same labelled requests (paired bootstrap), stored as a report."""
    from machine_health.monitoring.shadow import run_shadow_comparison

    report = run_shadow_comparison(get_settings(), domain, now=_at(at), version=version)
    print_table(
        f"{domain}: shadow v{report.get('shadow_version')} vs champion "
        f"({report['n_paired']} paired labelled requests): {report['verdict']}",
        report["rows"],
        ["metric", "better", "champion", "challenger", "difference", "interval", "verdict"],
    )


@models_app.command("promote-shadow")
@command
def models_promote_shadow(
    domain: DomainOption,
    force: Annotated[bool, typer.Option(help="Promote even if significantly worse.")] = False,
    reload: Annotated[bool, typer.Option(help="Reload every serving replica and wait.")] = True,
) -> None:
    """Make the shadow the champion unless its field comparison fails; reload every replica."""
    from machine_health.monitoring.shadow import promote_shadow
    from machine_health.pipeline.reload import reload_replicas

    settings = get_settings()
    result = promote_shadow(settings, domain, now=datetime.now(UTC), force=force)
    if reload:
        new = str(result["champion"]["new"])
        result["reload"] = reload_replicas(settings, domain, new)
        result["reload_shadow"] = reload_replicas(settings, domain, None, slot="shadow")
    result.pop("comparison", None)
    write_json(result, None)


# --- monitoring: drift, live performance, retrain triggers ----------------------------------
AtOption = Annotated[
    str | None, typer.Option("--at", help="ISO time the report speaks for (default: now, UTC).")
]


def _at(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command("drift")
@command
def drift_command(
    domain: Annotated[str, typer.Option("--domain", help=f"One of {_DOMAIN_NAMES}.")],
    window: Annotated[
        str, typer.Option("--window", help="Archive window: 24h, 30m, 7d...")
    ] = "24h",
    version: Annotated[
        str | None, typer.Option("--version", help="Reference version (default: most served).")
    ] = None,
    at: AtOption = None,
    json_out: JsonOption = None,
) -> None:
    """Compare the window's archived inputs with the training reference; store the report."""
    from machine_health.monitoring import drift

    report = drift.run_drift(
        get_settings(), domain, window=drift.parse_window(window), now=_at(at), version=version
    )
    title = (
        f"{domain} drift vs v{report.get('model_version')}: {report['n_rows']} inputs, "
        f"{len(report['drifted_features'])} drifted (share {report['drift_share']:.2f}), "
        f"flagged={report['flagged']}"
    )
    print_table(title, report["features"], ["feature", "psi", "ks", "p_adjusted", "drifted"])
    write_json(report, json_out)


@app.command("performance")
@command
def performance_command(
    domain: Annotated[str, typer.Option("--domain", help=f"One of {_DOMAIN_NAMES}.")],
    window: Annotated[
        str | None, typer.Option("--window", help="Only predictions of this window (e.g. 7d).")
    ] = None,
    at: AtOption = None,
    json_out: JsonOption = None,
) -> None:
    """Score archived predictions against the labels that arrived, per model version."""
    from machine_health.monitoring import drift, performance

    span = drift.parse_window(window) if window else None
    report = performance.run_performance(get_settings(), domain, now=_at(at), window=span)
    from machine_health.domains import get_domain

    columns = ["model_version", "status", "degraded", *get_domain(domain).live_columns]
    print_table(f"{domain} live performance", report["versions"], columns)
    write_json(report, json_out)


@app.command("retrain-check")
@command
def retrain_check_command(
    domain: Annotated[str, typer.Option("--domain", help=f"One of {_DOMAIN_NAMES}.")],
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Record the decision under this run id.")
    ] = None,
    at: AtOption = None,
) -> None:
    """Whether drift or live performance asks for a retrain now (records a firing decision)."""
    from machine_health.monitoring.triggers import should_retrain

    decision = should_retrain(get_settings(), domain, now=_at(at), run_id=run_id)
    console.print(
        f"{domain}: retrain={decision['retrain']} reason={decision['reason']} "
        f"cooldown_until={decision['cooldown_until']}"
    )
    write_json(decision, None)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

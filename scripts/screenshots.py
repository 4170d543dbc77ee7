"""Screenshots of every UI page for the README (a dev tool, not part of `make test`).

Starts, in a temporary directory: the embedded store (in memory), real models (trained with fast
settings, or an existing MLflow store with --tracking-uri), the API on uvicorn, an admin user,
real traffic (`machine_health.simulate`: C-MAPSS test units with their failures, CWRU test windows
with feedback), drift and performance reports, a local Airflow 3 api-server with one real run of
`retrain_vibration` on that traffic (as the UI tests' `live_airflow` fixture: `airflow dags test`,
no scheduler), and the UI. Then drives headless Chromium over the DevTools protocol: signs in,
opens each page from the sidebar, waits for Streamlit to render, hides the sidebar so the page
gets the whole width, saves images/ui-<page>.png. Everything started is stopped at the end.

    apt-get install -y chromium      # once
    .venv/bin/python scripts/screenshots.py [--tracking-uri sqlite:////path/mlflow.db] [--serve]

--serve keeps the stack up (prints the URLs and the admin password) instead of screenshots.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import websocket

from machine_health import embedded_store, local_airflow
from machine_health.config import Settings
from machine_health.errors import PipelineError
from machine_health.stack import Supervisor

REPO = Path(__file__).resolve().parents[1]
PAGES = [
    "overview",
    "predictions",
    "projection",
    "models",
    "drift",
    "retraining",
    "test_prediction",
]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,1800",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            response = httpx.get(url, timeout=5)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready in {timeout_s}s (last: {last})")


def train(settings: Settings) -> None:
    from machine_health.domains.turbofan.models import FitConfig
    from machine_health.domains.turbofan.training import train_and_register as train_turbofan
    from machine_health.domains.vibration.workflow import train_and_register as train_vibration

    print("training small models (about a minute)...", flush=True)
    train_vibration(settings)
    train_turbofan(settings, model_name="cnn", config=FitConfig(epochs=3, patience=2))


def create_admin(settings: Settings) -> str:
    from machine_health.archive import users
    from machine_health.archive.client import open_db
    from machine_health.security import hash_password

    password = secrets.token_urlsafe(12)
    with open_db(settings) as db:
        users.create_user_sync(db, "admin", hash_password(password), "admin")
    return password


def seed(settings: Settings, api_url: str, password: str) -> None:
    """Real traffic through the API: CWRU test windows (most with feedback), C-MAPSS test units
    cycle by cycle (most with their failure), then drift and performance reports."""
    from machine_health.domains.turbofan.data import SENSORS, SETTINGS, load_subset
    from machine_health.monitoring.drift import run_drift
    from machine_health.monitoring.performance import run_performance
    from machine_health.simulate import vibration_windows

    print("replaying real test data into the API...", flush=True)
    token = httpx.post(f"{api_url}/token", data={"username": "admin", "password": password})
    client = httpx.Client(
        base_url=api_url,
        timeout=300,
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
    )
    with client:
        windows = vibration_windows(settings.data_dir / "cwru", 160)
        for start in range(0, len(windows), 64):
            chunk = windows[start : start + 64]
            answers = client.post(
                "/predict/vibration/batch", json={"items": [w["body"] for w in chunk]}
            ).json()["items"]
            for window, answer in zip(chunk, answers, strict=True):
                if int(answer["prediction_id"], 16) % 4:  # three in four windows get inspected
                    client.post(
                        "/feedback",
                        json={"prediction_id": answer["prediction_id"], "label": window["label"]},
                    )
        data = load_subset(settings.data_dir, "FD001")
        for unit, true_rul in list(zip(data.test_units, data.rul, strict=True))[:6]:
            rows = data.test[data.test["unit"] == unit].sort_values("cycle")
            unit_id = f"FD001-demo-u{int(unit):03d}"
            items = [
                {
                    "unit_id": unit_id,
                    "cycle": int(r["cycle"]),
                    "settings": [float(r[c]) for c in SETTINGS],
                    "sensors": [float(r[c]) for c in SENSORS],
                }
                for _, r in rows.iterrows()
            ]
            for start in range(0, len(items), 64):
                client.post("/predict/turbofan/batch", json={"items": items[start : start + 64]})
            if unit <= 4:  # the first four units' failures are known
                failure = int(rows["cycle"].max()) + int(true_rul)
                client.post(f"/assets/{unit_id}/failure", json={"failure_cycle": failure})
    now = datetime.now(UTC) + timedelta(seconds=1)
    for hours_ago in (2, 1, 0):  # three reports, so the "over time" charts have a line
        moment = now - timedelta(hours=hours_ago)
        try:
            run_drift(settings, "vibration", window=timedelta(hours=24), now=moment)
        except Exception as exc:  # a dev tool: report and go on with the other pages
            print(f"drift report failed: {exc}", flush=True)
        for domain in ("turbofan", "vibration"):
            run_performance(settings, domain, now=moment)


def start_airflow(settings: Settings, supervisor: Supervisor) -> local_airflow.LocalAirflow:
    """A local Airflow api-server with the retrain DAGs and one real run of retrain_vibration on
    the replayed traffic (a new version when its gate passes; the API reloads it)."""
    print("running retrain_vibration once in a local Airflow (a few minutes)...", flush=True)
    settings = settings.model_copy(update={"serving_urls": [settings.api_url]})
    env, password = local_airflow.prepare(settings, REPO, {**os.environ, **settings.as_env()})
    with ThreadPoolExecutor(1) as pool:
        starting = pool.submit(
            local_airflow.launch, settings, supervisor, REPO, env, password, ("api-server",)
        )
        try:
            conf = {"reason": "screenshots: retrain on the replayed traffic"}
            local_airflow.run_once(REPO, env, "retrain_vibration", conf)
        except PipelineError as exc:  # the page then shows the failed run: say so, go on
            print(f"the retrain run failed: {exc}", flush=True)
        return starting.result()


class Browser:
    """Headless Chromium driven over the DevTools protocol (one tab)."""

    def __init__(self, profile: Path) -> None:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            raise SystemExit("chromium is not installed: apt-get install -y chromium")
        port = free_port()
        self.proc = subprocess.Popen(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--remote-debugging-port={port}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/json/version", 30, self.proc)
            tab = next(
                t
                for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json()
                if t["type"] == "page"
            )
            # no Origin header: Chromium refuses DevTools connections from unlisted origins
            self.ws = websocket.create_connection(
                tab["webSocketDebuggerUrl"], timeout=60, suppress_origin=True
            )
        except Exception:
            self.proc.terminate()  # never leave a headless browser behind
            raise
        self.next_id = 0

    def call(self, method: str, **params: object) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def js(self, expression: str) -> object:
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.js(expression):
                return
            time.sleep(0.3)
        raise RuntimeError(f"timed out waiting for {expression}")

    def settle(self, timeout_s: float = 90) -> None:
        """Wait until Streamlit has finished running the script (no spinner, status idle)."""
        time.sleep(1.0)
        self.wait_for(
            "!document.querySelector('[data-testid=\"stStatusWidget\"]') && "
            "!document.querySelector('[data-testid=\"stSpinner\"]') && "
            "!document.querySelector('[data-stale=\"true\"]') && "
            "document.querySelectorAll('[data-testid=\"stMain\"] .element-container').length > 0",
            timeout_s,
        )
        time.sleep(2.5)  # charts (vega) draw after the script's last message

    def type_into(self, selector: str, text: str) -> None:
        self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", text=text)

    def select(self, label: str, option: str) -> None:
        """Choose `option` in the Streamlit selectbox labelled `label` (type it, press Enter)."""
        self.js(
            "Array.from(document.querySelectorAll('[data-testid=\"stSelectbox\"]'))"
            f".find(e => e.innerText.startsWith({json.dumps(label)}))"
            ".querySelector('input').focus()"
        )
        self.call("Input.insertText", text=option)
        time.sleep(0.5)
        for kind in ("keyDown", "keyUp"):
            self.call(
                "Input.dispatchKeyEvent",
                type=kind,
                key="Enter",
                code="Enter",
                windowsVirtualKeyCode=13,
            )
        self.settle()

    def sidebar(self, shown: bool) -> None:
        """Hide the sidebar for a screenshot (the page then has the whole width), or show it."""
        display = "" if shown else "none"
        self.js(
            "document.querySelectorAll('[data-testid=\"stSidebar\"]')"
            f".forEach(e => e.style.display = {json.dumps(display)})"
        )
        time.sleep(1.0 if shown else 2.0)  # the main block re-flows, charts redraw

    def click(self, label: str) -> None:
        self.js(
            "Array.from(document.querySelectorAll('[data-testid=\"stMain\"] button'))"
            f".find(e => e.innerText.trim() === {json.dumps(label)}).click()"
        )
        self.settle()

    def screenshot(self, path: Path) -> None:
        self.sidebar(False)
        height = self.js(
            "Math.max(...Array.from(document.querySelectorAll('*')).map(e => e.scrollHeight))"
        )
        height = int(min(max(int(height or 1800), 900), 4000))
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=1400,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        time.sleep(1.5)
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))
        self.sidebar(True)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=1400,
            height=1800,
            deviceScaleFactor=1,
            mobile=False,
        )

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(10)


def shoot(ui_url: str, password: str, out_dir: Path, profile: Path) -> None:
    browser = Browser(profile)
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=ui_url)
        browser.wait_for("!!document.querySelector('input[aria-label=\"Username\"]')", 60)
        browser.settle()
        browser.screenshot(out_dir / "ui-login.png")
        browser.type_into('input[aria-label="Username"]', "admin")
        browser.type_into('input[aria-label="Password"]', password)
        browser.js("document.querySelector('[data-testid=\"stFormSubmitButton\"] button').click()")
        browser.wait_for("!!document.querySelector('[data-testid=\"stSidebarNav\"]')", 60)
        browser.wait_for("!document.querySelector('[data-testid=\"stForm\"]')", 60)
        for page in PAGES:
            browser.js(
                f'document.querySelector(\'[data-testid="stSidebarNav"] a[href$="/{page}"]\')'
                ".click()"
            )
            browser.settle()
            if page == "predictions":  # the vibration detail: envelope spectrum and defects
                browser.select("Domain", "vibration")
            if page == "test_prediction":  # a real CWRU window scored, not archived
                browser.click("Predict (not archived)")
            browser.screenshot(out_dir / f"ui-{page}.png")
            print(f"saved {out_dir / f'ui-{page}.png'}", flush=True)
    finally:
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", help="reuse the models of this MLflow store")
    parser.add_argument("--out", type=Path, default=REPO / "images")
    parser.add_argument("--serve", action="store_true", help="keep the stack up, no screenshots")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up on kill as on Ctrl-C
    tmp = Path(tempfile.mkdtemp(prefix="mh-screens-"))
    store_port, api_port, ui_port = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen] = []
    supervisor = Supervisor(tmp / "logs")  # the Airflow processes
    try:
        procs.append(
            embedded_store.launch("127.0.0.1", store_port, embedded_store.MEMORY, tmp / "store.log")
        )
        settings = Settings(
            _env_file=None,
            env="dev",
            var_dir=tmp / "var",
            mongodb_uri=f"mongodb://127.0.0.1:{store_port}/",
            mongodb_db="machine_health",
            mlflow_tracking_uri=args.tracking_uri,
            replica_name="replica-1",
            api_url=f"http://127.0.0.1:{api_port}",
            ui_port=ui_port,
            airflow_port=free_port(),
        ).ensure_dev_secrets()
        if not args.tracking_uri:
            train(settings)
        password = create_admin(settings)
        env = {**os.environ, **settings.as_env()}
        log = (tmp / "api.log").open("ab")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "machine_health.api.app:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(api_port),
                    "--no-access-log",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        )
        wait_http(f"{settings.api_url}/ready", 180, procs[-1])
        seed(settings, settings.api_url, password)
        airflow = start_airflow(settings, supervisor)
        ui_env = {
            **env,
            "MH_AIRFLOW_URL": airflow.base_url,
            "MH_AIRFLOW_PASSWORD": airflow.password,
        }
        ui_log = (tmp / "ui.log").open("ab")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "machine_health", "ui"],
                env=ui_env,
                stdout=ui_log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        )
        ui_url = f"http://127.0.0.1:{ui_port}"
        wait_http(f"{ui_url}/_stcore/health", 120, procs[-1])
        if args.serve:
            print(
                f"UI {ui_url}  API {settings.api_url}  admin / {password}  Airflow "
                f"{airflow.base_url} admin / {airflow.password}  (logs {tmp})"
            )
            while True:
                time.sleep(3600)
        args.out.mkdir(parents=True, exist_ok=True)
        shoot(ui_url, password, args.out, tmp / "chromium-profile")
    except KeyboardInterrupt:
        pass
    finally:
        supervisor.stop_all()
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Hostile traffic: valid predictions with a share of malicious requests mixed in, then an audit.

    .venv/bin/python -m bench hostile           # as `make bench` runs it
    .venv/bin/python -m bench.hostile [--share 0.05] [--duration 30] [--clients 16]
                                      [--tracking-uri URI] [--no-write]

The server is the API load benchmark's (`bench/api_load.py`): one uvicorn worker on loopback
pinned to one core, the embedded store (in memory) and this load generator on the other, both
domains' models trained first unless `--tracking-uri` names a registry with @champion versions.
`--clients` closed-loop clients (asyncio, httpx) post for `--duration` seconds. Each request is
malicious with probability `--share`, else valid:

- valid: a real CWRU window to `/predict/vibration` or the next C-MAPSS FD001 cycle of the
  client's own engine unit to `/predict/turbofan` (alternately), each with a unique
  Idempotency-Key, so every one can be found in the archive;
- malicious (one kind drawn uniformly, `ATTACKS`): a cycle >= 2^63, a sensor out of its
  physical range, a 1e39 sample, a NaN sample, a client's used Idempotency-Key with another
  body, a far-future cycle on a client's live unit (a hijack), a token signed with another key,
  an `alg=none` token, an expired token, a viewer's token, a body over MH_MAX_BODY_BYTES, dates
  outside 1970..2099 and a Unix time as a date.

At the end the archive is audited: its documents are exactly the acknowledged valid requests
(200 with `archived` or `spooled`; compared by prediction id, so nothing lost and nothing
extra), no valid request was refused, every malicious one was refused with a 4xx (never a 5xx,
never a 2xx). Writes docs/benchmarks/hostile.json and the "Hostile traffic" subsection of the
API load section of docs/BENCHMARKS.md; exits non-zero if any of that fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import random
import secrets
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import numpy as np

from bench._stack import bench_settings
from bench.api_load import (
    BENCHMARKS_MD,
    REPO,
    _cpus,
    _free_port,
    _payloads,
    _pin,
    _start_api,
    _token,
    _train,
)
from bench.provenance import commit
from machine_health import embedded_store
from machine_health.config import Settings

logger = logging.getLogger("bench.hostile")
OUT_JSON = REPO / "docs" / "benchmarks" / "hostile.json"
START, END = "<!-- hostile:start -->", "<!-- hostile:end -->"
API_LOAD_END = "<!-- api_load:end -->"
ACKNOWLEDGED = {"archived", "spooled"}
ATTACKS = (
    "cycle_beyond_int64",
    "sensor_out_of_range",
    "sample_1e39",
    "sample_nan",
    "idempotency_key_reused",
    "far_future_cycle",
    "forged_token",
    "alg_none_token",
    "expired_token",
    "viewer_token",
    "oversized_body",
    "date_far_future",
    "date_unix_time",
)


@dataclass
class Tally:
    """What the clients saw, shared by all of them (one event loop: no locks)."""

    valid_sent: int = 0
    acknowledged: dict[str, str] = field(default_factory=dict)  # prediction_id -> archived
    valid_refused: list[dict[str, Any]] = field(default_factory=list)
    valid_latency_ms: list[float] = field(default_factory=list)
    malicious: Counter[str] = field(default_factory=Counter)  # by kind
    refused: Counter[str] = field(default_factory=Counter)  # by status
    malicious_by: dict[str, Counter[str]] = field(default_factory=dict)  # kind -> statuses
    breaches: list[dict[str, Any]] = field(default_factory=list)  # a malicious one not a 4xx
    used_keys: list[tuple[str, str]] = field(default_factory=list)  # (route, key) acknowledged


@dataclass
class Client:
    """One closed-loop client: its own turbofan unit, cycles in order."""

    index: int
    unit: str
    cycle: int = 0  # the unit's last acknowledged cycle


def _tokens(settings: Settings) -> dict[str, str]:
    """Tokens an attacker could hold or forge (the real ones are made by the API)."""
    now = int(time.time())
    claims = {"sub": "bench", "role": "operator", "iat": now, "exp": now + 3600,
              "iss": settings.jwt_issuer, "aud": settings.jwt_audience,
              "jti": uuid.uuid4().hex, "ver": 0}  # fmt: skip
    secret = settings.jwt_secret.get_secret_value()  # type: ignore[union-attr]
    return {
        "forged": jwt.encode({**claims, "role": "admin"}, secrets.token_urlsafe(48), "HS256"),
        "alg_none": jwt.encode({**claims, "role": "admin"}, key=None, algorithm="none"),
        "expired": jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, secret, "HS256"),
    }


class Traffic:
    def __init__(
        self, url: str, headers: dict[str, str], payloads: dict[str, Any], settings: Settings,
        viewer: str, share: float, seed: int,
    ) -> None:  # fmt: skip
        self.url = url
        self.headers = headers
        self.vibration = payloads["vibration"]
        self.rows = payloads["turbofan_rows"]
        self.share = share
        self.random = random.Random(seed)
        self.tally = Tally()
        forged = _tokens(settings)
        self.bad_auth = {
            "forged_token": forged["forged"],
            "alg_none_token": forged["alg_none"],
            "expired_token": forged["expired"],
            "viewer_token": viewer,
        }
        self.oversized = b'{"asset_id": "big", "samples": [' + b"0.0, " * (
            settings.max_body_bytes // 5 + 1024
        ) + b'0.0], "sample_rate": 48000.0}'  # fmt: skip

    def _turbofan(self, client: Client, cycle: int) -> dict[str, Any]:
        row = self.rows[(cycle - 1) % len(self.rows)]
        return {"unit_id": client.unit, "cycle": cycle, **row}

    async def valid(self, http: httpx.AsyncClient, client: Client, turn: int) -> None:
        if turn % 2:
            route, body = "/predict/turbofan", self._turbofan(client, client.cycle + 1)
        else:
            route = "/predict/vibration"
            body = {**self.vibration, "asset_id": f"hostile-vib-{client.index}"}
        key = uuid.uuid4().hex
        self.tally.valid_sent += 1
        started = time.perf_counter()
        try:
            answer = await http.post(
                route, json=body, headers={**self.headers, "Idempotency-Key": key}
            )
        except httpx.HTTPError as exc:
            self.tally.valid_refused.append({"route": route, "error": type(exc).__name__})
            return
        elapsed = (time.perf_counter() - started) * 1000
        data = answer.json() if answer.headers.get("content-type", "").startswith("app") else {}
        if answer.status_code != 200 or data.get("archived") not in ACKNOWLEDGED:
            self.tally.valid_refused.append(
                {"route": route, "status": answer.status_code, "body": answer.text[:300]}
            )
            return
        self.tally.valid_latency_ms.append(elapsed)
        self.tally.acknowledged[data["prediction_id"]] = data["archived"]
        self.tally.used_keys.append((route, key))
        if route == "/predict/turbofan":
            client.cycle += 1

    def _attack(self, kind: str, client: Client) -> dict[str, Any]:
        """The request of one attack: method, path, and json / content / params / headers."""
        auth = self.headers
        next_cycle = self._turbofan(client, client.cycle + 1)
        window = {**self.vibration, "asset_id": f"hostile-vib-{client.index}"}
        if kind == "cycle_beyond_int64":
            body = {**next_cycle, "cycle": 2**63 + self.random.randrange(2**20)}
            return {"path": "/predict/turbofan", "json": body, "headers": auth}
        if kind == "sensor_out_of_range":
            sensors = list(next_cycle["sensors"])
            sensors[self.random.randrange(len(sensors))] = 1e6
            return {"path": "/predict/turbofan", "json": {**next_cycle, "sensors": sensors},
                    "headers": auth}  # fmt: skip
        if kind in ("sample_1e39", "sample_nan"):
            samples = list(window["samples"])
            samples[self.random.randrange(len(samples))] = 1e39 if kind == "sample_1e39" else 0.0
            text = json.dumps({**window, "samples": samples})
            if kind == "sample_nan":  # JSON has no NaN; parsers that accept it read this one
                text = text.replace('"samples": [', '"samples": [NaN, ', 1)
            return {"path": "/predict/vibration", "content": text,
                    "headers": {**auth, "Content-Type": "application/json"}}  # fmt: skip
        if kind == "idempotency_key_reused":
            if not self.tally.used_keys:
                return self._attack("far_future_cycle", client)
            route, key = self.random.choice(self.tally.used_keys)
            body = {**window, "asset_id": "someone-else"} if route.endswith("vibration") else {
                **next_cycle, "sensors": [s * 1.01 for s in next_cycle["sensors"]]}  # fmt: skip
            return {"path": route, "json": body, "headers": {**auth, "Idempotency-Key": key}}
        if kind == "far_future_cycle":
            body = {**next_cycle, "cycle": client.cycle + 5_000 + self.random.randrange(90_000)}
            return {"path": "/predict/turbofan", "json": body,
                    "headers": {**auth, "Idempotency-Key": uuid.uuid4().hex}}  # fmt: skip
        if kind in self.bad_auth:
            return {"path": "/predict/turbofan", "json": next_cycle,
                    "headers": {"Authorization": f"Bearer {self.bad_auth[kind]}"}}  # fmt: skip
        if kind == "oversized_body":
            return {"path": "/predict/vibration", "content": self.oversized,
                    "headers": {**auth, "Content-Type": "application/json"}}  # fmt: skip
        if kind == "date_far_future":
            return {"method": "GET", "path": "/predictions", "headers": auth,
                    "params": {"since": "9999-12-31T23:59:59.5Z"}}  # fmt: skip
        if kind == "date_unix_time":
            return {"method": "GET", "path": "/stats/overview", "headers": auth,
                    "params": {"until": "0.5"}}  # fmt: skip
        raise ValueError(kind)

    async def malicious(self, http: httpx.AsyncClient, client: Client) -> None:
        kind = self.random.choice(ATTACKS)
        spec = self._attack(kind, client)
        self.tally.malicious[kind] += 1
        method, path = spec.pop("method", "POST"), spec.pop("path")
        try:
            answer = await http.request(method, path, **spec)
            status = str(answer.status_code)
        except httpx.HTTPError as exc:  # the server cut the connection: refused, not a 4xx
            status, answer = f"transport:{type(exc).__name__}", None
        self.tally.refused[status] += 1
        self.tally.malicious_by.setdefault(kind, Counter())[status] += 1
        if not status.startswith("4"):
            self.tally.breaches.append(
                {"kind": kind, "status": status, "body": answer.text[:300] if answer else None}
            )

    async def run_client(self, client: Client, deadline: float) -> None:
        limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
        async with httpx.AsyncClient(base_url=self.url, timeout=60, limits=limits) as http:
            turn = client.index
            while time.monotonic() < deadline:
                if self.random.random() < self.share:
                    await self.malicious(http, client)
                else:
                    await self.valid(http, client, turn)
                    turn += 1


def _archived_ids(settings: Settings) -> list[str]:
    from machine_health.archive import client as archive_client
    from machine_health.archive import predictions
    from machine_health.archive.client import PREDICTIONS

    client = archive_client.sync_client(settings)
    try:
        db = client[settings.mongodb_db]
        count = predictions.count_predictions(db)
        ids = [d["prediction_id"] for d in db[PREDICTIONS].find({}, {"prediction_id": 1})]
        assert count == len(ids), (count, len(ids))
        return ids
    finally:
        client.close()


def _wait_drained(url: str, timeout_s: float = 60) -> int:
    """The spool's depth once empty (the store is up: nothing should wait in it)."""
    deadline = time.monotonic() + timeout_s
    depth = -1
    while time.monotonic() < deadline:
        depth = int(httpx.get(f"{url}/health", timeout=10).json()["spool_depth"])
        if depth == 0:
            break
        time.sleep(0.5)
    return depth


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mh-bench-hostile-") as tmp:
        work = Path(tmp)
        store_port = _free_port()
        store = embedded_store.launch("127.0.0.1", store_port, "memory", work / "store.log")
        api = None
        try:
            settings = bench_settings(
                store_port,
                work / "var",
                mlflow_tracking_uri=args.tracking_uri,
                log_level="WARNING",
            )
            if args.tracking_uri is None:
                logger.info("training both domains into a temporary registry")
                _train(settings)
            payloads, _ = _payloads(settings)
            api_cpus, other_cpus = _cpus()
            _pin(store.pid, other_cpus)
            _pin(os.getpid(), other_cpus)
            api, url = _start_api(settings, work / "api.log", api_cpus)
            headers = {"Authorization": f"Bearer {_token(settings, url)}"}
            viewer = _token(settings, url, "watcher", "viewer")
            traffic = Traffic(url, headers, payloads, settings, viewer, args.share, args.seed)
            clients = [Client(i, f"hostile-unit-{i}") for i in range(args.clients)]
            deadline = time.monotonic() + args.duration
            started = time.monotonic()
            asyncio.run(_all(traffic, clients, deadline))
            elapsed = time.monotonic() - started
            spool_depth = _wait_drained(url)
            archived = _archived_ids(settings)
            last_cycles = _last_cycles(settings, [c.unit for c in clients])
            api_log = (work / "api.log").read_text()
        finally:
            if api is not None:
                api.terminate()
                api.wait(30)
            store.terminate()
            store.wait(10)
    return _result(args, traffic.tally, archived, elapsed, spool_depth, clients, last_cycles,
                   api_log)  # fmt: skip


async def _all(traffic: Traffic, clients: list[Client], deadline: float) -> None:
    await asyncio.gather(*(traffic.run_client(c, deadline) for c in clients))


def _last_cycles(settings: Settings, units: list[str]) -> dict[str, int | None]:
    """Each unit's last archived cycle (read whole: no sort on the embedded store)."""
    from machine_health.archive import client as archive_client
    from machine_health.archive.client import PREDICTIONS

    client = archive_client.sync_client(settings)
    last: dict[str, int | None] = dict.fromkeys(units)
    try:
        docs = client[settings.mongodb_db][PREDICTIONS].find(
            {"domain": "turbofan"}, {"asset_id": 1, "cycle": 1}
        )
        for doc in docs:
            unit, cycle = doc.get("asset_id"), doc.get("cycle")
            if unit in last and cycle is not None:
                last[unit] = max(cycle, last[unit] or 0)
        return last
    finally:
        client.close()


def _result(
    args: argparse.Namespace, tally: Tally, archived: list[str], elapsed: float, spool: int,
    clients: list[Client], last_cycles: dict[str, int | None], api_log: str,
) -> dict[str, Any]:  # fmt: skip
    acknowledged = set(tally.acknowledged)
    stored = set(archived)
    latencies = np.asarray(tally.valid_latency_ms or [math.nan])
    hijacked = {c.unit: (c.cycle, last_cycles.get(c.unit)) for c in clients
                if c.cycle and last_cycles.get(c.unit) != c.cycle}  # fmt: skip
    checks = {
        "archive == acknowledged valid requests": stored == acknowledged
        and len(archived) == len(acknowledged),
        "no valid request refused": not tally.valid_refused,
        "every malicious request refused with a 4xx": not tally.breaches,
        "no unit's last archived cycle moved by an attack": not hijacked,
        "spool drained": spool == 0,
        "no traceback in the API log": "Traceback" not in api_log,
    }
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",  # noqa: E501
        "command": _command(args),
        "duration_s": round(elapsed, 1),
        "clients": args.clients,
        "malicious_share": args.share,
        "requests": {
            "valid": tally.valid_sent,
            "malicious": sum(tally.malicious.values()),
            "valid_per_s": round(tally.valid_sent / elapsed, 1),
        },
        "acknowledged": {
            "total": len(acknowledged),
            "archived": sum(v == "archived" for v in tally.acknowledged.values()),
            "spooled": sum(v == "spooled" for v in tally.acknowledged.values()),
        },
        "archived_docs": len(archived),
        "lost": len(acknowledged - stored),
        "extra_in_archive": len(stored - acknowledged),
        "valid_refused": len(tally.valid_refused),
        "valid_refused_first": tally.valid_refused[:10],
        "valid_latency_ms": {
            "p50": round(float(np.percentile(latencies, 50)), 1),
            "p99": round(float(np.percentile(latencies, 99)), 1),
            "max": round(float(np.max(latencies)), 1),
        },
        "malicious_by_kind": dict(sorted(tally.malicious.items())),
        "refused_by_status": dict(sorted(tally.refused.items())),
        "status_by_kind": {k: dict(v) for k, v in sorted(tally.malicious_by.items())},
        "breaches": tally.breaches[:20],
        "units_moved": hijacked,
        "spool_depth_after": spool,
        "checks": checks,
        "passed": all(checks.values()),
    }


def _command(args: argparse.Namespace) -> str:
    parts = [".venv/bin/python -m bench.hostile", f"--share {args.share}",
             f"--duration {args.duration}", f"--clients {args.clients}"]  # fmt: skip
    if args.tracking_uri:
        parts.append("--tracking-uri <a registry with @champion versions>")
    return " ".join(parts)


def markdown(result: dict[str, Any]) -> str:
    req, ack, lat = result["requests"], result["acknowledged"], result["valid_latency_ms"]
    refused = ", ".join(f"{s}: {n}" for s, n in result["refused_by_status"].items())
    kinds = "; ".join(
        f"{kind} {n} ({', '.join(f'{s}' for s in result['status_by_kind'].get(kind, {}))})"
        for kind, n in result["malicious_by_kind"].items()
    )
    lines = [
        START,
        "### Hostile traffic (`bench/hostile.py`)",
        "",
        f"Command: `{result['command']}` (also part of `make bench`). The API load benchmark's "
        f"server (one uvicorn worker pinned to one core, the embedded store in memory); "
        f"{result['clients']} closed-loop clients for {result['duration_s']} s, each request "
        f"malicious with probability {result['malicious_share']:g}, else a valid prediction "
        "(a real CWRU window or the next FD001 cycle of the client's own unit) with a unique "
        "Idempotency-Key. Measured "
        f"{result['measured_at']} at commit {result['commit']} on {result['machine']}.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| requests: valid / malicious | {req['valid']} / {req['malicious']} |",
        f"| valid acknowledged (200, archived / spooled) | {ack['total']} "
        f"({ack['archived']} / {ack['spooled']}) |",
        f"| documents in the archive after the run | {result['archived_docs']} |",
        f"| acknowledged but not archived (lost) / archived but not acknowledged | "
        f"{result['lost']} / {result['extra_in_archive']} |",
        f"| valid requests refused | {result['valid_refused']} |",
        f"| valid p50 / p99 / max latency | {lat['p50']:.0f} / {lat['p99']:.0f} / "
        f"{lat['max']:.0f} ms |",
        f"| malicious refused, by status | {refused} |",
        "",
        f"Attacks (count, statuses): {kinds}.",
        "",
        "| check | held |",
        "|---|---|",
        *(f"| {name} | {'yes' if ok else '**no**'} |" for name, ok in result["checks"].items()),
        END,
    ]
    return "\n".join(lines)


def write_docs(result: dict[str, Any]) -> None:
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(result, indent=2) + "\n")
    section = markdown(result)
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    if START in text and END in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END) :]
    elif API_LOAD_END in text:  # at the end of the API load section (before the next `## `)
        after = text.index(API_LOAD_END) + len(API_LOAD_END)
        ends = [i for i in (text.find("\n## ", after), text.find("\n<!-- ", after)) if i >= 0]
        at = min(ends) + 1 if ends else len(text)
        text = text[:at] + section + "\n\n" + text[at:]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    BENCHMARKS_MD.write_text(text)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__)
    parser.add_argument("--share", type=float, default=0.05, help="Malicious share, 0..1.")
    parser.add_argument("--duration", type=int, default=30, help="Seconds of load.")
    parser.add_argument("--clients", type=int, default=16, help="Concurrent clients.")
    parser.add_argument("--seed", type=int, default=20261206, help="Draws of the clients.")
    parser.add_argument("--tracking-uri", default=None, help="Registry with @champion models.")
    parser.add_argument("--no-write", action="store_true", help="Print only, write no docs.")
    args = parser.parse_args(argv)
    if not 0 <= args.share <= 1:
        parser.error("--share lies in 0..1")
    result = run(args)
    logger.info("\n%s", json.dumps(result, indent=1))
    if not args.no_write:
        write_docs(result)
    if not result["passed"]:
        failed = [name for name, ok in result["checks"].items() if not ok]
        raise RuntimeError(f"hostile traffic: {', '.join(failed)}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main(sys.argv[1:])

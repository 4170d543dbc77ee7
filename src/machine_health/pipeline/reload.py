"""Step 7: make EVERY serving replica serve the new champion, and wait until each one does.

`PUT /reload?domain=D` (service token) on all replicas at once, then `GET /version` on each
until it reports the expected version of the domain (for a replica of several worker processes:
until all its workers serve it); `ReloadNotConverged` names the replicas
that did not within `reload_timeout_s`. Nothing to do when the run did not promote a version.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from machine_health.config import Settings
from machine_health.errors import ReloadNotConverged
from machine_health.pipeline.replicas import serving_replicas
from machine_health.pipeline.steps import StepRun, step
from machine_health.registry import Slot, slot_key

logger = logging.getLogger(__name__)

POLL_S = 0.2


#: what `served_version` says of a replica that does not answer (or whose workers disagree)
UNKNOWN = "unknown"


def served_version(
    client: httpx.Client, url: str, domain: str, slot: Slot = "champion"
) -> str | None:
    """The version of `domain` a replica serves in `slot` per GET /version (None: none;
    `UNKNOWN`: unreachable).

    A replica of several worker processes answers from one of them: it serves a version only
    once its `workers` report says every worker converged on it (else `UNKNOWN`).
    """
    field = "models" if slot == "champion" else "shadows"
    key = slot_key(domain, slot)
    try:
        response = client.get(f"{url}/version")
        response.raise_for_status()
        body = response.json()
        model = (body.get(field) or {}).get(domain)
        workers = body.get("workers")
        if workers is not None:
            versions = {str(m.get(key)) for m in (workers.get("live") or {}).values()}
            if not workers.get("converged") or len(versions) != 1:
                return UNKNOWN
    except (httpx.HTTPError, ValueError, AttributeError):
        return UNKNOWN
    return None if not model else str(model.get("version"))


def _put_reload(client: httpx.Client, url: str, domain: str, slot: Slot) -> dict[str, Any]:
    try:
        response = client.put(f"{url}/reload", params={"domain": domain, "slot": slot})
    except httpx.HTTPError as exc:
        return {"url": url, "status": None, "error": f"{type(exc).__name__}: {exc}"}
    answer: dict[str, Any] = {"url": url, "status": response.status_code}
    if response.status_code >= 400:
        answer["error"] = response.text[:300]
    return answer


def reload_replicas(
    settings: Settings,
    domain: str,
    version: str | None,
    *,
    urls: list[str] | None = None,
    timeout_s: float | None = None,
    slot: Slot = "champion",
) -> dict[str, Any]:
    """Reload every replica and wait until all serve `version` of `domain` in `slot` (a
    shadow of version None: until none scores with a shadow)."""
    settings.require_secrets("service_token")  # the replicas refuse a reload without it
    token = settings.service_token.get_secret_value()  # type: ignore[union-attr] (required)
    urls = urls or serving_replicas(settings)
    timeout_s = timeout_s or settings.reload_timeout_s
    headers = {"Authorization": f"Bearer {token}"}
    expected = None if version is None else str(version)
    started = time.perf_counter()
    with httpx.Client(headers=headers, timeout=timeout_s) as client:
        with ThreadPoolExecutor(max_workers=min(len(urls), 16)) as pool:
            puts = list(pool.map(lambda u: _put_reload(client, u, domain, slot), urls))
        converged: dict[str, float] = {}
        deadline = started + timeout_s
        while True:
            for url in urls:
                served = served_version(client, url, domain, slot)
                if url not in converged and served == expected:
                    converged[url] = round(time.perf_counter() - started, 3)
            if len(converged) == len(urls) or time.perf_counter() > deadline:
                break
            time.sleep(POLL_S)
        lagging = {u: served_version(client, u, domain, slot) for u in urls if u not in converged}
    if lagging:
        errors = {p["url"]: p.get("error") for p in puts if p.get("error")}
        raise ReloadNotConverged(
            f"{domain} {slot} v{version}: {len(lagging)} of {len(urls)} replica(s) did not "
            f"converge in "
            f"{timeout_s:g}s (they serve {lagging}; reload errors {errors or 'none'})"
        )
    seconds = round(time.perf_counter() - started, 3)
    logger.info("%s %s v%s on %d replica(s) after %.2fs", domain, slot, version, len(urls), seconds)
    return {"version": expected, "slot": slot, "replicas": converged, "convergence_s": seconds}


@step("reload")
def run(job: StepRun) -> dict[str, Any]:
    """Reload every replica when the run promoted a new champion, or set a new shadow
    (re-running re-checks)."""
    registered = job.inputs["register"]
    if registered.get("shadowed"):  # MH_PROMOTION=shadow: scored beside the champion
        outcome = reload_replicas(job.settings, job.domain, registered["version"], slot="shadow")
        return {"reloaded": True, **outcome}
    if not registered["promoted"]:
        return {"reloaded": False, "reason": "the challenger did not pass the gate: champion kept"}
    outcome = reload_replicas(job.settings, job.domain, registered["version"])
    return {"reloaded": True, **outcome}

"""Models: registry versions, aliases, metrics and gate reports; promote / rollback / reload; the
shadow: its comparison with the champion on the same labelled requests, start / promote / drop."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
import streamlit as st

from machine_health.ui import common
from machine_health.ui.client import ApiError

_HEADLINE = ("rmse", "phm", "recall", "f1", "accuracy", "auc", "fpr")


def versions_table(versions: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for v in versions:
        metrics = {
            k: round(m, 4) for k, m in v["metrics"].items() if any(h in k for h in _HEADLINE)
        }
        rows.append(
            {
                "version": v["version"],
                "aliases": ", ".join(v["aliases"]),
                "created (UTC)": v["created_at"][:19],
                **dict(sorted(metrics.items())[:8]),
            }
        )
    return pd.DataFrame(rows)


def gate_report(domain: str, version: str) -> None:
    try:
        with st.spinner("Reading the gate report..."):
            report = common.api().get(f"/models/{domain}/versions/{version}/gate")
    except ApiError as exc:
        if exc.status == 404:
            st.info(
                f"v{version} has no gate report: it was registered outside the retraining "
                "pipeline (e.g. `machine-health train`), whose evaluate step writes one."
            )
        else:
            common.show_error(exc)
        return
    for text in report["markdown"].values():
        # The report is a document of its own (H1 title); inside the page it is a section.
        st.markdown(re.sub(r"^#", "####", text, flags=re.MULTILINE))
    for path, body in report["json"].items():
        with st.expander(path):
            st.json(body)


def admin_actions(domain: str, info: dict[str, Any]) -> None:
    client = common.api()
    versions = [v["version"] for v in info["versions"]]
    cols = st.columns(3)
    target = cols[0].selectbox("Version to promote", versions, key=f"promote_v_{domain}")
    actions = {
        "promote": cols[0].button(f"Promote v{target} to champion", key=f"promote_{domain}"),
        "rollback": cols[1].button("Roll back to @previous", key=f"rollback_{domain}"),
        "reload": cols[2].button("Reload @champion on the API", key=f"reload_{domain}"),
    }
    try:
        if actions["promote"]:
            answer = client.post(f"/models/{domain}/promote", {"version": target})
            st.success(
                f"champion {answer['champion']['old']} -> {answer['champion']['new']}; "
                "reload to serve it"
            )
        elif actions["rollback"]:
            answer = client.post(f"/models/{domain}/rollback")
            st.success(
                f"champion {answer['champion']['old']} -> {answer['champion']['new']}; "
                "reload to serve it"
            )
        elif actions["reload"]:
            answer = client.put("/reload", {"domain": domain})
            result = answer["results"][0]
            st.success(
                f"{answer['replica']} serves {domain} v{result.get('new', {}).get('version')}"
            )
        else:
            return
    except ApiError as exc:
        common.show_error(exc)
        return
    common.clear_cache()


def shadow_section(domain: str, info: dict[str, Any]) -> None:
    """The shadow this replica scores beside the champion, and how it compares on the field."""
    st.subheader("Shadow")
    shadow = info.get("shadow")
    alias = info["aliases"].get("shadow")
    if shadow is None and alias is None:
        st.caption(
            "No shadow: a version set as @shadow scores every archived request beside the "
            "champion, never answering, until the labels say whether to promote it."
        )
        return
    here = f"v{shadow['version']}" if shadow else "none yet"
    st.caption(f"@shadow: v{alias or '-'}; scored by this replica: {here}")
    # cached like the page's other reads: the API computes it from the archive's labels
    report = common.fetch(f"/models/{domain}/shadow", "Comparing champion and shadow...")
    if report is None:
        return
    st.markdown(
        f"**{report['verdict']}** ({report['n_paired']} labelled requests both scored; "
        f"shadow results {report.get('statuses') or {}})"
    )
    if report.get("rows"):
        columns = ["metric", "better", "champion", "challenger", "difference", "interval",
                   "n_groups", "verdict"]  # fmt: skip
        rows = pd.DataFrame(report["rows"]).reindex(columns=columns)
        st.dataframe(rows.rename(columns={"challenger": "shadow"}), hide_index=True)


def shadow_actions(domain: str, info: dict[str, Any]) -> None:
    """Start a shadow, promote it (gated on its field comparison) or drop it."""
    client = common.api()
    champion = info["aliases"].get("champion")
    candidates = [v["version"] for v in info["versions"] if v["version"] != champion]
    cols = st.columns(3)
    target = cols[0].selectbox("Version to shadow", candidates or ["-"], key=f"shadow_v_{domain}")
    actions = {
        "start": cols[0].button(f"Shadow v{target}", key=f"shadow_{domain}",
                                disabled=not candidates),
        "promote": cols[1].button("Promote the shadow", key=f"shadow_promote_{domain}"),
        "drop": cols[2].button("Drop the shadow", key=f"shadow_drop_{domain}"),
    }  # fmt: skip
    try:
        if actions["start"]:
            answer = client.put(f"/models/{domain}/shadow", {"version": target})
            st.success(
                f"@shadow v{answer['shadow']['new']}: scored here now, by every replica within "
                f"{answer['others_within_s']:g} s"
            )
        elif actions["promote"]:
            answer = client.post(f"/models/{domain}/shadow/promote", {"force": False})
            st.success(
                f"champion {answer['champion']['old']} -> {answer['champion']['new']} "
                f"({answer['comparison']['verdict']}); reload the other replicas to serve it"
            )
        elif actions["drop"]:
            answer = client.delete(f"/models/{domain}/shadow")
            st.success(f"shadow v{answer['dropped']} dropped")
        else:
            return
    except ApiError as exc:
        common.show_error(exc)
        return
    common.clear_cache()


def render() -> None:
    st.title("Models")
    common.refresh_button("models_refresh")
    models = common.fetch("/models", "Reading the registry...")
    if models is None:
        return
    if not models["domains"]:
        st.info("The API serves no domain.")
        return
    for domain, tab in zip(models["domains"], st.tabs(list(models["domains"])), strict=True):
        info = models["domains"][domain]
        with tab:
            served = info.get("served") or {}
            aliases = info["aliases"]
            cols = st.columns(3)
            cols[0].metric("Champion", f"v{aliases['champion']}" if "champion" in aliases else "-")
            cols[1].metric("Served by this replica", f"v{served['version']}" if served else "-")
            cols[2].metric("Versions", len(info["versions"]))
            if not info["versions"]:
                st.info(
                    f"No {domain} model registered: `machine-health train {domain}` or a retrain."
                )
                continue
            st.dataframe(versions_table(info["versions"]), hide_index=True)
            versions = [v["version"] for v in info["versions"]]
            chosen = st.selectbox("Gate report of version", versions, key=f"gate_{domain}")
            gate_report(domain, chosen)
            shadow_section(domain, info)
            if common.is_admin():
                st.subheader("Aliases (admin)")
                admin_actions(domain, info)
                shadow_actions(domain, info)
            else:
                st.caption("Promote, rollback, reload and the shadow's actions are for admins.")


render()

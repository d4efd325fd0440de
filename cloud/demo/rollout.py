"""The demo's staged rollouts: a good version goes out in stages, a bad one is stopped at its canary.

The simulated fleet reports labels (``label_mix``): about 15 % of it ``ring=canary`` (devices
with a local API, which take traffic) and half of it ``region=eu``. The demo makes cohorts of them,
then:

- **good**: the trained version goes to the canary cohort, then the eu cohort (half of the fleet
  with the canary), then every device, each stage baking a few seconds and judged by the gates;
- **bad**: a version whose answers are garbage goes to the canary only, with a long bake. The
  canary devices take traffic, judge it on trial and roll it back on their own; the rollout's
  rollback gate then fails, and the engine aborts it and gives every device it offered its
  previous version back, before the bake ends and long before it could reach the rest of the fleet.

Everything goes through the HTTP API, as ``fleet cohorts`` and ``fleet rollouts`` do.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cloud.client.hub import HubClient
from cloud.dashboard import UI_PATH

__all__ = [
    "BAD_CANARY_BAKE_S",
    "CANARY_SHARE",
    "DEMO_BAKE_S",
    "RolloutStepError",
    "bad_rollout_plan",
    "create_cohorts",
    "good_rollout_plan",
    "label_mix",
    "print_transitions",
    "run_good_rollout",
    "start_bad_rollout",
    "wait_rollout",
]

# The canary's share of the fleet; eu is the first half of it.
CANARY_SHARE = 0.15
# Bakes are minutes in production; a few seconds keep the demo short.
DEMO_BAKE_S = 3
# Long enough that the gates, not the end of the bake, decide the bad version's fate.
BAD_CANARY_BAKE_S = 60
# Rollout states after which nothing happens on its own.
_FINAL = frozenset({"completed", "rolled_back", "superseded"})


class RolloutStepError(RuntimeError):
    """A rollout did not end as the demo expected; the message says how it ended and why."""


def label_mix(devices: int, local_api: int) -> str:
    """The simulated fleet's ``--label-mix``: about 15 % of it (at least one device, at most the
    ``local_api`` first ones, which take traffic) is the canary; half of it is in the eu region.

    The simulator gives the values of a key to devices in blocks, in the order given, so the
    canary is the first devices: the ones with a local API.
    """
    canary = min(local_api, max(1, round(CANARY_SHARE * devices)), devices)
    # The smallest whole percentage that gives ``canary`` devices (largest-remainder rounding).
    percent = math.ceil(100 * canary / devices)
    ring = f"ring=canary:{percent},ring=main:{100 - percent}" if percent < 100 else "ring=canary:100"
    return f"{ring},region=eu:50,region=us:50"


def create_cohorts(client: HubClient, out: Console) -> dict[str, int]:
    """The demo's cohorts, by label selector; returns each one's member count."""
    counts: dict[str, int] = {}
    for name, selector, description in (
        ("canary", "ring=canary", "the devices that see a new version first"),
        ("eu", "region=eu", "devices in the EU region"),
    ):
        row = client.create_cohort(name, selector=selector, description=description)
        counts[name] = int(row["member_count"])
    shown = ", ".join(f"{n} ({c} devices)" for n, c in counts.items())
    out.print(f"[bold]cohorts[/]  {shown}, by label selector")
    return counts


def good_rollout_plan(name: str, version: str, *, cohorts: dict[str, int], devices: int) -> dict[str, Any]:
    """Canary, then eu, then everyone; a stage that would add no device (a fleet of one or two,
    where the canary is all of eu) is left out, as it would wait for devices that never come."""
    bake = DEMO_BAKE_S
    stages = [{"name": "canary", "cohort": "canary", "bake": bake}]
    # The canary is the first devices and eu the first half: each stage adds the devices after the last.
    if cohorts["eu"] > cohorts["canary"]:
        stages.append({"name": "eu", "cohort": "eu", "bake": bake})
    if devices > max(cohorts.values()):
        stages.append({"name": "everyone", "percent": 100, "bake": bake})
    return {
        "name": f"{name}-staged",
        "target": {"kind": "model", "model": name, "version": version},
        "stages": stages,
        "gates": {"min_reporting": 1, "max_rollback_pct": 5, "max_update_failure_pct": 10},
        "on_failure": "abort",
    }


def bad_rollout_plan(name: str, version: str) -> dict[str, Any]:
    return {
        "name": f"{name}-bad",
        "target": {"kind": "model", "model": name, "version": version},
        "stages": [
            {"name": "canary", "cohort": "canary", "bake": BAD_CANARY_BAKE_S},
            {"name": "everyone", "percent": 100, "bake": DEMO_BAKE_S},
        ],
        "gates": {"min_reporting": 1, "max_rollback_pct": 5},
        "on_failure": "abort",
    }


def _create(client: HubClient, plan: dict[str, Any]) -> dict[str, Any]:
    return client.create_rollout(json.dumps(plan), content_type="application/json")


def wait_rollout(
    client: HubClient,
    rollout_id: str,
    out: Console,
    *,
    until: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float,
) -> dict[str, Any]:
    """Poll the rollout, printing each transition as it is stored, until ``until(view)`` holds."""
    deadline = time.monotonic() + timeout
    shown = 0
    while True:
        view = client.rollout(rollout_id)
        for t in view["transitions"][shown:]:
            reason = f": {t['reason']}" if t["reason"] else ""
            out.print(
                f"           {escape(t['from_state'])} -> {escape(t['to_state'])} "
                f"({escape(t['event'])}, stage {t['stage'] + 1}){escape(reason)}",
                soft_wrap=True,
            )
        shown = len(view["transitions"])
        if until(view):
            return view
        if view["state"] in _FINAL or time.monotonic() >= deadline:
            raise RolloutStepError(
                f"rollout {view['name']} is {view['state']} at stage {view['stage'] + 1} "
                f"({view['next_action']}); expected {what}"
            )
        time.sleep(0.2)  # a pause between polls of the hub's API, not a wait for an event


def run_good_rollout(
    client: HubClient,
    name: str,
    version: str,
    out: Console,
    *,
    cohorts: dict[str, int],
    devices: int,
    timeout: float,
) -> dict[str, Any]:
    """Roll ``name:version`` out over canary, eu, everyone; returns the completed rollout's view."""
    plan = good_rollout_plan(name, version, cohorts=cohorts, devices=devices)
    created = _create(client, plan)
    stages = " -> ".join(s.get("cohort") or f"{s['percent']:g}% of the fleet" for s in plan["stages"])
    out.print(
        f"[bold]rollout[/]  {name}:{version} in stages {stages} (bake {DEMO_BAKE_S} s each in this demo; "
        f"`fleet rollouts watch {created['id'][:8]}` follows it)",
        soft_wrap=True,
    )
    out.print(f"           live on the dashboard: {client.base_url}{UI_PATH}/#/rollouts/{created['id']}")
    view = wait_rollout(
        client,
        created["id"],
        out,
        until=lambda v: v["state"] == "completed",
        what="completed",
        timeout=timeout,
    )
    offered = [s["devices"] - s["by_state"].get("pending", 0) for s in view["stage_detail"]]
    total, so_far, reached = max(sum(offered), 1), 0, []
    for stage, count in zip(view["stage_detail"], offered, strict=True):
        so_far += count
        reached.append(f"{stage['name']} {count} ({100 * so_far / total:.0f}% of the fleet so far)")
    out.print(f"[bold green]complete[/] devices offered per stage: {', '.join(reached)}", soft_wrap=True)
    return view


def start_bad_rollout(client: HubClient, name: str, version: str) -> tuple[str, str]:
    """Create the bad version's rollout; returns its id and the line that says so."""
    created = _create(client, bad_rollout_plan(name, version))
    line = (
        f"[bold]rollout[/]  {escape(f'{name}:{version}')} to the canary cohort first (bake "
        f"{BAD_CANARY_BAKE_S} s, gates: at most 5 % of reporting devices may roll back); "
        "its devices take traffic"
    )
    return created["id"], line


def print_transitions(out: Console, views: list[dict[str, Any]]) -> None:
    """Each rollout's history: every state change, at which stage, who made it and why."""
    for view in views:
        stages = [s["name"] for s in view["stage_detail"]]
        # A line of its own, not the table's title, which would wrap to the table's width.
        out.print(f"rollout {escape(view['name'])}: {escape(view['state'])}", style="bold", soft_wrap=True)
        table = Table("state", "event", "stage", "by", "reason")
        for t in view["transitions"]:
            table.add_row(
                f"{t['from_state']} -> {t['to_state']}",
                t["event"],
                stages[t["stage"]],
                t["actor"],
                t["reason"],
            )
        out.print(table)

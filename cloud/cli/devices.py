"""`fleet devices ls|show`: the devices as the hub knows them."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.markup import escape

from cloud.cli.common import (
    Col,
    HubUrl,
    Output,
    OutputOpt,
    Token,
    console,
    example,
    fail,
    print_json,
    table,
)
from cloud.client.hub import DEFAULT_HUB_URL, HubClient, HubError, resolve_token

__all__ = ["devices_app", "model_label", "trial_label"]

devices_app = typer.Typer(
    help="List and inspect devices.",
    no_args_is_help=True,
    epilog=example("fleet devices ls --state online", "fleet devices show cam-01"),
)


class State(StrEnum):
    """The states the hub records (a choice, so a typo is refused before any request)."""

    online = "online"
    offline = "offline"
    unknown = "unknown"


def model_label(m: dict[str, Any] | None) -> str:
    if not m:
        return "-"
    variant = m.get("variant")
    return f"{m.get('name')}:{m.get('version')}" + (f" ({variant})" if variant else "")


def trial_label(trial: dict[str, Any] | None) -> str:
    """``serve 12/50``: the trial's mode and how far it is through its window; ``-`` with none."""
    if not trial:
        return "-"
    return f"{trial.get('mode', '?')} {trial.get('requests', 0)}/{trial.get('window_requests', '?')}"


def _seen(value: Any) -> str:
    # Seconds are enough to tell "just now" from "an hour ago"; the JSON keeps the full stamp.
    return str(value or "-").replace("T", " ")[:19]


@devices_app.command(
    "ls", epilog=example("fleet devices ls", "fleet devices ls --state offline --label site=lab -o json")
)
def devices_ls(
    state: Annotated[State | None, typer.Option(help="Only devices in this state.")] = None,
    label: Annotated[
        str | None, typer.Option(metavar="KEY=VALUE", help="Only devices with this label.")
    ] = None,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """List devices known to the hub."""
    try:
        with HubClient(hub_url, resolve_token(token)) as c:
            rows = c.list_devices(state=state.value if state else None, label=label)
    except HubError as e:
        raise fail(e) from e
    if output is Output.json:
        print_json(rows)
        return
    columns = [
        Col("device", typed=True),
        Col("state"),
        Col("health"),
        Col("active model"),
        Col("trial"),
        Col("desired", drop=2),
        Col("in sync"),
        Col("agent", drop=3),
        Col("firmware", drop=4),
        Col("last seen", drop=1),
    ]
    cells = [
        [
            d["id"],
            d.get("state", "-"),
            d.get("health") or "-",
            model_label(d.get("active_model")),
            trial_label(d.get("trial")),
            model_label(d.get("desired_model")),
            "yes" if d.get("in_sync") else "no",
            d.get("agent_version") or "-",
            d.get("firmware_version") or "-",
            _seen(d.get("last_seen")),
        ]
        for d in rows
    ]
    console.print(table(columns, cells, title=f"{len(rows)} device(s)"))


@devices_app.command(
    "show", epilog=example("fleet devices show cam-01", "fleet devices show cam -o json   # a unique prefix")
)
def devices_show(
    device_id: Annotated[
        str, typer.Argument(metavar="ID", help="Device id, or a unique prefix of one.", show_default=False)
    ],
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Show one device: its state, models, trial, firmware, recent events, rollbacks and telemetry."""
    try:
        with HubClient(hub_url, resolve_token(token)) as c:
            device = c.device(device_id)
    except HubError as e:
        raise fail(e) from e
    if output is Output.json:
        print_json(device)
        return
    _print_device(device)


def _print_device(d: dict[str, Any]) -> None:
    labels = ", ".join(f"{k}={v}" for k, v in sorted((d.get("labels") or {}).items())) or "-"
    firmware = d.get("firmware_version") or "-"
    if d.get("firmware_slot"):
        firmware += f" (slot {d['firmware_slot']})"
    summary = [
        ("device", d["id"]),
        ("fleet", d.get("fleet", "-")),
        ("state", d.get("state", "-")),
        ("health", d.get("health") or "-"),
        ("labels", labels),
        ("active model", model_label(d.get("active_model"))),
        ("previous", model_label(d.get("previous_model"))),
        ("desired", model_label(d.get("desired_model"))),
        ("in sync", "yes" if d.get("in_sync") else "no"),
        ("trial", trial_label(d.get("trial"))),
        ("agent", d.get("agent_version") or "-"),
        ("firmware", firmware),
        ("first seen", _seen(d.get("first_seen"))),
        ("last seen", _seen(d.get("last_seen"))),
    ]
    for key, value in summary:
        console.print(f"{key:<13} {escape(str(value))}", soft_wrap=True)
    events = d.get("recent_events") or []
    if events:
        cells = [
            [
                _seen(e.get("ts")),
                e.get("kind", ""),
                f"{e.get('model_name')}:{e.get('model_version')}",
                e.get("reason") or "",
            ]
            for e in events
        ]
        console.print(
            table(
                [Col("when"), Col("event"), Col("model", typed=True), Col("reason")],
                cells,
                title="recent events",
            )
        )
    rollbacks = d.get("rollbacks") or []
    if rollbacks:
        cells = [
            [
                _seen(r.get("ts")),
                f"{r.get('model_name')}:{r.get('model_version')}",
                r.get("gate") or "-",
                r.get("reason", ""),
            ]
            for r in rollbacks
        ]
        console.print(
            table(
                [Col("when"), Col("version", typed=True), Col("gate"), Col("reason")],
                cells,
                title="rollbacks",
            )
        )
    window = d.get("last_telemetry")
    if window:
        console.print(
            f"last telemetry  {window.get('model_name')}:{window.get('model_version')} "
            f"{window.get('requests')} requests, {window.get('errors')} errors, "
            f"p50 {window.get('p50_ms', 0):.2f} ms, p95 {window.get('p95_ms', 0):.2f} ms "
            f"(window ending {_seen(window.get('window_end'))})",
            soft_wrap=True,
        )

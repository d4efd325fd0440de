"""`fleet devices ls|show|label`: the devices as the hub knows them, and the labels operators give them."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.markup import escape

from cloud.cli.common import (
    Col,
    FriendlyGroup,
    HubUrl,
    Output,
    OutputOpt,
    Token,
    console,
    example,
    fail,
    hub_call,
    json_out,
    print_json,
    table,
    usage_error,
)
from cloud.cli.paging import AllOpt, CursorOpt, LimitOpt, fetch_rows, note_more
from cloud.client.hub import DEFAULT_HUB_URL, HubClient, HubError, resolve_token

__all__ = ["devices_app", "model_label", "parse_label_args", "trial_label"]

devices_app = typer.Typer(
    cls=FriendlyGroup,
    help="List and inspect devices, and label them.",
    no_args_is_help=True,
    epilog=example(
        "fleet devices ls --state online",
        "fleet devices show cam-01",
        "fleet devices label cam-01 tier=canary",
    ),
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
    "ls",
    epilog=example(
        "fleet devices ls",
        "fleet devices ls --state offline --label site=lab -o json",
        "fleet devices ls --label 'site in (lab,office),!retired' --all",
    ),
)
def devices_ls(
    state: Annotated[State | None, typer.Option(help="Only devices in this state.")] = None,
    label: Annotated[
        str | None,
        typer.Option(
            metavar="SELECTOR",
            help="Only devices whose labels match: key=value, key!=value, key in (a,b), key notin (a,b), "
            "key, !key; comma-separated requirements must all hold.",
        ),
    ] = None,
    limit: LimitOpt = None,
    cursor: CursorOpt = None,
    every: AllOpt = False,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """List devices known to the hub, by id, a page at a time (--all for every page)."""
    if label is not None:
        from cloud.cli.cohorts import check_selector

        label = check_selector(label, "--label")
    try:
        with HubClient(hub_url, resolve_token(token)) as c:
            rows, more = fetch_rows(
                lambda n, at: c.devices_page(
                    state=state.value if state else None, label=label, limit=n, cursor=at
                ),
                limit=limit,
                cursor=cursor,
                every=every,
            )
    except HubError as e:
        raise fail(e) from e
    if output is Output.json:
        print_json(rows)
        note_more(more, "fleet devices ls")
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
    note_more(more, "fleet devices ls")


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
    device = hub_call(hub_url, token, lambda c: c.device(device_id))
    if json_out(output, device):
        return
    _print_device(device)


def _policy(d: dict[str, Any]) -> str:
    source = d.get("trial_policy_source") or ""
    digest = d.get("trial_policy_digest") or ""
    return f"{source} ({digest[:12]})" if source and digest else source or "-"


def _load(d: dict[str, Any]) -> str:
    ms = float(d.get("last_load_ms") or 0.0)
    if ms <= 0:
        return "-"
    mib = int(d.get("session_memory_bytes") or 0) / (1024 * 1024)
    return f"{ms:.0f} ms, {mib:.1f} MiB"


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
        ("trusted root", f"version {d['trusted_root_version']}" if d.get("trusted_root_version") else "-"),
        ("queue", f"{d.get('queued_messages', 0)} queued, {d.get('dropped_messages', 0)} dropped"),
        ("trial policy", _policy(d)),
        ("last load", _load(d)),
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


def parse_label_args(items: list[str]) -> tuple[dict[str, str | None], list[str]]:
    """``KEY=VALUE`` sets (``KEY=-`` hides the reported label), ``KEY-`` drops the operator's entry."""
    changes: dict[str, str | None] = {}
    removed: list[str] = []
    for item in items:
        key, sep, value = item.partition("=")
        if sep and key:
            changes[key] = value
        elif not sep and len(item) > 1 and item.endswith("-"):
            removed.append(item[:-1])
        else:
            raise usage_error(f"expected KEY=VALUE, KEY=- or KEY-; got {item!r}")
    return changes, removed


@devices_app.command(
    "label",
    epilog=example(
        "fleet devices label cam-01 tier=canary site=lab   # set (wins over what the device reports)",
        "fleet devices label cam-01 tier-                  # drop it: the reported value counts again",
        "fleet devices label cam-01 site=-                 # hide the label the device reports",
        "fleet devices label cam-01 --replace ring=1       # these are now its only operator labels",
    ),
)
def devices_label(
    device_id: Annotated[
        str, typer.Argument(metavar="ID", help="Device id, or a unique prefix of one.", show_default=False)
    ],
    changes: Annotated[
        list[str] | None,
        # Described in the docstring: the help's argument table would name it by its Python type.
        typer.Argument(metavar="KEY=VALUE|KEY=-|KEY-", hidden=True, show_default=False),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace all of the device's operator labels with these.")
    ] = False,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Set or drop a device's operator labels; they win over the labels the device reports.

    After ID: KEY=VALUE sets, KEY=- hides the reported label, KEY- drops yours (the reported one returns).
    """
    updates, removed = parse_label_args(changes or [])
    if replace and removed:
        raise usage_error("--replace takes KEY=VALUE only: the labels not given are dropped anyway")
    if not replace and not updates and not removed:
        raise usage_error("give KEY=VALUE to set, KEY=- to hide or KEY- to drop a label (or --replace)")
    try:
        with HubClient(hub_url, resolve_token(token)) as c:
            if replace:
                result = c.replace_device_labels(device_id, updates)
            else:
                result = c.set_device_labels(device_id, set_labels=updates, remove=removed)
    except HubError as e:
        raise fail(e) from e
    if output is Output.json:
        print_json(result)
        return
    operator = result.get("operator_labels") or {}
    shown = [
        f"{k}={v}" + (" (operator)" if k in operator else "") for k, v in sorted(result["labels"].items())
    ]
    hidden = sorted(k for k, v in operator.items() if v is None)
    console.print(f"{escape(result['device_id'])}: {escape(', '.join(shown) or 'no labels')}", soft_wrap=True)
    if hidden:
        console.print(f"hidden reported labels: {escape(', '.join(hidden))}", soft_wrap=True)

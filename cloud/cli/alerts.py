"""`fleet alerts ls|show|rules|receivers|prometheus`: alerts on cohort metrics, their rules and webhooks."""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

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
    json_out,
    print_json,
    table,
    usage_error,
)
from cloud.cli.paging import AllOpt, CursorOpt, LimitOpt, fetch_rows, note_more
from cloud.client.alerts import AlertsClient
from cloud.client.hub import DEFAULT_HUB_URL, HubError, resolve_token

__all__ = ["alerts_app"]

T = TypeVar("T")

alerts_app = typer.Typer(
    cls=FriendlyGroup,
    help="Alerts on cohort metrics (drift, accuracy, errors, latency), their rules and webhook receivers.",
    no_args_is_help=True,
    epilog=example(
        "fleet alerts rules apply docs/examples/alert-rules.yaml",
        "fleet alerts ls --state firing",
        "fleet alerts show 12",
    ),
)
rules_app = typer.Typer(
    cls=FriendlyGroup,
    help="Alert rules: a condition on a cohort metric that must hold for a while before it fires.",
    no_args_is_help=True,
    epilog=example(
        "fleet alerts rules apply alert-rules.yaml", "fleet alerts rules ls", "fleet alerts rules rm drift"
    ),
)
receivers_app = typer.Typer(
    cls=FriendlyGroup,
    help="Webhook receivers: each gets a signed JSON POST when an alert fires or resolves.",
    no_args_is_help=True,
    epilog=example(
        "fleet alerts receivers add ops https://hooks.example.com/edgefleet", "fleet alerts receivers ls"
    ),
)
alerts_app.add_typer(rules_app, name="rules")
alerts_app.add_typer(receivers_app, name="receivers")


class StateChoice(enum.StrEnum):
    pending = "pending"
    firing = "firing"
    resolved = "resolved"
    inactive = "inactive"


def _client(hub_url: str, token: str | None) -> AlertsClient:
    return AlertsClient(hub_url, resolve_token(token))


def _call(hub_url: str, token: str | None, call: Callable[[AlertsClient], T]) -> T:
    """One request to the hub, as ``hub_call`` makes it, through the alerts client."""
    try:
        client = _client(hub_url, token)
        with client:  # HubClient's __enter__ is typed as HubClient: keep the subclass's name
            return call(client)
    except HubError as e:
        raise fail(e) from e


def _when(value: Any) -> str:
    return str(value or "-").replace("T", " ")[:19]


def _value(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def _cohort(row: dict[str, Any]) -> str:
    if row["cohort_id"] == 0:
        return "(fleet)"
    return str(row["cohort"] or f"#{row['cohort_id']}")


def _model(row: dict[str, Any]) -> str:
    if not row["model_name"]:
        return "-"
    return f"{row['model_name']}:{row['model_version']}"


# --- alerts ----------------------------------------------------------------------------------------


@alerts_app.command(
    "ls",
    epilog=example(
        "fleet alerts ls",
        "fleet alerts ls --state firing --cohort canary",
        "fleet alerts ls --rule drift --all -o json",
    ),
)
def alerts_ls(
    state: Annotated[StateChoice | None, typer.Option(help="Only alerts in this state.")] = None,
    cohort: Annotated[
        str | None, typer.Option(metavar="NAME", help="Only alerts of this cohort.", show_default=False)
    ] = None,
    fleet_scope: Annotated[
        bool, typer.Option("--fleet-scope", help="Only alerts on the fleet-wide series (no cohort).")
    ] = False,
    rule: Annotated[str | None, typer.Option(metavar="NAME", help="Only alerts of this rule.")] = None,
    limit: LimitOpt = None,
    cursor: CursorOpt = None,
    every: AllOpt = False,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """List alerts, newest first: pending, firing, and those that resolved or cleared."""
    if cohort is not None and fleet_scope:
        raise usage_error("--cohort and --fleet-scope are exclusive: give one of them")
    state_text = state.value if state is not None else None
    try:
        c = _client(hub_url, token)
        with c:
            rows, more = fetch_rows(
                lambda n, at: c.alerts_page(
                    state=state_text,
                    cohort=cohort,
                    cohort_id=0 if fleet_scope else None,
                    rule=rule,
                    limit=n,
                    cursor=at,
                ),
                limit=limit,
                cursor=cursor,
                every=every,
            )
    except HubError as e:
        raise fail(e) from e
    if output is Output.json:
        print_json(rows)
    else:
        columns = [
            Col("id", typed=True, justify="right"),
            Col("state"),
            Col("rule", typed=True),
            Col("cohort", typed=True),
            Col("model", drop=2),
            Col("value", justify="right"),
            Col("since", drop=1),
            Col("fired", drop=3),
        ]
        cells = [
            [
                str(r["id"]),
                r["state"],
                r["rule"],
                _cohort(r),
                _model(r),
                _value(r["value"]),
                _when(r["since"]),
                _when(r["fired_at"]),
            ]
            for r in rows
        ]
        console.print(table(columns, cells, title=f"{len(rows)} alert(s)"))
    note_more(more, "fleet alerts ls")


@alerts_app.command("show", epilog=example("fleet alerts show 12", "fleet alerts show 12 -o json"))
def alerts_show(
    alert_id: Annotated[
        int, typer.Argument(metavar="ID", min=1, help="The alert's id (from fleet alerts ls).")
    ],
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Show an alert: its state, value, every transition, and the delivery of its notifications."""
    alert = _call(hub_url, token, lambda c: c.alert(alert_id))
    if json_out(output, alert):
        return
    summary = [
        ("alert", str(alert["id"])),
        ("rule", f"{alert['rule']} ({alert['metric']}, {alert['severity']})"),
        ("state", alert["state"]),
        ("cohort", _cohort(alert)),
        ("model", _model(alert)),
        ("value", _value(alert["value"]) + (f"  ({alert['feature']})" if alert["feature"] else "")),
        ("since", _when(alert["since"])),
        ("fired", _when(alert["fired_at"])),
        ("resolved", _when(alert["resolved_at"])),
        ("evaluated", _when(alert["last_evaluated"])),
    ]
    for key, value in summary:
        console.print(f"{key:<10} {escape(value)}", soft_wrap=True)
    console.print("history:")
    for t in alert["history"]:
        line = f"  {_when(t['at'])}  {t['from']} -> {t['to']} ({t['event']})  {t['detail']}"
        console.print(escape(line), soft_wrap=True, highlight=False)
    deliveries = [(n, d) for n in alert["notifications"] for d in n["deliveries"]]
    if alert["notifications"]:
        console.print("notifications:")
    for n in alert["notifications"]:
        if not n["deliveries"]:
            console.print(f"  {n['state']}: queued for the receivers", highlight=False)
    for n, d in deliveries:
        outcome = f"at {_when(d['delivered_at'])}" if d["state"] == "delivered" else (d["last_error"] or "-")
        line = f"  {n['state']} to {d['receiver']}: {d['state']} after {d['attempts']} attempt(s), {outcome}"
        console.print(escape(line), soft_wrap=True, highlight=False)


# --- rules -----------------------------------------------------------------------------------------


def _condition(rule: dict[str, Any]) -> str:
    text = f"{rule['metric']} {rule['comparison']} {rule['threshold']:g}"
    filters = [f"{k}={rule[k]}" for k in ("feature", "reference") if rule.get(k)]
    text += f" [{', '.join(filters)}]" if filters else ""
    return text + (f" for {rule['for']}" if rule["for_s"] else "")


@rules_app.command("ls", epilog=example("fleet alerts rules ls", "fleet alerts rules ls -o json"))
def rules_ls(
    limit: LimitOpt = None,
    cursor: CursorOpt = None,
    every: AllOpt = False,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """List the fleet's alert rules by name."""
    try:
        c = _client(hub_url, token)
        with c:
            rows, more = fetch_rows(
                lambda n, at: c.rules_page(limit=n, cursor=at), limit=limit, cursor=cursor, every=every
            )
    except HubError as e:
        raise fail(e) from e
    if output is Output.json:
        print_json(rows)
    else:
        columns = [
            Col("rule", typed=True),
            Col("condition"),
            Col("scope", typed=True),
            Col("severity", drop=2),
            Col("enabled", drop=1),
            Col("description", drop=3),
        ]
        cells = [
            [
                r["name"],
                _condition(r),
                r["scope"],
                r["severity"],
                "yes" if r["enabled"] else "no",
                r["description"] or "-",
            ]
            for r in rows
        ]
        console.print(table(columns, cells, title=f"{len(rows)} rule(s)"))
    note_more(more, "fleet alerts rules ls")


@rules_app.command(
    "apply",
    epilog=example(
        "fleet alerts rules apply docs/examples/alert-rules.yaml",
        "fleet alerts rules apply rules.json -o json",
        "cat rules.yaml | fleet alerts rules apply -",
    ),
)
def rules_apply(
    file: Annotated[
        str, typer.Argument(metavar="FILE", help="The rules: a YAML or JSON file, or - for stdin.")
    ],
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create or replace the rules of a file, all or none (the hub lists every problem); others stay."""
    if file == "-":
        text, content_type = sys.stdin.read(), "application/yaml"
    else:
        path = Path(file)
        if not path.is_file():
            raise usage_error(f"FILE: expected a rules file (YAML or JSON); {file!r} is not a file")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise fail(f"cannot read the rules {file}: {e}") from e
        content_type = "application/json" if path.suffix.lower() == ".json" else "application/yaml"
    c = _client(hub_url, token)
    with c:
        try:
            result = c.apply_rules(text, content_type=content_type)
        except HubError as e:
            raise fail(e) from e
    if json_out(output, result):
        return
    for outcome in ("created", "updated", "unchanged"):
        names = result[outcome]
        if names:
            console.print(f"{outcome:<9} {escape(', '.join(names))}", soft_wrap=True)
    if not any(result.values()):
        console.print("the file holds no rules: nothing changed")


@rules_app.command("rm", epilog=example("fleet alerts rules rm drift"))
def rules_rm(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The rule's name.")],
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Delete a rule: its firing alerts resolve (receivers are told); its alerts keep their history."""
    _call(hub_url, token, lambda c: c.delete_rule(name))
    if not json_out(output, {"deleted": name}):
        console.print(f"deleted alert rule [bold]{escape(name)}[/]")


# --- receivers -------------------------------------------------------------------------------------


@receivers_app.command("ls", epilog=example("fleet alerts receivers ls", "fleet alerts receivers ls -o json"))
def receivers_ls(
    limit: LimitOpt = None,
    cursor: CursorOpt = None,
    every: AllOpt = False,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """List the webhook receivers (URLs are shown up to their host: the rest may hold a credential)."""
    try:
        c = _client(hub_url, token)
        with c:
            rows, more = fetch_rows(
                lambda n, at: c.receivers_page(limit=n, cursor=at), limit=limit, cursor=cursor, every=every
            )
    except HubError as e:
        raise fail(e) from e
    if output is Output.json:
        print_json(rows)
    else:
        columns = [Col("receiver", typed=True), Col("url"), Col("enabled"), Col("description", drop=1)]
        cells = [
            [r["name"], r["url"], "yes" if r["enabled"] else "no", r["description"] or "-"] for r in rows
        ]
        console.print(table(columns, cells, title=f"{len(rows)} receiver(s)"))
    note_more(more, "fleet alerts receivers ls")


@receivers_app.command(
    "add",
    epilog=example(
        "fleet alerts receivers add ops https://hooks.example.com/edgefleet",
        "fleet alerts receivers add pager https://pager.example.com/in --description 'on call'",
    ),
)
def receivers_add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A name for the receiver.")],
    url: Annotated[str, typer.Argument(metavar="URL", help="Where to POST: an http:// or https:// URL.")],
    description: Annotated[str, typer.Option(metavar="TEXT", help="Who or what it is.")] = "",
    disabled: Annotated[bool, typer.Option("--disabled", help="Add it without sending to it yet.")] = False,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Add a webhook receiver; each request is signed (X-Edgefleet-Signature, see docs/alerts.md)."""
    if not url.startswith(("http://", "https://")):
        raise usage_error(f"URL: expected an http:// or https:// URL, got {url!r}")
    row = _call(
        hub_url,
        token,
        lambda c: c.add_receiver(name, url, description=description, enabled=not disabled),
    )
    if json_out(output, row):
        return
    console.print(
        f"added receiver [bold]{escape(name)}[/] ({escape(row['url'])}); requests are signed with the hub's "
        "EDGEFLEET_ALERT_WEBHOOK_SECRET, or the key in its data folder's alert-webhook.secret",
        soft_wrap=True,
    )


@receivers_app.command("rm", epilog=example("fleet alerts receivers rm ops"))
def receivers_rm(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The receiver's name.")],
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Delete a receiver; notifications still waiting for it fail."""
    _call(hub_url, token, lambda c: c.delete_receiver(name))
    if not json_out(output, {"deleted": name}):
        console.print(f"deleted receiver [bold]{escape(name)}[/]")


# --- Prometheus ------------------------------------------------------------------------------------


@alerts_app.command(
    "prometheus",
    epilog=example(
        "fleet alerts prometheus > edgefleet-rules.yml && promtool check rules edgefleet-rules.yml",
        "fleet alerts prometheus --hub-url https://hub.example:8080 > /etc/prometheus/rules/edgefleet.yml",
    ),
)
def alerts_prometheus(hub_url: HubUrl = DEFAULT_HUB_URL, token: Token = None) -> None:
    """Print the enabled rules as a Prometheus rules file (over edgefleet_cohort_metric from /metrics)."""
    from cloud.alerts.prometheus import render_rules
    from cloud.alerts.spec import validate_rule

    rows = _call(hub_url, token, lambda c: c.all_rules())
    fields = ("name", "metric", "feature", "reference", "comparison", "threshold", "for", "scope", "severity")
    specs = [validate_rule({k: r[k] for k in (*fields, "enabled", "description")}) for r in rows]
    fleet = rows[0]["fleet"] if rows else "default"
    sys.stdout.write(render_rules(specs, fleet=fleet))

"""`fleet cohorts create|ls|show|rm`: named sets of devices, by label selector, by list, or both."""

from __future__ import annotations

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

__all__ = ["check_selector", "cohorts_app"]

SELECTOR_HELP = (
    "A label selector: key=value, key!=value, key in (a,b), key notin (a,b), key (has it), !key (has it "
    "not); commas join requirements that must all hold."
)

cohorts_app = typer.Typer(
    cls=FriendlyGroup,
    help="Named sets of devices that rollouts stage over: a label selector, a device list, or both.",
    no_args_is_help=True,
    epilog=example(
        "fleet cohorts create canary --selector 'site=lab,tier in (edge,gateway)'",
        "fleet cohorts ls",
        "fleet cohorts show canary",
    ),
)

NameArg = Annotated[
    str, typer.Argument(metavar="NAME", help="Cohort name (lowercase letters, digits, '_', '.', '-').")
]


def check_selector(text: str, option: str = "--selector") -> str:
    """The selector in its canonical spelling; exit 2 with where it went wrong when it does not parse."""
    from cloud.services.labels import SelectorError, parse_selector

    try:
        return str(parse_selector(text))
    except SelectorError as e:
        raise usage_error(f"{option}: {e}") from e


def _when(value: Any) -> str:
    return str(value or "-").replace("T", " ")[:19]


@cohorts_app.command(
    "create",
    epilog=example(
        "fleet cohorts create lab --selector site=lab",
        "fleet cohorts create pilots --device cam-01 --device cam-02 --description 'first wave'",
        "fleet cohorts create eu-edge --selector 'region in (eu-west,eu-north),!retired' --device cam-07",
    ),
)
def cohorts_create(
    name: NameArg,
    selector: Annotated[str | None, typer.Option(metavar="SELECTOR", help=SELECTOR_HELP)] = None,
    device: Annotated[
        list[str] | None,
        typer.Option("--device", "-d", metavar="ID", help="A member whatever its labels (repeatable)."),
    ] = None,
    description: Annotated[str, typer.Option(metavar="TEXT", help="What the cohort is for.")] = "",
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create a cohort: devices matching the selector, the listed devices, or both (the union)."""
    if selector is None and not device:
        raise usage_error("give --selector SELECTOR, --device ID (repeatable), or both")
    if selector is not None:
        selector = check_selector(selector)
    cohort = hub_call(
        hub_url,
        token,
        lambda c: c.create_cohort(name, selector=selector, devices=device, description=description),
    )
    if json_out(output, cohort):
        return
    console.print(f"created cohort [bold]{escape(name)}[/] with {cohort['member_count']} member(s) now")


@cohorts_app.command("ls", epilog=example("fleet cohorts ls", "fleet cohorts ls --all -o json"))
def cohorts_ls(
    limit: LimitOpt = None,
    cursor: CursorOpt = None,
    every: AllOpt = False,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """List the fleet's cohorts by name, with how many devices each holds now."""
    try:
        with HubClient(hub_url, resolve_token(token)) as c:
            rows, more = fetch_rows(
                lambda n, at: c.cohorts_page(limit=n, cursor=at), limit=limit, cursor=cursor, every=every
            )
    except HubError as e:
        raise fail(e) from e
    if output is Output.json:
        print_json(rows)
    else:
        columns = [
            Col("cohort", typed=True),
            Col("members", justify="right"),
            Col("selector"),
            Col("devices", drop=2),
            Col("description", drop=1),
        ]
        cells = [
            [
                r["name"],
                str(r["member_count"]),
                r["selector"] or "-",
                ", ".join(r["devices"]) or "-",
                r["description"] or "-",
            ]
            for r in rows
        ]
        console.print(table(columns, cells, title=f"{len(rows)} cohort(s)"))
    note_more(more, "fleet cohorts ls")


@cohorts_app.command(
    "show", epilog=example("fleet cohorts show canary", "fleet cohorts show canary --limit 200 -o json")
)
def cohorts_show(
    name: NameArg,
    limit: Annotated[
        int, typer.Option("--limit", metavar="N", min=1, max=1000, help="How many members to list.")
    ] = 20,
    cursor: CursorOpt = None,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Show a cohort: its definition, how many devices it holds now, and the first of them."""
    try:
        with HubClient(hub_url, resolve_token(token)) as c:
            cohort = c.cohort(name, members=limit)
            if cursor:
                cohort["members"] = c.cohort_members_page(name, limit=limit, cursor=cursor)
    except HubError as e:
        raise fail(e) from e
    if output is Output.json:
        print_json(cohort)
        return
    members = cohort["members"]
    summary = [
        ("cohort", cohort["name"]),
        ("selector", cohort["selector"] or "-"),
        ("devices", ", ".join(cohort["devices"]) or "-"),
        ("description", cohort["description"] or "-"),
        ("created", _when(cohort["created_at"])),
        ("members", str(cohort["member_count"])),
    ]
    for key, value in summary:
        console.print(f"{key:<12} {escape(value)}", soft_wrap=True)
    if members["data"]:
        console.print(escape(", ".join(members["data"])), soft_wrap=True)
    note_more(members.get("next_cursor"), f"fleet cohorts show {name} --limit {limit}")


@cohorts_app.command("rm", epilog=example("fleet cohorts rm canary"))
def cohorts_rm(
    name: NameArg,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Delete a cohort (refused while an active rollout stages over it). Devices are not touched."""
    try:
        with HubClient(hub_url, resolve_token(token)) as c:
            c.delete_cohort(name)
    except HubError as e:
        raise fail(e) from e
    if output is Output.json:
        print_json({"deleted": name})
    else:
        console.print(f"deleted cohort [bold]{escape(name)}[/]")

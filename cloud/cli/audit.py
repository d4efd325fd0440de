"""`fleet audit ls`: who changed what through the API, newest first (operators and admins)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

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
    print_json,
    table,
    usage_error,
)
from cloud.cli.paging import AllOpt, CursorOpt, LimitOpt, fetch_rows, note_more
from cloud.client.auth import AuthClient
from cloud.client.hub import DEFAULT_HUB_URL, HubError, resolve_token

__all__ = ["audit_app", "moment"]

audit_app = typer.Typer(
    cls=FriendlyGroup,
    help="The audit log: every change made through the hub's API, with who, when, before and after.",
    no_args_is_help=True,
    epilog=example("fleet audit ls", "fleet audit ls --actor ci --since 1d"),
)

_TIME_HELP = "an ISO time (2030-01-02T03:04:05Z) or a duration back from now (90m, 12h, 7d)"


def moment(text: str, option: str, now: datetime | None = None) -> str:
    """An ISO time for the hub from an ISO time or a duration back from ``now``; exit 2 otherwise."""
    from cloud.rollouts.plan import parse_duration

    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = (now or datetime.now(UTC)) - timedelta(seconds=parse_duration(text))
        except ValueError as e:
            raise usage_error(f"{option}: expected {_TIME_HELP}; got {text!r}") from e
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.isoformat()


def _change(row: dict[str, Any]) -> str:
    """One line of what changed: the new values, or what was deleted."""
    shown = row["after"] if row["after"] is not None else row["before"] or {}
    return json.dumps(shown, separators=(",", ":"), default=str)[:200]


@audit_app.command(
    "ls",
    epilog=example(
        "fleet audit ls",
        "fleet audit ls --object-type cohort --action delete",
        "fleet audit ls --since 2030-01-01T00:00:00Z --all -o json",
    ),
)
def audit_ls(
    actor: Annotated[
        str | None, typer.Option(metavar="NAME", help="Only changes made with this token.")
    ] = None,
    action: Annotated[str | None, typer.Option(metavar="ACTION", help="create, update or delete.")] = None,
    object_type: Annotated[
        str | None, typer.Option(metavar="TABLE", help="Only this kind of object, e.g. cohort, api_token.")
    ] = None,
    object_id: Annotated[str | None, typer.Option(metavar="ID", help="Only this object (its key).")] = None,
    request_id: Annotated[
        str | None, typer.Option(metavar="ID", help="Only what one request changed.")
    ] = None,
    since: Annotated[str | None, typer.Option(metavar="TIME", help=f"From: {_TIME_HELP}.")] = None,
    until: Annotated[str | None, typer.Option(metavar="TIME", help=f"Before: {_TIME_HELP}.")] = None,
    limit: LimitOpt = None,
    cursor: CursorOpt = None,
    every: AllOpt = False,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """List audit entries, newest first."""
    if action is not None and action not in ("create", "update", "delete"):
        raise usage_error(f"--action: expected create, update or delete; got {action!r}")
    filters = {
        "actor": actor,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "request_id": request_id,
        "since": moment(since, "--since") if since else None,
        "until": moment(until, "--until") if until else None,
    }
    try:
        with AuthClient(hub_url, resolve_token(token)) as c:
            rows, more = fetch_rows(
                lambda n, at: c.audit_page(**filters, limit=n, cursor=at),
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
            Col("when"),
            Col("actor", typed=True),
            Col("action"),
            Col("object", typed=True),
            Col("operation", drop=2),
            Col("change", drop=1),
            Col("request", drop=3),
        ]
        cells = [
            [
                str(r["at"]).replace("T", " ")[:19],
                f"{r['actor']} ({r['actor_role']}, {r['via']})",
                r["action"],
                f"{r['object_type']}/{r['object_id']}" if r["object_id"] else f"{r['object_type']} (bulk)",
                r["operation"],
                _change(r),
                r["request_id"] or "-",
            ]
            for r in rows
        ]
        console.print(
            table(columns, cells, title=f"{len(rows)} audit entr{'y' if len(rows) == 1 else 'ies'}")
        )
    note_more(more, "fleet audit ls")

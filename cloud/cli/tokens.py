"""`fleet tokens create|ls|revoke`: the hub's API tokens (admin only)."""

from __future__ import annotations

import sys
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
    err_console,
    example,
    fail,
    json_out,
    print_json,
    table,
    usage_error,
)
from cloud.cli.paging import AllOpt, CursorOpt, LimitOpt, fetch_rows, note_more
from cloud.client.auth import AuthClient
from cloud.client.hub import DEFAULT_HUB_URL, HubError, resolve_token

__all__ = ["expiry_seconds", "tokens_app"]

tokens_app = typer.Typer(
    cls=FriendlyGroup,
    help="API tokens: issue them with a role and an expiry, list them, revoke them (admin only).",
    no_args_is_help=True,
    epilog=example(
        "fleet tokens create dashboard --role viewer --expires-in 30d",
        "fleet tokens ls",
        "fleet tokens revoke dashboard",
    ),
)

NameArg = Annotated[
    str, typer.Argument(metavar="NAME", help="Token name (letters, digits, '_', '.', '-'; 64 at most).")
]
ROLES = ("viewer", "operator", "admin")


def expiry_seconds(text: str) -> int:
    """Whole seconds from ``3600``, ``90m``, ``12h``, ``30d``; exit 2 when it is not a duration."""
    from cloud.rollouts.plan import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as e:
        raise usage_error(
            f"--expires-in: expected a duration such as 3600, 90m, 12h or 30d; got {text!r}"
        ) from e
    if seconds < 1:
        raise usage_error(f"--expires-in: expected at least 1 second; got {text!r}")
    return int(seconds)


def _client(hub_url: str, token: str | None) -> AuthClient:
    return AuthClient(hub_url, resolve_token(token))


def _when(value: Any) -> str:
    return str(value).replace("T", " ")[:19] if value else "-"


@tokens_app.command(
    "create",
    epilog=example(
        "fleet tokens create ci --role operator",
        "fleet tokens create dashboard --role viewer --expires-in 30d -o json",
    ),
)
def tokens_create(
    name: NameArg,
    role: Annotated[
        str, typer.Option(metavar="ROLE", help="viewer (read), operator (change), admin (tokens).")
    ],
    expires_in: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION", help="Valid for this long (3600, 90m, 12h, 30d); default: until revoked."
        ),
    ] = None,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Issue a token. Its secret is printed once; the hub keeps only a digest of it."""
    if role not in ROLES:
        raise usage_error(f"--role: expected one of {', '.join(ROLES)}; got {role!r}")
    seconds = expiry_seconds(expires_in) if expires_in is not None else None
    try:
        with _client(hub_url, token) as c:
            created = c.create_token(name, role, expires_in_s=seconds)
    except HubError as e:
        raise fail(e) from e
    if json_out(output, created):
        return
    # The secret alone on stdout, so `$(fleet tokens create ...)` captures just it; the rest on stderr.
    sys.stdout.write(created["token"] + "\n")
    until = _when(created.get("expires_at")) if created.get("expires_at") else "until revoked"
    err_console.print(
        f"created {escape(created['role'])} token [bold]{escape(created['name'])}[/], valid {escape(until)}; "
        "the secret above is shown once",
        soft_wrap=True,
    )


@tokens_app.command("ls", epilog=example("fleet tokens ls", "fleet tokens ls --all -o json"))
def tokens_ls(
    limit: LimitOpt = None,
    cursor: CursorOpt = None,
    every: AllOpt = False,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """List the tokens by name with their role and state (secrets are never shown again)."""
    try:
        with _client(hub_url, token) as c:
            rows, more = fetch_rows(
                lambda n, at: c.tokens_page(limit=n, cursor=at), limit=limit, cursor=cursor, every=every
            )
    except HubError as e:
        raise fail(e) from e
    if output is Output.json:
        print_json(rows)
    else:
        columns = [
            Col("token", typed=True),
            Col("role"),
            Col("state"),
            Col("expires"),
            Col("last used", drop=1),
            Col("created", drop=2),
        ]
        cells = [
            [
                r["name"],
                r["role"],
                "revoked" if r["revoked_at"] else "active" if r["active"] else "expired",
                _when(r["expires_at"]) if r["expires_at"] else "never",
                _when(r["last_used_at"]),
                _when(r["created_at"]),
            ]
            for r in rows
        ]
        console.print(table(columns, cells, title=f"{len(rows)} token(s)"))
    note_more(more, "fleet tokens ls")


@tokens_app.command("revoke", epilog=example("fleet tokens revoke dashboard"))
def tokens_revoke(
    name: NameArg,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Revoke a token at once, with its dashboard sessions. Revoking it again is no error."""
    try:
        with _client(hub_url, token) as c:
            revoked = c.revoke_token(name)
    except HubError as e:
        raise fail(e) from e
    if json_out(output, revoked):
        return
    if revoked["already_revoked"]:
        console.print(f"token [bold]{escape(name)}[/] was already revoked at {_when(revoked['revoked_at'])}")
    else:
        console.print(f"revoked token [bold]{escape(name)}[/]")

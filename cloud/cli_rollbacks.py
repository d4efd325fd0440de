"""`fleet rollbacks`: versions devices rolled back on their own, with the reason and the figures."""

# Typer commands take their options as parameters.
# ruff: noqa: PLR0917

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cloud.client import DEFAULT_HUB_URL, HubClient, HubError, resolve_token

rollbacks_app = typer.Typer(
    help="Versions devices rolled back on their own; the hub does not offer them to those devices again.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

HubUrl = Annotated[
    str, typer.Option("--hub-url", envvar="EDGEFLEET_HUB_URL", help="Base URL of the hub's HTTP API.")
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="EDGEFLEET_TOKEN",
        help="API token (default: the hub's admin.token).",
        show_default=False,
    ),
]

# The figures worth a column; the rest stay in the JSON output.
_FIGURES = ("requests", "js_divergence", "p95_ms", "previous_p95_ms", "disagreement", "swap_ms")


@rollbacks_app.command("ls")
def rollbacks_ls(
    device: Annotated[str | None, typer.Option("--device", "-d", help="Only this device.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model name.")] = None,
    version: Annotated[str | None, typer.Option(help="Only this model version.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Newest first, at most this many.")] = 100,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
) -> None:
    """List device rollbacks: which version, why (the failed gate) and what the device measured."""
    if output not in ("table", "json"):
        err.print(f"[bold red]error:[/] --output expects table or json, got {output!r}")
        raise typer.Exit(2)
    try:
        with HubClient(hub_url, resolve_token(token)) as client:
            rows = client.list_rollbacks(device=device, model=model, version=version, limit=limit)
    except HubError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(1) from e
    if output == "json":
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
        return
    table = Table("when", "device", "version", "gate", "figures", "reason", title=f"{len(rows)} rollback(s)")
    for r in rows:
        details = r.get("details", {})
        figures = " ".join(f"{k}={details[k]}" for k in _FIGURES if k in details)
        table.add_row(
            str(r["ts"])[:19],
            r["device_id"],
            f"{r['model_name']}:{r['model_version']}",
            r["gate"] or "-",
            figures,
            r["reason"],
        )
    console.print(table)

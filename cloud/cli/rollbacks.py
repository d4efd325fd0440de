"""`fleet rollbacks`: versions devices rolled back on their own, with the reason and the figures."""

# Typer commands take their options as parameters.

from __future__ import annotations

import json
import sys
from typing import Annotated

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
    table,
)
from cloud.client.hub import DEFAULT_HUB_URL, HubClient, HubError, resolve_token

rollbacks_app = typer.Typer(
    cls=FriendlyGroup,
    help="Versions devices rolled back on their own; the hub does not offer them to those devices again.",
    no_args_is_help=True,
    epilog=example("fleet rollbacks ls", "fleet rollbacks ls --device cam-01"),
)
# The figures worth a column; the rest stay in the JSON output.
_FIGURES = ("requests", "js_divergence", "p95_ms", "previous_p95_ms", "disagreement", "swap_ms")


@rollbacks_app.command(
    "ls",
    epilog=example("fleet rollbacks ls", "fleet rollbacks ls --model digits-mlp --version 1.0.0 -o json"),
)
def rollbacks_ls(
    device: Annotated[
        str | None, typer.Option("--device", "-d", metavar="ID", help="Only this device.")
    ] = None,
    model: Annotated[str | None, typer.Option(metavar="NAME", help="Only this model name.")] = None,
    version: Annotated[str | None, typer.Option(metavar="VERSION", help="Only this model version.")] = None,
    limit: Annotated[
        int, typer.Option(metavar="N", min=1, max=1000, help="Newest first, at most this many.")
    ] = 100,
    output: OutputOpt = Output.table,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
) -> None:
    """List device rollbacks: which version, why (the failed gate) and what the device measured."""
    try:
        with HubClient(hub_url, resolve_token(token)) as client:
            rows = client.list_rollbacks(device=device, model=model, version=version, limit=limit)
    except HubError as e:
        raise fail(e) from e
    if output is Output.json:
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
        return
    columns = [
        Col("when", drop=1),
        Col("device", typed=True),
        Col("version", typed=True),
        Col("gate"),
        Col("figures", drop=2),
        Col("reason"),
    ]
    cells = []
    for r in rows:
        details = r.get("details", {})
        cells.append(
            [
                str(r["ts"]).replace("T", " ")[:19],
                r["device_id"],
                f"{r['model_name']}:{r['model_version']}",
                r["gate"] or "-",
                " ".join(f"{k}={details[k]}" for k in _FIGURES if k in details),
                r["reason"],
            ]
        )
    console.print(table(columns, cells, title=f"{len(rows)} rollback(s)"))

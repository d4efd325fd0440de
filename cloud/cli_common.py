"""What every `fleet` command module shares: consoles, the hub options, output format, errors."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console

__all__ = ["HubUrl", "Output", "OutputOpt", "Token", "console", "err_console", "fail", "print_json"]

console = Console()
err_console = Console(stderr=True)


class Output(StrEnum):
    table = "table"
    json = "json"


HubUrl = Annotated[
    str, typer.Option("--hub-url", envvar="EDGEFLEET_HUB_URL", help="Base URL of the hub's HTTP API.")
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="EDGEFLEET_TOKEN",
        help="API token (default: the hub's admin.token in EDGEFLEET_DATA_DIR).",
        show_default=False,
    ),
]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="Output format.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error the way every command does; raise what this returns."""
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")

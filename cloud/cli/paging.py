"""Paged listings in the CLI: `--limit`, `--cursor` and `--all`, and the note that more rows wait."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from cloud.cli.common import err_console, usage_error

__all__ = ["AllOpt", "CursorOpt", "LimitOpt", "fetch_rows", "note_more"]

# The hub's own default page and its cap (cloud.services.pagination), repeated so the CLI need not
# import the hub's services to show them.
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000

LimitOpt = Annotated[
    int | None,
    typer.Option(
        "--limit",
        metavar="N",
        min=1,
        max=MAX_LIMIT,
        help=f"At most this many rows (one page; the hub's default is {DEFAULT_LIMIT}).",
        show_default=False,
    ),
]
CursorOpt = Annotated[
    str | None,
    typer.Option("--cursor", metavar="CURSOR", help="Continue after the page that printed this cursor."),
]
AllOpt = Annotated[bool, typer.Option("--all", help="Every row: follow the pages to the end.")]

Fetch = Callable[[int | None, str | None], dict[str, Any]]


def fetch_rows(
    fetch: Fetch, *, limit: int | None, cursor: str | None, every: bool
) -> tuple[list[dict[str, Any]], str | None]:
    """The rows of one page, or of every page from ``cursor`` on; and the cursor of the next page."""
    if every and limit is not None:
        raise usage_error("--all and --limit are exclusive: --all reads every page")
    rows: list[dict[str, Any]] = []
    while True:
        page = fetch(limit, cursor)
        rows.extend(page["data"])
        cursor = page.get("next_cursor")
        if not every or not cursor:
            return rows, cursor


def note_more(next_cursor: str | None, command: str) -> None:
    """Say on stderr (so JSON on stdout stays whole) how to read the rest."""
    if next_cursor:
        err_console.print(
            f"more rows: {command} --cursor {next_cursor}  (or --all)",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )

"""What every `fleet` command module shares: consoles, options, output, errors and exit codes, tables."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args

import typer
from rich.console import Console, JustifyMethod
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from cloud.client.hub import HubClient, HubError, HubUnreachableError, resolve_token

__all__ = [
    "EXIT_CODES_HELP",
    "Col",
    "ExitCode",
    "FriendlyGroup",
    "HubUrl",
    "Output",
    "OutputOpt",
    "Token",
    "console",
    "data_dir",
    "err_console",
    "example",
    "exit_code_for",
    "fail",
    "hub_call",
    "json_out",
    "package_version",
    "print_json",
    "short_prefixes",
    "table",
    "usage_error",
]

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)


class ExitCode(IntEnum):
    """What a `fleet` command's exit status means; README's "Exit codes" lists the same."""

    OK = 0
    ERROR = 1  # anything not listed below: a local file that does not parse, the hub failing (5xx)
    USAGE = 2  # a bad option or argument (click uses 2 for its own checks too)
    NOT_FOUND = 3  # the hub has no such model, version, device, experiment (404)
    REFUSED = 4  # the hub understood and refused: conflict, precondition, too large, invalid content
    AUTH = 5  # no valid token, or a role too low for the request (401, 403)
    UNREACHABLE = 6  # no answer from the hub: connection refused, timeout, unknown host


# One table from HTTP status to exit code. 400 and 422 are the hub refusing content that the CLI
# could not check before sending (an ONNX file that does not load, a name the registry rejects).
_BY_STATUS: dict[int, ExitCode] = {
    400: ExitCode.REFUSED,
    401: ExitCode.AUTH,
    403: ExitCode.AUTH,
    404: ExitCode.NOT_FOUND,
    409: ExitCode.REFUSED,
    412: ExitCode.REFUSED,
    413: ExitCode.REFUSED,
    422: ExitCode.REFUSED,
}

EXIT_CODES_HELP = """Exit codes:
  0  ok
  1  any other error
  2  bad usage: an unknown option, a missing or malformed argument
  3  not found: the hub has no such model, version, device or run (404)
  4  refused: the hub understood and refused (409 conflict, 412, 413 too large, 400/422 invalid)
  5  not authorised: no valid token, or a role too low (401, 403)
  6  the hub is unreachable: connection refused, timeout, unknown host"""


def exit_code_for(error: HubError) -> ExitCode:
    if isinstance(error, HubUnreachableError):
        return ExitCode.UNREACHABLE
    if error.status is None:
        return ExitCode.ERROR
    return _BY_STATUS.get(error.status, ExitCode.ERROR)


def fail(error: HubError | str, code: int | None = None, *, message: str | None = None) -> typer.Exit:
    """Print an error the way every command does; raise what this returns.

    A HubError picks its exit code from what the hub answered (see ExitCode); a message
    without a code exits 1. ``message`` replaces the error's own text (to say what it interrupted).
    """
    if isinstance(error, HubError):
        chosen = exit_code_for(error) if code is None else code
    else:
        chosen = ExitCode.ERROR if code is None else code
    err_console.print(f"[bold red]error:[/] {escape(message or str(error))}")
    return typer.Exit(int(chosen))


def usage_error(message: str) -> typer.Exit:
    """A check of the command's own arguments failed: exit 2, as click does for its checks."""
    return fail(message, ExitCode.USAGE)


class Output(StrEnum):
    table = "table"
    json = "json"


HubUrl = Annotated[
    str,
    typer.Option(
        "--hub-url", envvar="EDGEFLEET_HUB_URL", metavar="URL", help="Base URL of the hub's HTTP API."
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="EDGEFLEET_TOKEN",
        metavar="TOKEN",
        help="API token (default: the hub's admin.token in EDGEFLEET_DATA_DIR).",
        show_default=False,
    ),
]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="Output format.")]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def data_dir() -> Path:
    """Where the CLI keeps its files: $EDGEFLEET_DATA_DIR, else ./.edgefleet (as the hub does)."""
    return Path(os.environ.get("EDGEFLEET_DATA_DIR") or ".edgefleet")


def package_version() -> str:
    try:
        return metadata.version("edgefleet")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def example(*lines: str) -> str:
    """A command's help epilog: example command lines, shown verbatim (no rich markup)."""
    return "Example:\n\n" + "\n".join(f"  {escape(line)}" for line in lines)


def short_prefixes(values: Iterable[str], min_len: int = 8) -> dict[str, str]:
    """The shortest prefix (at least ``min_len`` long) of each value that no other value starts with.

    Like git's short hashes: unique among the values given, which the hub resolves the same way.
    """
    distinct = sorted(set(values))
    shortest: dict[str, str] = {}
    for i, value in enumerate(distinct):
        # Sorted, the values sharing the longest prefix with this one are its neighbours.
        common = max(
            (_common_length(value, distinct[j]) for j in (i - 1, i + 1) if 0 <= j < len(distinct)), default=0
        )
        shortest[value] = value[: max(min_len, common + 1)]
    return shortest


def _common_length(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class Col:
    """A table column. ``typed`` columns hold what users type back (ids, versions): never cut.

    ``drop`` orders the columns that may go when the terminal is too narrow: the highest first;
    0 means always shown.
    """

    header: str
    typed: bool = False
    drop: int = 0
    justify: JustifyMethod = "left"


# A rich table with the default box: one border left of each column and one at the end, and one
# space of padding on each side of a cell.
_PER_COLUMN = 3
# A column that may wrap still needs room for its longest word, up to this many characters.
_WRAP_WORD = 16


def table(columns: Sequence[Col], rows: Sequence[Sequence[str]], *, title: str | None = None) -> Table:
    """A table that fits the console: optional columns are dropped before a typed value is cut."""
    full = [max([len(c.header), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    # What each column needs at the least: typed values whole, other cells wrapped at spaces.
    least = [
        full[i]
        if c.typed
        else max([len(c.header), *(min(_WRAP_WORD, len(w)) for r in rows for w in r[i].split())])
        for i, c in enumerate(columns)
    ]
    keep = list(range(len(columns)))
    for i in sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: -columns[i].drop):
        if sum(least[k] + _PER_COLUMN for k in keep) + 1 <= console.width:
            break
        keep.remove(i)
    out = Table(title=title)
    for i in keep:
        c = columns[i]
        # fold, not ellipsis: if a typed value is still too wide it wraps whole onto the next line.
        out.add_column(
            c.header,
            no_wrap=c.typed,
            overflow="fold" if c.typed else "ellipsis",
            min_width=full[i] if c.typed else None,
            justify=c.justify,
        )
    for r in rows:
        out.add_row(*(escape(r[i]) for i in keep))
    return out


# typer names an option without a metavar by its Python type (<int>, <bool>, list[str]); these are the
# words a person reads instead.
_VALUE_NAMES = {"int": "N", "float": "NUMBER", "str": "TEXT", "datetime": "TIME"}


def _no_type(ctx: Any) -> None:
    return None


def _friendly_metavar(param: Any) -> None:
    """Name what an option takes in words (N, NUMBER, PATH), not as a Python type."""
    if getattr(param, "param_type_name", "") == "argument":
        # typer prints an argument's type beside its name (RUN <str>); the name alone says it.
        param.display_type_rich = _no_type
    if getattr(param, "metavar", None) is not None:
        return
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        param.metavar = ""  # a flag takes no value
        return
    desc = getattr(param, "type_descriptor", None)
    if desc is None or desc.is_choice:
        return  # choices are shown as themselves, e.g. <table|json>
    if getattr(param, "param_type_name", "") == "argument" and param.name:
        name = str(param.name).upper()
    elif desc.is_path:
        name = "PATH"
    elif desc.is_ranged:
        name = _VALUE_NAMES.get(desc.ranged_type_name, "VALUE")
    else:
        element = get_args(desc.annotation)[0] if desc.is_list else desc.annotation
        name = _VALUE_NAMES.get(getattr(element, "__name__", ""), "VALUE")
    param.metavar = name + (
        "..." if desc.is_list and getattr(param, "param_type_name", "") == "argument" else ""
    )


class FriendlyGroup(TyperGroup):
    """A command group whose commands (and its own options) show value names, not Python types.

    Set on every ``typer.Typer`` of the CLI: as click resolves a command through its group, the
    group names each parameter's value, so every help page reads the same however it is reached.
    """

    def get_params(self, ctx: Any) -> Any:
        params = super().get_params(ctx)
        for param in params:
            _friendly_metavar(param)
        return params

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            for param in command.get_params(ctx):
                _friendly_metavar(param)
        return command


def hub_call(hub_url: str, token: str | None, call: Callable[[HubClient], T]) -> T:
    """One request to the hub; a refusal or an unreachable hub ends the command (see ExitCode)."""
    try:
        with HubClient(hub_url, resolve_token(token)) as client:
            return call(client)
    except HubError as e:
        raise fail(e) from e


def json_out(output: Output, data: Any) -> bool:
    """Print ``data`` as JSON when the command was asked for JSON; True when that was all to do."""
    if output is Output.json:
        print_json(data)
        return True
    return False

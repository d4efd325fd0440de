"""`fleet db upgrade|current|history|check`: the hub's database schema, on the database itself.

These talk to the database directly, not to the hub's API: an operator migrates before the
hub starts (a hub refuses to start on an older schema). Back the database up first: a
migration is not undone by starting the previous hub again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cloud.cli.common import (
    Col,
    ExitCode,
    FriendlyGroup,
    Output,
    OutputOpt,
    console,
    example,
    fail,
    json_out,
    table,
    usage_error,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from cloud.migrations import SchemaStatus

__all__ = ["db_app"]

db_app = typer.Typer(
    cls=FriendlyGroup,
    help="The hub's database schema: upgrade it, show its revision, list the revisions, check it.",
    no_args_is_help=True,
    epilog=example(
        "fleet db current",
        "fleet db upgrade",
        "EDGEFLEET_DATABASE_URL=postgresql+psycopg://hub@db/edgefleet fleet db upgrade",
    ),
)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="EDGEFLEET_DATABASE_URL",
        metavar="URL",
        help="The hub's database (default: hub.db in EDGEFLEET_DATA_DIR, as the hub uses).",
        show_default=False,
    ),
]


def _resolve(url: str | None) -> str:
    """The URL as the hub resolves it: the option, else the SQLite file in the data folder."""
    from pydantic import ValidationError

    from cloud.settings import Settings

    try:
        settings = Settings() if url is None else Settings(database_url=url)
    except ValidationError as e:
        reasons = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise usage_error(f"invalid settings: {reasons}") from e
    return settings.resolved_database_url()


def _first_line(e: BaseException) -> str:
    cause = getattr(e, "orig", None) or e
    lines = str(cause).strip().splitlines()
    return lines[0].strip() if lines else type(cause).__name__


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def _database(url: str | None) -> Iterator[tuple[Engine, str]]:
    """An engine that has answered once; exit 6 when the database cannot be reached."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from cloud.db import DatabaseError, create_db_engine

    resolved = _resolve(url)
    shown = _shown(resolved)
    database = make_url(resolved).database
    if resolved.startswith("sqlite") and database and database != ":memory:" and not Path(database).exists():
        # SQLite would create an empty file: a mistyped path must not look like a fresh database.
        raise fail(
            f"no database file at {database} (--database-url, EDGEFLEET_DATABASE_URL or EDGEFLEET_DATA_DIR); "
            "the hub creates it when it first starts",
            ExitCode.NOT_FOUND,
        )
    try:
        engine = create_db_engine(resolved)
    except (DatabaseError, SQLAlchemyError, ImportError) as e:
        raise usage_error(f"cannot open the database {shown}: {_first_line(e)}") from e
    try:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as e:
            raise fail(
                f"cannot reach the database {shown}: {_first_line(e)} "
                "(--database-url, EDGEFLEET_DATABASE_URL)",
                ExitCode.UNREACHABLE,
            ) from e
        yield engine, shown
    finally:
        engine.dispose()


def _status(engine: Engine) -> SchemaStatus:
    from cloud.migrations import migration_connection, schema_status

    with migration_connection(engine) as conn:
        return schema_status(conn)


@db_app.command(
    "upgrade", epilog=example("fleet db upgrade", "fleet db upgrade --database-url sqlite:///hub.db")
)
def upgrade(database_url: DatabaseUrl = None, output: OutputOpt = Output.table) -> None:
    """Migrate the database to this version's schema (back it up first; stop the hub first).

    A database made before migrations existed is first recorded at the revision whose tables
    it matches. One newer than this version is refused.
    """
    from cloud.db import DatabaseError, SchemaMismatchError, upgrade_schema

    with _database(database_url) as (engine, shown):
        try:
            change = upgrade_schema(engine)
        except SchemaMismatchError as e:
            raise fail(f"{shown}: {e}", ExitCode.REFUSED) from e
        except DatabaseError as e:
            # The migration's transaction rolled back: the database is as it was.
            raise fail(f"{shown}: the upgrade failed and was rolled back: {e}") from e
    data = {"database": shown, "from": change.before.revision, "adopted": change.adopted, "to": change.after}
    if json_out(output, data):
        return
    if change.adopted is not None:
        console.print(
            f"{shown} had no schema revision; its tables are revision {change.adopted}, recorded as such"
        )
    if change.changed:
        start = change.adopted or change.before.revision or "empty"
        console.print(f"upgraded {shown} from revision {start} to {change.after}")
    else:
        console.print(f"{shown} is already at revision {change.after}, this version's head")


@db_app.command("current", epilog=example("fleet db current", "fleet db current -o json"))
def current(database_url: DatabaseUrl = None, output: OutputOpt = Output.table) -> None:
    """Show the database's schema revision and whether this version of the hub can start on it."""
    with _database(database_url) as (engine, shown):
        status = _status(engine)
    data = {"database": shown, "revision": status.revision, "head": status.head, "state": str(status.state)}
    if json_out(output, data):
        return
    console.print(f"{shown}: {status.describe()}")


@db_app.command("history", epilog=example("fleet db history", "fleet db history -o json"))
def history(output: OutputOpt = Output.table) -> None:
    """List the schema revisions this version knows, the newest first."""
    from cloud.migrations import history as revisions

    rows = revisions()
    if json_out(
        output,
        [{"revision": r.revision, "down_revision": r.down_revision, "message": r.message} for r in rows],
    ):
        return
    columns = [Col("revision", typed=True), Col("after", typed=True, drop=1), Col("change")]
    cells = [
        [r.revision, r.down_revision or "-", r.message.splitlines()[0] if r.message else ""] for r in rows
    ]
    console.print(table(columns, cells))


@db_app.command("check", epilog=example("fleet db check"))
def check(database_url: DatabaseUrl = None, output: OutputOpt = Output.table) -> None:
    """Check that the database is at this version's head and its tables are what the hub expects.

    Exits 0 when they are, 1 with the differences when not.
    """
    from cloud.migrations import SchemaState, differences, migration_connection, schema_status

    with _database(database_url) as (engine, shown), migration_connection(engine) as conn:
        status = schema_status(conn)
        at_head = status.state is SchemaState.CURRENT
        found = [_describe(d) for d in differences(conn)] if at_head else []
    ok = at_head and not found
    data = {
        "database": shown,
        "revision": status.revision,
        "head": status.head,
        "ok": ok,
        "differences": found,
    }
    if output is Output.json:
        json_out(output, data)
        if not ok:
            raise typer.Exit(int(ExitCode.ERROR))
        return
    if not at_head:
        raise fail(f"{shown}: {status.describe()}")
    if found:
        raise fail(
            f"{shown} is at revision {status.revision} but its tables differ from the hub's: "
            + "; ".join(found)
        )
    console.print(f"{shown}: revision {status.revision}, tables as the hub expects")


def _describe(diff: Any) -> str:
    """One line per difference that autogenerate found: ("add_column", None, "device", Column(...))."""
    if isinstance(diff, list):  # column changes come as a list of tuples
        return ", ".join(_describe(d) for d in diff)
    kind = diff[0]
    objects = [str(getattr(x, "name", x)) for x in diff[1:] if x is not None and not isinstance(x, dict)]
    return f"{kind} {' '.join(objects[:3])}".strip()

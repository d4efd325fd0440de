"""Where a database stands against this hub's migrations, and what the hub may do about it.

The states (what :func:`schema_status` finds) and the action :data:`POLICY` picks for each,
without and with an instruction to upgrade (``fleet db upgrade``, EDGEFLEET_DB_AUTO_UPGRADE)::

    EMPTY        no table of the hub           BUILD     BUILD
    CURRENT      at this hub's head            START     START
    BEHIND       an older revision             REFUSE    UPGRADE
    AHEAD        a revision this hub lacks     REFUSE    REFUSE   (a newer hub migrated it)
    UNVERSIONED  tables, but no revision       REFUSE    ADOPT    (made by ``create_all``
                                                                   before migrations existed)
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from sqlalchemy import Connection, create_engine, inspect

from cloud.errors import HubError
from cloud.migrations import runner
from cloud.migrations.schema import hub_metadata, is_hub_table

__all__ = [
    "POLICY",
    "Action",
    "SchemaError",
    "SchemaState",
    "SchemaStatus",
    "action_for",
    "adopt_unversioned",
    "build_empty",
    "matching_revision",
    "schema_status",
]

# Where a refusal sends the operator.
UPGRADE_ADVICE = "back it up and run `fleet db upgrade`, or set EDGEFLEET_DB_AUTO_UPGRADE=true"


class SchemaError(HubError):
    """The database's schema is not one this hub can run on (as it stands)."""


class SchemaState(enum.StrEnum):
    EMPTY = "empty"
    CURRENT = "current"
    BEHIND = "behind"
    AHEAD = "ahead"
    UNVERSIONED = "unversioned"


class Action(enum.StrEnum):
    BUILD = "build"  # make the tables from the models and record head (build_empty)
    START = "start"  # nothing to do
    UPGRADE = "upgrade"  # run the migrations from the recorded revision to head
    ADOPT = "adopt"  # record the revision the tables match (adopt_unversioned), then UPGRADE
    REFUSE = "refuse"  # SchemaError with SchemaStatus.describe()


# (what the database is, whether upgrading was asked for) -> what to do.
POLICY: Mapping[tuple[SchemaState, bool], Action] = MappingProxyType(
    {
        (SchemaState.EMPTY, False): Action.BUILD,
        (SchemaState.EMPTY, True): Action.BUILD,
        (SchemaState.CURRENT, False): Action.START,
        (SchemaState.CURRENT, True): Action.START,
        (SchemaState.BEHIND, False): Action.REFUSE,
        (SchemaState.BEHIND, True): Action.UPGRADE,
        # A hub cannot run on, nor downgrade, a schema whose revisions it does not have.
        (SchemaState.AHEAD, False): Action.REFUSE,
        (SchemaState.AHEAD, True): Action.REFUSE,
        (SchemaState.UNVERSIONED, False): Action.REFUSE,
        (SchemaState.UNVERSIONED, True): Action.ADOPT,
    }
)


def action_for(state: SchemaState, *, upgrade: bool) -> Action:
    return POLICY[(state, upgrade)]


@dataclass(frozen=True)
class SchemaStatus:
    state: SchemaState
    revision: str | None  # what the database records (None: nothing)
    head: str  # what this hub needs

    def describe(self) -> str:
        """One line for an operator; for BEHIND, AHEAD and UNVERSIONED the refusal, naming both revisions."""
        match self.state:
            case SchemaState.BEHIND:
                return (
                    f"the database is at revision {self.revision}, this hub needs {self.head}: "
                    f"{UPGRADE_ADVICE}"
                )
            case SchemaState.AHEAD:
                return (
                    f"the database is at revision {self.revision}, which this hub does not know "
                    f"(it needs {self.head}): a newer hub migrated it; run that version of the hub, "
                    "or restore the backup taken before the upgrade"
                )
            case SchemaState.UNVERSIONED:
                return (
                    "the database has the hub's tables but no schema revision (made before "
                    f"migrations existed), this hub needs revision {self.head}: {UPGRADE_ADVICE}"
                )
            case SchemaState.EMPTY:
                return f"the database is empty; the hub builds revision {self.head} when it starts"
            case SchemaState.CURRENT:
                return f"the database is at revision {self.revision}, this hub's head"


# A table's name and its columns' names: what tells one revision's tables from another's on any
# backend (types and defaults are reflected differently by SQLite and PostgreSQL).
Shape = dict[str, frozenset[str]]


def _shape(conn: Connection) -> Shape:
    inspector = inspect(conn)
    return {
        name: frozenset(c["name"] for c in inspector.get_columns(name))
        for name in inspector.get_table_names()
        if is_hub_table(name)
    }


def schema_status(conn: Connection) -> SchemaStatus:
    head = runner.head_revision()
    revision = runner.current_revision(conn)
    if revision is None:
        has_tables = any(is_hub_table(name) for name in inspect(conn).get_table_names())
        state = SchemaState.UNVERSIONED if has_tables else SchemaState.EMPTY
    elif revision == head:
        state = SchemaState.CURRENT
    elif revision in runner.known_revisions():
        state = SchemaState.BEHIND
    else:
        state = SchemaState.AHEAD
    return SchemaStatus(state, revision, head)


def build_empty(conn: Connection) -> None:
    """Make every table from the models and record head: what the migrations would build, faster.

    tests/integration/db proves the two agree, so nothing is lost by skipping the replay.
    """
    hub_metadata().create_all(conn)
    runner.stamp(conn, "head")


@functools.cache
def _revision_shape(revision: str) -> Shape:
    # Built on a scratch in-memory database, so that the revisions themselves say what they make.
    scratch = create_engine("sqlite://")
    try:
        with scratch.connect() as conn, conn.begin():
            runner.upgrade(conn, revision)
            return _shape(conn)
    finally:
        scratch.dispose()


def matching_revision(conn: Connection) -> str | None:
    """The newest revision whose tables and columns the database has exactly (None: none)."""
    found = _shape(conn)
    for info in runner.history():
        if _revision_shape(info.revision) == found:
            return info.revision
    return None


def adopt_unversioned(conn: Connection) -> str:
    """Record the revision an unversioned database's tables match; SchemaError when none does."""
    revision = matching_revision(conn)
    if revision is None:
        found = _shape(conn)
        wanted = _revision_shape(runner.head_revision())
        raise SchemaError(
            "the database's tables match no revision of this hub, so it cannot be upgraded in place: "
            f"{_shape_difference(found, wanted)}"
        )
    runner.stamp(conn, revision)
    return revision


def _shape_difference(found: Shape, wanted: Shape) -> str:
    parts: list[str] = []
    missing = sorted(set(wanted) - set(found))
    extra = sorted(set(found) - set(wanted))
    if missing:
        parts.append(f"tables missing: {', '.join(missing)}")
    if extra:
        parts.append(f"tables this hub does not know: {', '.join(extra)}")
    for name in sorted(set(found) & set(wanted)):
        if gone := sorted(wanted[name] - found[name]):
            parts.append(f"{name} lacks {', '.join(gone)}")
        if more := sorted(found[name] - wanted[name]):
            parts.append(f"{name} has unknown {', '.join(more)}")
    return "; ".join(parts[:8]) + ("; ..." if len(parts) > 8 else "")

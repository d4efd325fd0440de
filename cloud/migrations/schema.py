"""What the migrations describe: the hub's tables, and the tables that belong to someone else.

The models are the source of truth for the newest schema; the revisions in ``versions/`` are
the path to it. ``tests/integration/db`` compares the two on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import MetaData
from sqlmodel import SQLModel

__all__ = ["VERSION_TABLE", "hub_metadata", "include_name", "is_hub_table", "render_item"]

# Alembic's bookkeeping table: one row, the revision the database is at.
VERSION_TABLE = "alembic_version"

# APScheduler creates and upgrades its job store's tables itself (cloud.rollouts.scheduler); a
# migration that touched them would fight it.
_FOREIGN_PREFIXES = ("apscheduler_",)


def hub_metadata() -> MetaData:
    """SQLModel's metadata with every table of the hub registered on it."""
    # Each import registers its tables on SQLModel.metadata.
    import cloud.alerts.tables
    import cloud.audit.tables
    import cloud.drift.tables
    import cloud.identity.tables
    import cloud.models
    import cloud.telemetry.tables
    import cloud.training.continuous.tables  # noqa: F401

    return SQLModel.metadata


def is_hub_table(name: str) -> bool:
    """Whether a table is the hub's to create and migrate (not Alembic's, not APScheduler's)."""
    return name != VERSION_TABLE and not name.startswith(_FOREIGN_PREFIXES)


def include_name(name: str | None, type_: str, _parent_names: Any) -> bool:
    """Alembic's filter: compare and autogenerate only the hub's own tables."""
    if type_ == "table":
        return name is not None and is_hub_table(name)
    return True


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Write column types as plain SQLAlchemy types, so that a revision never imports the models.

    A revision is frozen history: if it imported ``cloud.models``, a later change to a model
    would silently change what an old revision creates.
    """
    if type_ != "type":
        return False
    from sqlalchemy.types import TypeDecorator
    from sqlmodel.sql.sqltypes import AutoString

    if isinstance(obj, AutoString):
        return f"sa.String(length={obj.length})" if obj.length else "sa.String()"
    if isinstance(obj, TypeDecorator):
        # UTCDateTime and the like: the column in the database is the decorated type.
        impl = obj.impl_instance
        return f"sa.{impl!r}"
    return False

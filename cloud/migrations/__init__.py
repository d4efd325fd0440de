"""The hub's schema migrations (Alembic), driven from code; see README.md for adding one.

``runner`` holds Alembic's configuration and operations, ``state`` says where a database
stands and what the hub may do about it, ``versions/`` holds the revisions.
"""

from __future__ import annotations

# First: its filters must be on Alembic's loggers before Alembic is imported and logs.
from cloud.migrations import _quiet  # noqa: F401
from cloud.migrations.runner import (
    RevisionInfo,
    current_revision,
    differences,
    head_revision,
    history,
    migration_connection,
)
from cloud.migrations.state import SchemaError, SchemaState, SchemaStatus, schema_status

__all__ = [
    "RevisionInfo",
    "SchemaError",
    "SchemaState",
    "SchemaStatus",
    "current_revision",
    "differences",
    "head_revision",
    "history",
    "migration_connection",
    "schema_status",
]

"""The audit log's one table. Rows are only ever inserted; nothing in the hub updates or deletes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index
from sqlmodel import Field, SQLModel

from cloud.clock import utcnow
from cloud.models import UTCDateTime

__all__ = ["AuditEntry"]


class AuditEntry(SQLModel, table=True):
    """One mutation of one object (or one bulk statement) made by an authenticated actor."""

    __tablename__ = "audit_entry"
    __table_args__ = (
        Index("ix_audit_entry_object", "object_type", "object_id"),
        Index("ix_audit_entry_actor", "actor"),
        Index("ix_audit_entry_at", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    fleet: str = Field(max_length=128)
    # The token's name and role, and how it came: "token" (bearer) or "session" (dashboard cookie).
    actor: str = Field(max_length=64)
    actor_role: str = Field(max_length=16)
    via: str = Field(max_length=16)
    # "create", "update" or "delete".
    action: str = Field(max_length=16)
    # The request that made it: its method and route template, e.g. "POST /api/v1/cohorts".
    operation: str = Field(default="", max_length=255)
    # The table's name and the row's primary key ("a/b" when it has several columns); None for a bulk
    # statement, whose SQL and parameters are in ``after``.
    object_type: str = Field(max_length=64)
    object_id: str | None = Field(default=None, max_length=255)
    # Column values: the whole row on create (after) and delete (before), the changed columns on
    # update. Secrets and digests are left out; binary columns appear as "<N bytes>".
    before: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    after: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    request_id: str | None = Field(default=None, max_length=64)

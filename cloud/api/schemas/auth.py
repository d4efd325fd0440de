"""Shapes of the token, session and audit routes. No shape here carries a token digest."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloud.models import Role

__all__ = [
    "AuditEntryPublic",
    "AuditPublic",
    "SessionLogin",
    "SessionPublic",
    "TokenPublic",
    "TokenRevoked",
    "TokensPublic",
]

_NEXT = "pass as ?cursor= for the next page; null on the last page"


class TokenPublic(BaseModel):
    name: str
    role: Role
    created_at: datetime
    expires_at: datetime | None = Field(description="null: valid until revoked")
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(description="to the minute; null: never used")
    active: bool = Field(description="neither expired nor revoked")


class TokensPublic(BaseModel):
    data: list[TokenPublic]
    count: int
    next_cursor: str | None = Field(default=None, description=_NEXT)


class TokenRevoked(TokenPublic):
    already_revoked: bool = Field(
        description="true: it was revoked before this request, which changed nothing"
    )


class SessionLogin(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=512, description="an API token of this hub")


class SessionPublic(BaseModel):
    name: str = Field(description="the token's name")
    role: Role
    csrf_token: str | None = Field(
        description="send as X-CSRF-Token with every unsafe request that carries the session cookie; "
        "null when the request came with a bearer token"
    )
    expires_at: datetime | None = Field(description="when the session (or the bearer token) ends")


class AuditEntryPublic(BaseModel):
    id: int
    at: datetime
    fleet: str
    actor: str
    actor_role: str
    via: str = Field(description="token (bearer) or session (dashboard cookie)")
    action: str = Field(description="create, update or delete")
    operation: str = Field(description="the request's method and route, e.g. POST /api/v1/cohorts")
    object_type: str = Field(description="the table changed")
    object_id: str | None = Field(description="its primary key; null for a bulk statement")
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None


class AuditPublic(BaseModel):
    data: list[AuditEntryPublic]
    count: int
    next_cursor: str | None = Field(default=None, description=_NEXT)

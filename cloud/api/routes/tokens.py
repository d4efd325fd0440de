"""API tokens (admin only): issue, list and revoke. No answer carries a stored digest."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from cloud.api.deps import AdminDep, ContextDep, SessionDep
from cloud.api.schemas.auth import TokenPublic, TokenRevoked, TokensPublic
from cloud.api.schemas.fleet import TokenCreate, TokenCreated
from cloud.models import ApiToken
from cloud.services import tokens
from cloud.services.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix="/tokens", tags=["tokens"])


def token_public(row: ApiToken, ctx: ContextDep) -> TokenPublic:
    return TokenPublic(
        name=row.name,
        role=row.role,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
        active=tokens.is_active(row, ctx.clock()),
    )


@router.post("", status_code=status.HTTP_201_CREATED, responses={409: {"description": "name taken"}})
def create_token(body: TokenCreate, ctx: ContextDep, session: SessionDep, _token: AdminDep) -> TokenCreated:
    """Issue a token, valid until revoked or for ``expires_in_s`` seconds; its secret is in this
    response only."""
    row, secret = tokens.create_token(
        session, body.name, body.role, expires_in_s=body.expires_in_s, clock=ctx.clock
    )
    return TokenCreated(name=row.name, role=row.role, token=secret, expires_at=row.expires_at)


@router.get("")
def list_tokens(
    ctx: ContextDep,
    session: SessionDep,
    _token: AdminDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many")] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="the next_cursor of the previous page")] = None,
) -> TokensPublic:
    """Every token by name, expired and revoked ones too."""
    page = tokens.list_tokens(session, limit=limit, cursor=cursor)
    rows = [token_public(t, ctx) for t in page.items]
    return TokensPublic(data=rows, count=len(rows), next_cursor=page.next_cursor)


@router.delete("/{name}", responses={404: {"description": "no token of that name"}})
def revoke_token(
    name: Annotated[str, Path(max_length=64)], ctx: ContextDep, session: SessionDep, _token: AdminDep
) -> TokenRevoked:
    """Revoke a token at once, with its dashboard sessions. Revoking it again changes nothing and says so."""
    row, revoked_now = tokens.revoke_token(session, name, clock=ctx.clock)
    return TokenRevoked(**token_public(row, ctx).model_dump(), already_revoked=not revoked_now)

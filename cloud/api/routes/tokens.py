"""API tokens (admin only)."""

from __future__ import annotations

from fastapi import APIRouter, status

from cloud.api.deps import AdminDep, ContextDep, SessionDep
from cloud.api.schemas.fleet import TokenCreate, TokenCreated
from cloud.services import tokens

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.post("", status_code=status.HTTP_201_CREATED, responses={409: {"description": "name taken"}})
def create_token(body: TokenCreate, ctx: ContextDep, session: SessionDep, _token: AdminDep) -> TokenCreated:
    """Issue a token; its secret is in this response only."""
    row, secret = tokens.create_token(session, body.name, body.role, clock=ctx.clock)
    return TokenCreated(name=row.name, role=row.role, token=secret)

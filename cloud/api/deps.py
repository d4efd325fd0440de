"""Dependencies of the API routes: a route's signature lists what it needs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from cloud.context import HubContext
from cloud.errors import AuthError, ForbiddenError
from cloud.models import ApiToken, Role
from cloud.services.tokens import authenticate

_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer <token>`")


def get_context(request: Request) -> HubContext:
    return cast(HubContext, request.app.state.hub)


ContextDep = Annotated[HubContext, Depends(get_context)]


def get_session(ctx: ContextDep) -> Iterator[Session]:
    with ctx.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def current_token(
    ctx: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiToken:
    if credentials is None:
        raise AuthError("missing API token: expected an 'Authorization: Bearer <token>' header")
    # A short session of its own: a long upload must not hold a database transaction open.
    with ctx.sessions() as session:
        token = authenticate(session, credentials.credentials)
    if token is None:
        raise AuthError("invalid API token: expected a token issued by this hub")
    return token


def require(role: Role) -> Callable[[ApiToken], ApiToken]:
    def check(token: Annotated[ApiToken, Depends(current_token)]) -> ApiToken:
        if not token.role.allows(role):
            raise ForbiddenError(
                f"this request needs the {role.value} role; token {token.name!r} has {token.role.value}"
            )
        return token

    return check


ViewerDep = Annotated[ApiToken, Depends(require(Role.VIEWER))]
OperatorDep = Annotated[ApiToken, Depends(require(Role.OPERATOR))]
AdminDep = Annotated[ApiToken, Depends(require(Role.ADMIN))]

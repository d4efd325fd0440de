"""Dependencies of the API routes: a route's signature lists what it needs.

Authentication happens before any route runs (``cloud.api.auth.AuthMiddleware``): it checks the bearer
token or session cookie, and the role a route declares here, before the body is read, and leaves the
token on ``request.state``. The dependencies below read it from there (no second database lookup) and
check the role again, so a route is safe even where the middleware's table of roles were stale. A route
outside /api that declares a role (``/metrics``) gets its bearer token checked here instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from cloud.context import HubContext
from cloud.errors import AuthError, ForbiddenError
from cloud.models import ApiToken, Role
from cloud.services import tokens

__all__ = [
    "TOKEN_STATE",
    "AdminDep",
    "ContextDep",
    "OperatorDep",
    "SessionDep",
    "ViewerDep",
    "current_token",
    "require",
    "required_role",
]

# Where the authentication middleware leaves the request's ApiToken in ``scope["state"]``.
TOKEN_STATE = "api_token"  # noqa: S105 (a key name)

_bearer = HTTPBearer(
    auto_error=False,
    description="An API token: `Authorization: Bearer <token>`. The dashboard sends its `ef_session` "
    "cookie instead (see `POST /api/v1/session`), with `X-CSRF-Token` on every unsafe method.",
)


def get_context(request: Request) -> HubContext:
    return cast(HubContext, request.app.state.hub)


ContextDep = Annotated[HubContext, Depends(get_context)]


def get_session(ctx: ContextDep) -> Iterator[Session]:
    with ctx.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def current_token(
    request: Request,
    ctx: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiToken:
    """The token the middleware authenticated; outside /api (``/metrics``), the bearer token, checked here.

    A sync dependency: FastAPI runs the fallback's database lookup in a worker thread.
    """
    token = request.scope.get("state", {}).get(TOKEN_STATE)
    if isinstance(token, ApiToken):
        return token
    if credentials is None:
        raise AuthError("missing API token: expected an 'Authorization: Bearer <token>' header")
    with ctx.sessions() as session:
        return tokens.check_token(tokens.find_token(session, credentials.credentials), ctx.clock())


# Each role check's function and the role it needs: the middleware and the authz tests read a route's
# role from its dependencies through this table.
_ROLE_OF: dict[Callable[..., Any], Role] = {}


def require(role: Role) -> Callable[[ApiToken], ApiToken]:
    def check(token: Annotated[ApiToken, Depends(current_token)]) -> ApiToken:
        if not token.role.allows(role):
            raise ForbiddenError(
                f"this request needs the {role.value} role; token {token.name!r} has {token.role.value}"
            )
        return token

    _ROLE_OF[check] = role
    return check


def required_role(dependant: Any) -> Role | None:
    """The highest role a route's dependencies (``route.dependant``) require; None when none does."""
    found: Role | None = None
    stack = [dependant]
    while stack:
        dep = stack.pop()
        role = _ROLE_OF.get(getattr(dep, "call", None))  # type: ignore[arg-type]
        if role is not None and (found is None or role.rank > found.rank):
            found = role
        stack.extend(getattr(dep, "dependencies", ()))
    return found


ViewerDep = Annotated[ApiToken, Depends(require(Role.VIEWER))]
OperatorDep = Annotated[ApiToken, Depends(require(Role.OPERATOR))]
AdminDep = Annotated[ApiToken, Depends(require(Role.ADMIN))]

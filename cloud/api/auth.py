"""Authentication of every /api request, before routing reads or parses its body.

A request under ``/api`` carries ``Authorization: Bearer <token>`` or the dashboard's ``ef_session``
cookie; anything else answers 401, whatever the path or method (an unknown path or a wrong method
tells nobody without a token what the API has). With the cookie, a method other than GET, HEAD or
OPTIONS must also carry the session's ``X-CSRF-Token`` (compared in constant time) or answers 403.
When the request matches a route, the role that route declares (``cloud.api.deps.require``) is
checked here too, so a token with too low a role is refused before its upload is read.

On success the token is left on ``scope["state"]`` for the route dependencies, the actor is set
(``requestctx.set_actor``), and the audit recorder is told which operation the request is.
Paths outside ``/api`` (health, metrics, TUF metadata, the dashboard's static files) pass untouched.
The one /api route open without credentials is the login, ``POST /api/v1/session``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.to_thread
from fastapi import Request
from fastapi.routing import iter_route_contexts
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.requests import cookie_parser
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from cloud import errors
from cloud.api.deps import TOKEN_STATE, required_role
from cloud.api.errors import problem_for_exception
from cloud.api.requestctx import Actor, set_actor
from cloud.audit import recorder
from cloud.context import HubContext
from cloud.db import SessionFactory, read_session_factory, read_transaction
from cloud.models import ApiToken, Role, UiSession
from cloud.services import tokens, ui_sessions

__all__ = [
    "CSRF_HEADER",
    "PUBLIC_ROUTES",
    "SAFE_METHODS",
    "SESSION_COOKIE",
    "SESSION_STATE",
    "AuthMiddleware",
]

log = logging.getLogger(__name__)

SESSION_COOKIE = ui_sessions.COOKIE
CSRF_HEADER = ui_sessions.CSRF_HEADER.lower()
SESSION_STATE = "ui_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# (method, path) of the /api routes that need no credentials: logging in hands the token in the body.
PUBLIC_ROUTES = frozenset({("POST", "/api/v1/session")})
_API = "/api"

T = TypeVar("T")

_MISSING = "missing API token: expected an 'Authorization: Bearer <token>' header or an ef_session cookie"


@dataclass(frozen=True, slots=True)
class _Route:
    context: Any  # fastapi.routing.RouteContext
    template: str
    role: Role | None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _is_api(path: str) -> bool:
    return path == _API or path.startswith(_API + "/")


class AuthMiddleware:
    """Checks the credentials of every /api request; see the module's docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._routes: list[_Route] | None = None
        self._readers: dict[Engine, SessionFactory] = {}
        recorder.install()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_api(scope["path"]):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        route = self._match(scope)
        template = route.template if route is not None else scope["path"]
        if (method, template) in PUBLIC_ROUTES:
            await self.app(scope, receive, send)
            return
        ctx: HubContext = scope["app"].state.hub
        try:
            token, ui_session = await self._authenticate(ctx, scope)
            if route is not None and route.role is not None and not token.role.allows(route.role):
                raise errors.ForbiddenError(
                    f"this request needs the {route.role.value} role; token {token.name!r} has "
                    f"{token.role.value}"
                )
        except errors.HubError as e:
            await problem_for_exception(Request(scope), e)(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state[TOKEN_STATE] = token
        state[SESSION_STATE] = ui_session
        set_actor(Actor(token.name, token.role.value, "session" if ui_session is not None else "token"))
        info = recorder.RequestInfo(
            fleet=ctx.settings.fleet, clock=ctx.clock, operation=f"{method} {template}"
        )
        with recorder.bind_request(info):
            await self.app(scope, receive, send)

    def _match(self, scope: Scope) -> _Route | None:
        """The route that will handle the request; None for an unknown path or a wrong method (routing
        answers those 404 and 405 once the caller has authenticated)."""
        if self._routes is None:
            self._routes = [
                _Route(rc, rc.path_format or rc.path or "", required_role(getattr(rc, "dependant", None)))
                for rc in iter_route_contexts(scope["app"].routes)
            ]
        for route in self._routes:
            match, _child = route.context.matches(scope)
            if match is Match.FULL:
                return route
        return None

    async def _authenticate(self, ctx: HubContext, scope: Scope) -> tuple[ApiToken, UiSession | None]:
        authorization = _header(scope, b"authorization")
        if authorization is not None:
            scheme, _, secret = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                raise tokens.UnknownTokenError(
                    "malformed Authorization header: expected 'Authorization: Bearer <token>'"
                )
            token = await self._lookup(
                ctx,
                lambda s: tokens.check_token(tokens.find_token(s, secret.strip()), ctx.clock()),
                lambda t: t,
            )
            return token, None
        cookie = cookie_parser(_header(scope, b"cookie") or "").get(SESSION_COOKIE)
        if not cookie:
            raise errors.AuthError(_MISSING)
        row, token = await self._lookup(
            ctx, lambda s: ui_sessions.resolve_session(s, cookie, ctx.clock()), lambda found: found[1]
        )
        if scope["method"] not in SAFE_METHODS and not ui_sessions.csrf_matches(
            row, _header(scope, CSRF_HEADER.encode("latin-1"))
        ):
            raise errors.ForbiddenError(
                f"missing or wrong X-CSRF-Token header: a {scope['method']} with the session cookie must "
                "carry the csrf_token that POST /api/v1/session returned"
            )
        return token, row

    async def _lookup(
        self, ctx: HubContext, find: Callable[[Session], T], token_of: Callable[[T], ApiToken]
    ) -> T:
        """Run ``find(session)`` in a worker thread on a read-only session, then note the token's use."""
        reader = self._readers.get(ctx.engine)
        if reader is None:
            reader = self._readers[ctx.engine] = read_session_factory(ctx.engine)

        def run() -> T:
            with read_transaction(reader) as session:
                found = find(session)
                session.expunge_all()  # keep the rows readable once the read transaction ends
            with ctx.sessions() as session:
                tokens.note_use(session, token_of(found), ctx.clock())
            return found

        return await anyio.to_thread.run_sync(run)

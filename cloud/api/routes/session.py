"""Dashboard login: trade an API token for an HttpOnly session cookie and a CSRF token.

``POST /session`` is the one /api route open without credentials (the token is in its body).
The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site sends it) and
``Secure`` when the request came over https; the CSRF token guards every unsafe method that carries it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response, status

from cloud.api.auth import SESSION_STATE
from cloud.api.deps import ContextDep, SessionDep, ViewerDep
from cloud.api.requestctx import Actor
from cloud.api.schemas.auth import SessionLogin, SessionPublic
from cloud.audit import recorder
from cloud.models import UiSession
from cloud.services import tokens, ui_sessions

router = APIRouter(prefix="/session", tags=["session"])

_REFUSED: dict[int | str, dict[str, Any]] = {401: {"description": "unknown, expired or revoked token"}}


def _set_cookie(
    response: Response, request: Request, value: str, expires_at: datetime, now: datetime
) -> None:
    response.set_cookie(
        ui_sessions.COOKIE,
        value,
        max_age=max(0, int((expires_at - now).total_seconds())),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


@router.post("", responses=_REFUSED)
def login(
    body: SessionLogin, request: Request, response: Response, ctx: ContextDep, session: SessionDep
) -> SessionPublic:
    """Log in with an API token: sets the ``ef_session`` cookie and returns its CSRF token."""
    now = ctx.clock()
    token = tokens.check_token(tokens.find_token(session, body.token), now)
    actor = Actor(token.name, token.role.value, "session")
    info = recorder.RequestInfo(fleet=ctx.settings.fleet, clock=ctx.clock, operation="POST /api/v1/session")
    with recorder.recording(actor, info):  # the login itself is in the audit log
        opened = ui_sessions.open_session(session, token, ttl_s=ctx.settings.session_ttl_s, now=now)
    _set_cookie(response, request, opened.session_id, opened.row.expires_at, now)
    return SessionPublic(
        name=token.name, role=token.role, csrf_token=opened.csrf_token, expires_at=opened.row.expires_at
    )


@router.get("")
def whoami(request: Request, token: ViewerDep) -> SessionPublic:
    """Who the session cookie (or bearer token) is, and the session's CSRF token for a reloaded page."""
    row = request.scope.get("state", {}).get(SESSION_STATE)
    if isinstance(row, UiSession):
        csrf = ui_sessions.csrf_token_for(request.cookies[ui_sessions.COOKIE])
        return SessionPublic(name=token.name, role=token.role, csrf_token=csrf, expires_at=row.expires_at)
    return SessionPublic(name=token.name, role=token.role, csrf_token=None, expires_at=token.expires_at)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
def logout(request: Request, session: SessionDep, _token: ViewerDep) -> Response:
    """End the session on the hub and clear its cookie (with a bearer token: only the latter)."""
    row = request.scope.get("state", {}).get(SESSION_STATE)
    if isinstance(row, UiSession) and row.id is not None:
        ui_sessions.close_session(session, row.id)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(ui_sessions.COOKIE, path="/", httponly=True, samesite="strict")
    return response

"""Dashboard sessions: a browser logs in once with an API token and then carries an opaque cookie.

The cookie holds a random session id; the hub stores only its sha256, so a copy of the database logs
nobody in. The CSRF token is derived from the session id (an HMAC keyed by it), so ``GET /session``
can hand it back to a reloaded page that cannot read its HttpOnly cookie, while a cross-site page,
which can make the browser send the cookie but never read it, cannot compute it. Its sha256 is
stored too and compared in constant time.

A session lasts ``session_ttl_s`` and never outlives its token: the token is checked again on every
request, so revoking a token ends its sessions at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlmodel import Session, col, select

from cloud.errors import AuthError
from cloud.models import ApiToken, UiSession
from cloud.services.tokens import check_token

__all__ = [
    "COOKIE",
    "CSRF_HEADER",
    "OpenedSession",
    "SessionEndedError",
    "close_session",
    "csrf_matches",
    "csrf_token_for",
    "digest",
    "open_session",
    "resolve_session",
]

# The dashboard's contract: the cookie's name and the header that carries the CSRF token.
COOKIE = "ef_session"
CSRF_HEADER = "X-CSRF-Token"
_CSRF_LABEL = b"edgefleet dashboard csrf v1"


class SessionEndedError(AuthError):
    """The cookie names no live session: it expired, was logged out, or never existed."""


@dataclass(frozen=True, slots=True)
class OpenedSession:
    """A new session: the cookie's value and its CSRF token are here and nowhere else."""

    row: UiSession
    session_id: str
    csrf_token: str


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def csrf_token_for(session_id: str) -> str:
    mac = hmac.new(session_id.encode("utf-8"), _CSRF_LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")


def csrf_matches(row: UiSession, presented: str | None) -> bool:
    """Whether the X-CSRF-Token header that came is the session's, compared in constant time."""
    if not presented:
        return False
    return hmac.compare_digest(digest(presented), row.csrf_sha256)


def open_session(session: Session, token: ApiToken, *, ttl_s: int, now: datetime) -> OpenedSession:
    """A new session for ``token`` (which the caller has checked), ending at the TTL or the token's
    expiry, whichever comes first. Sessions that ended are cleared out on the way."""
    assert token.id is not None
    # Housekeeping, not an operator's change: a Core statement, which the audit log does not record.
    session.connection().execute(delete(UiSession).where(col(UiSession.expires_at) <= now))
    expires_at = now + timedelta(seconds=ttl_s)
    if token.expires_at is not None:
        expires_at = min(expires_at, token.expires_at)
    session_id = secrets.token_urlsafe(32)
    csrf = csrf_token_for(session_id)
    row = UiSession(
        session_sha256=digest(session_id),
        csrf_sha256=digest(csrf),
        token_id=token.id,
        created_at=now,
        expires_at=expires_at,
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return OpenedSession(row, session_id, csrf)


def resolve_session(session: Session, session_id: str, now: datetime) -> tuple[UiSession, ApiToken]:
    """The live session the cookie names and its token; an AuthError that says why not otherwise."""
    found = session.exec(
        select(UiSession, ApiToken)
        .join(ApiToken, col(ApiToken.id) == col(UiSession.token_id))
        .where(UiSession.session_sha256 == digest(session_id))
    ).first()
    if found is None:
        raise SessionEndedError(
            "invalid session: the ef_session cookie names no session of this hub; log in again"
        )
    row, token = found
    if row.expires_at <= now:
        raise SessionEndedError(f"session expired at {row.expires_at.isoformat()}; log in again")
    return row, check_token(token, now)


def close_session(session: Session, row_id: int) -> None:
    """End a session (logout); a session already gone is no error."""
    row = session.get(UiSession, row_id)
    if row is not None:
        session.delete(row)
        session.commit()

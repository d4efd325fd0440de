"""API tokens: random secrets of which the hub keeps only the sha256, each with a role.

A token may expire (``expires_at``) and may be revoked (``revoked_at``); either way it stays a row, so
the audit log's actor names keep meaning one token and a name is never silently reused. Every refusal
says why (unknown, expired, revoked) and never repeats the secret that came.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, col, select

from cloud.clock import Clock, utcnow
from cloud.errors import AuthError, ConflictError, InvalidInputError, NotFoundError
from cloud.models import ApiToken, Role
from cloud.services.pagination import DEFAULT_LIMIT, Page, keyset_page
from model_tools.atomic import atomic_write

__all__ = [
    "BOOTSTRAP_ADMIN",
    "MAX_EXPIRES_IN_S",
    "USE_RESOLUTION_S",
    "TokenExpiredError",
    "TokenRevokedError",
    "UnknownTokenError",
    "authenticate",
    "check_token",
    "create_token",
    "ensure_admin_token",
    "find_token",
    "is_active",
    "list_tokens",
    "note_use",
    "revoke_token",
    "token_digest",
]

log = logging.getLogger(__name__)

BOOTSTRAP_ADMIN = "bootstrap-admin"
# Ten years: a longer expiry is a typo for "never", which is said by giving none.
MAX_EXPIRES_IN_S = 10 * 365 * 86_400
# last_used_at is a hint for finding stale tokens, not a log: at most one write a minute per token.
USE_RESOLUTION_S = 60


class UnknownTokenError(AuthError):
    """The hub never issued this token."""


class TokenExpiredError(AuthError):
    """The token was valid until its expiry, which has passed."""


class TokenRevokedError(AuthError):
    """An admin revoked the token."""


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(
    session: Session,
    name: str,
    role: Role,
    *,
    expires_in_s: int | None = None,
    clock: Clock = utcnow,
) -> tuple[ApiToken, str]:
    """A new token, valid for ``expires_in_s`` seconds (None: until revoked); the secret is returned
    once and never stored."""
    if expires_in_s is not None and not 1 <= expires_in_s <= MAX_EXPIRES_IN_S:
        raise InvalidInputError(
            f"invalid expiry: expected 1 to {MAX_EXPIRES_IN_S} seconds (or none), got {expires_in_s}"
        )
    secret = secrets.token_urlsafe(32)
    now = clock()
    expires_at = now + timedelta(seconds=expires_in_s) if expires_in_s is not None else None
    return _insert(session, name, role, secret, now=now, expires_at=expires_at), secret


def _insert(
    session: Session, name: str, role: Role, secret: str, *, now: datetime, expires_at: datetime | None
) -> ApiToken:
    row = ApiToken(
        name=name, role=role, token_sha256=token_digest(secret), created_at=now, expires_at=expires_at
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError as e:
        session.rollback()
        raise ConflictError(f"a token named {name!r} already exists; expected a new name") from e
    session.refresh(row)
    log.info("created %s token %r", role.value, name)
    return row


def find_token(session: Session, secret: str) -> ApiToken | None:
    """The row of the token whose secret this is, whatever its state; None when never issued."""
    if not secret:
        return None
    return session.exec(select(ApiToken).where(ApiToken.token_sha256 == token_digest(secret))).first()


def is_active(token: ApiToken, now: datetime) -> bool:
    return token.revoked_at is None and (token.expires_at is None or token.expires_at > now)


def check_token(token: ApiToken | None, now: datetime) -> ApiToken:
    """``token`` when it may be used now; else the AuthError that says why it may not."""
    if token is None:
        raise UnknownTokenError("invalid API token: expected a token issued by this hub")
    if token.revoked_at is not None:
        raise TokenRevokedError(
            f"API token {token.name!r} was revoked at {token.revoked_at.isoformat()}; "
            "expected a token that is not revoked (ask an admin for a new one)"
        )
    if token.expires_at is not None and token.expires_at <= now:
        raise TokenExpiredError(
            f"API token {token.name!r} expired at {token.expires_at.isoformat()}; "
            "expected an unexpired token (ask an admin for a new one)"
        )
    return token


def authenticate(session: Session, secret: str, *, clock: Clock = utcnow) -> ApiToken | None:
    """The token's row when it may be used now; None when unknown, expired or revoked."""
    token = find_token(session, secret)
    return token if token is not None and is_active(token, clock()) else None


def note_use(session: Session, token: ApiToken, now: datetime) -> None:
    """Record that ``token`` was used, at most once per USE_RESOLUTION_S; a failure only logs.

    A plain UPDATE (not the ORM) with a guard on the old value: two requests at once write once, and
    the hint is not an audited mutation.
    """
    last = token.last_used_at
    if last is not None and (now - last).total_seconds() < USE_RESOLUTION_S:
        return
    horizon = now - timedelta(seconds=USE_RESOLUTION_S)
    stmt = (
        update(ApiToken)
        .where(col(ApiToken.id) == token.id)
        .where(or_(col(ApiToken.last_used_at).is_(None), col(ApiToken.last_used_at) < horizon))
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    try:
        session.connection().execute(stmt)
        session.commit()
    except SQLAlchemyError as e:
        session.rollback()
        log.debug("could not record the use of token %r: %s", token.name, e)


def list_tokens(session: Session, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> Page[ApiToken]:
    """Every token, revoked and expired ones too, by name."""
    return keyset_page(
        session,
        select(ApiToken),
        [ApiToken.name],
        listing="tokens",
        key_of=lambda t: (t.name,),
        limit=limit,
        cursor=cursor,
    )


def revoke_token(session: Session, name: str, *, clock: Clock = utcnow) -> tuple[ApiToken, bool]:
    """Revoke the token named ``name``; True when this call revoked it, False when it already was.

    Its dashboard sessions end with it: a session is checked against its token on every request.
    """
    token = session.exec(select(ApiToken).where(ApiToken.name == name).with_for_update()).first()
    if token is None:
        raise NotFoundError(f"no token named {name!r}; expected the name of a token this hub issued")
    if token.revoked_at is not None:
        return token, False
    token.revoked_at = clock()
    session.add(token)
    session.commit()
    session.refresh(token)
    log.warning("revoked %s token %r", token.role.value, name)
    return token, True


def ensure_admin_token(session: Session, path: Path, *, clock: Clock = utcnow) -> str | None:
    """Create an admin token and write it to ``path`` (mode 0600) when no usable admin token exists.

    A hub whose admin tokens were all revoked or expired gets a new one at its next start, so that
    its owner, who can read ``path``, is never locked out. Returns the new token, or None when an
    active admin token already existed.
    """
    now = clock()
    admins = session.exec(select(ApiToken).where(ApiToken.role == Role.ADMIN)).all()
    if any(is_active(t, now) for t in admins):
        return None
    name = BOOTSTRAP_ADMIN
    if session.exec(select(ApiToken.id).where(ApiToken.name == name)).first() is not None:
        name = f"{BOOTSTRAP_ADMIN}-{secrets.token_hex(4)}"
    secret = secrets.token_urlsafe(32)
    # File first: a token in the database that nobody can read would lock the hub's owner out.
    atomic_write(path, secret + "\n")  # only its owner can read it
    _insert(session, name, Role.ADMIN, secret, now=now, expires_at=None)
    log.warning("created an admin API token; it is in %s (readable by this user only)", path)
    return secret

"""API tokens: random secrets of which the hub keeps only the sha256, each with a role."""

from __future__ import annotations

import hashlib
import logging
import secrets
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from cloud.clock import Clock, utcnow
from cloud.errors import ConflictError
from cloud.models import ApiToken, Role
from model_tools.atomic import atomic_write

log = logging.getLogger(__name__)

BOOTSTRAP_ADMIN = "bootstrap-admin"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(session: Session, name: str, role: Role, *, clock: Clock = utcnow) -> tuple[ApiToken, str]:
    """A new token; the secret is returned once and never stored."""
    secret = secrets.token_urlsafe(32)
    return _insert(session, name, role, secret, clock), secret


def _insert(session: Session, name: str, role: Role, secret: str, clock: Clock) -> ApiToken:
    row = ApiToken(name=name, role=role, token_sha256=token_digest(secret), created_at=clock())
    session.add(row)
    try:
        session.commit()
    except IntegrityError as e:
        session.rollback()
        raise ConflictError(f"a token named {name!r} already exists; expected a new name") from e
    session.refresh(row)
    log.info("created %s token %r", role.value, name)
    return row


def authenticate(session: Session, token: str) -> ApiToken | None:
    """The token's row, or None when the hub never issued it."""
    if not token:
        return None
    return session.exec(select(ApiToken).where(ApiToken.token_sha256 == token_digest(token))).first()


def ensure_admin_token(session: Session, path: Path, *, clock: Clock = utcnow) -> str | None:
    """Create an admin token and write it to ``path`` (mode 0600) when no admin token exists.

    Returns the new token, or None when an admin token already existed.
    """
    if session.exec(select(ApiToken.id).where(ApiToken.role == Role.ADMIN)).first() is not None:
        return None
    name = BOOTSTRAP_ADMIN
    if session.exec(select(ApiToken.id).where(ApiToken.name == name)).first() is not None:
        name = f"{BOOTSTRAP_ADMIN}-{secrets.token_hex(4)}"
    secret = secrets.token_urlsafe(32)
    # File first: a token in the database that nobody can read would lock the hub's owner out.
    atomic_write(path, secret + "\n")  # only its owner can read it
    _insert(session, name, Role.ADMIN, secret, clock)
    log.warning("created the first admin API token; it is in %s (readable by this user only)", path)
    return secret

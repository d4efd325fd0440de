"""Webhook receivers of a fleet's alert notifications: add, change, list, delete.

A receiver's URL may carry a credential (many chat webhooks put one in the path), so it is
shown only as far as its host (:func:`redact_url`) and never logged.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cloud.alerts.machine import DeliveryState
from cloud.alerts.tables import AlertDelivery, AlertReceiver
from cloud.clock import Clock, utcnow
from cloud.errors import ConflictError, InvalidInputError, NotFoundError
from cloud.services.pagination import DEFAULT_LIMIT, Page, keyset_page

__all__ = [
    "RECEIVER_NAME_PATTERN",
    "check_url",
    "create_receiver",
    "delete_receiver",
    "get_receiver",
    "list_receivers",
    "redact_url",
    "update_receiver",
]

log = logging.getLogger(__name__)

RECEIVER_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
_NAME_RE = re.compile(RECEIVER_NAME_PATTERN)
MAX_URL = 2048


def redact_url(url: str) -> str:
    """``https://hooks.example.com/T0/B0/key`` -> ``https://hooks.example.com/…``: enough to tell apart."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    origin = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
    rest = parts.path not in ("", "/") or parts.query or parts.fragment
    return origin + ("/…" if rest else "/")


def check_url(url: str) -> str:
    """The URL, when it is an http(s) URL with a host; InvalidInputError naming the field otherwise."""
    problem = None
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number
    except ValueError:
        parts, port = None, None
    if parts is None:
        problem = "it does not parse"
    elif parts.scheme not in ("http", "https"):
        problem = f"its scheme is {parts.scheme or 'missing'!r}"
    elif not parts.hostname:
        problem = "it has no host"
    elif len(url) > MAX_URL:
        problem = f"it is {len(url)} characters long (at most {MAX_URL})"
    elif any(c.isspace() for c in url):
        problem = "it contains white space"
    elif port == 0:
        problem = "its port is 0"
    if problem:
        raise InvalidInputError(f"url: expected an http:// or https:// URL with a host; {problem}")
    return url


def _check_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise InvalidInputError(
            "name: expected 1-64 lowercase letters, digits, '_', '.' or '-', starting with a letter or "
            f"digit; got {name!r}"
        )
    return name


def create_receiver(
    session: Session,
    *,
    fleet: str,
    name: str,
    url: str,
    enabled: bool = True,
    description: str = "",
    clock: Clock = utcnow,
) -> AlertReceiver:
    """A new receiver; commits. It hears of notifications queued from now on, not of older ones."""
    now = clock()
    row = AlertReceiver(
        fleet=fleet,
        name=_check_name(name),
        url=check_url(url),
        enabled=enabled,
        description=description,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError as e:
        session.rollback()
        raise ConflictError(
            f"fleet {fleet!r} already has an alert receiver named {name!r}; expected a new name"
        ) from e
    session.refresh(row)
    log.info("added alert receiver %r in fleet %r", name, fleet)
    return row


def get_receiver(session: Session, fleet: str, name: str) -> AlertReceiver:
    row = session.exec(
        select(AlertReceiver).where(AlertReceiver.fleet == fleet, AlertReceiver.name == name)
    ).first()
    if row is None:
        raise NotFoundError(f"alert receiver {name!r} is not known in fleet {fleet!r}")
    return row


def update_receiver(
    session: Session,
    fleet: str,
    name: str,
    *,
    url: str | None = None,
    enabled: bool | None = None,
    description: str | None = None,
    clock: Clock = utcnow,
) -> AlertReceiver:
    """Change what is given; commits. A disabled receiver's pending deliveries fail when next due."""
    row = get_receiver(session, fleet, name)
    if url is not None:
        row.url = check_url(url)
    if enabled is not None:
        row.enabled = enabled
    if description is not None:
        row.description = description
    row.updated_at = clock()
    session.add(row)
    session.commit()
    session.refresh(row)
    log.info("changed alert receiver %r in fleet %r", name, fleet)
    return row


def list_receivers(
    session: Session, fleet: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[AlertReceiver]:
    return keyset_page(
        session,
        select(AlertReceiver).where(AlertReceiver.fleet == fleet),
        [AlertReceiver.name],
        listing="alert receivers",
        key_of=lambda r: (r.name,),
        limit=limit,
        cursor=cursor,
    )


def delete_receiver(session: Session, fleet: str, name: str, *, clock: Clock = utcnow) -> None:
    """Delete a receiver; commits. Its pending deliveries fail; past deliveries keep its name."""
    row = get_receiver(session, fleet, name)
    now: datetime = clock()
    session.exec(
        update(AlertDelivery)
        .where(
            col(AlertDelivery.receiver_id) == row.id, col(AlertDelivery.state) == DeliveryState.PENDING.value
        )
        .values(state=DeliveryState.FAILED.value, last_error="the receiver was deleted", updated_at=now)
    )
    session.exec(
        update(AlertDelivery).where(col(AlertDelivery.receiver_id) == row.id).values(receiver_id=None)
    )
    session.delete(row)
    session.commit()
    log.info("deleted alert receiver %r in fleet %r", name, fleet)

"""Delivery of queued alert notifications to webhook receivers: signed JSON POSTs, retried with back-off.

Each observe cycle calls :func:`deliver_due`. It first gives every new notification one
``AlertDelivery`` per enabled receiver, then makes one attempt at each delivery that is due. A
failed attempt is retried after a capped exponential back-off with jitter
(``alert_webhook_backoff_s``, doubling, at most :data:`MAX_BACKOFF_S`), until
``alert_webhook_attempts`` attempts have failed: then the delivery rests in FAILED with the last
error. The schedule lives in the database, so a hub that restarts resumes it, and a receiver that
is down costs one timeout per cycle, not one per queued notification.

Safe on two replicas: a delivery is claimed by an update guarded by its due time, which moves the
due time past the attempt's end (a lease). A hub that dies mid-attempt leaves the delivery to be
retried once the lease has passed, so a receiver may see a notification twice (at least once);
``notification_id`` in the body tells repeats apart.

Every request carries ``X-Edgefleet-Timestamp`` (Unix seconds) and ``X-Edgefleet-Signature:
sha256=<hex>``, the HMAC-SHA256 of ``"<timestamp>." + body`` under the fleet's webhook secret
(``alert_webhook_secret``, or one made once in ``data_dir`` with mode 0600). The secret and
receivers' URLs are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import update
from sqlmodel import col, func, select

from cloud.alerts.machine import DELIVERY_TRANSITIONS, DeliveryEvent, DeliveryState, next_state
from cloud.alerts.receivers import redact_url
from cloud.alerts.tables import AlertDelivery, AlertNotification, AlertReceiver
from cloud.clock import Clock
from cloud.db import SessionFactory, transaction
from cloud.errors import HubError
from cloud.settings import Settings
from model_tools.atomic import atomic_write

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "MAX_BACKOFF_S",
    "SECRET_FILE",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "DeliveryReport",
    "WebhookSecretError",
    "backoff_s",
    "deliver_due",
    "drain",
    "sign",
    "verify_signature",
    "webhook_secret",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Edgefleet-Signature"
TIMESTAMP_HEADER = "X-Edgefleet-Timestamp"
DELIVERY_HEADER = "X-Edgefleet-Delivery"
EVENT_HEADER = "X-Edgefleet-Event"
SECRET_FILE = "alert-webhook.secret"  # noqa: S105 (a file name)
# The longest wait between two attempts, whatever alert_webhook_backoff_s and the attempt count say.
MAX_BACKOFF_S = 600.0
# Deliveries attempted per call at most: a long queue drains over several cycles.
BATCH = 100
# New notifications given deliveries per call at most.
FAN_OUT_BATCH = 500
MIN_SECRET_CHARS = 16


class WebhookSecretError(HubError):
    """The webhook signing secret is missing, too short, or readable by others."""


def webhook_secret(settings: Settings) -> bytes:
    """The HMAC key: ``alert_webhook_secret``, else the one in ``data_dir`` (made once, mode 0600)."""
    if settings.alert_webhook_secret is not None:
        value = settings.alert_webhook_secret.get_secret_value().strip()
        if len(value) < MIN_SECRET_CHARS:
            raise WebhookSecretError(
                f"alert_webhook_secret: expected at least {MIN_SECRET_CHARS} characters, got {len(value)}"
            )
        return value.encode("utf-8")
    path = settings.data_dir / SECRET_FILE
    if not path.exists():
        # Two processes sharing data_dir may both write; each reads the file back below (and at every
        # call), so they agree from the next cycle on. Replicas on several machines need the setting.
        atomic_write(path, secrets.token_hex(32) + "\n", mode=0o600)
        log.warning("made the alert webhook signing secret in %s (readable by this user only)", path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise WebhookSecretError(f"{path}: expected mode 0600 (a secret), got {mode:04o}; chmod 600 it")
    value = path.read_text(encoding="utf-8").strip()
    if len(value) < MIN_SECRET_CHARS:
        raise WebhookSecretError(f"{path}: expected a secret of at least {MIN_SECRET_CHARS} characters")
    return value.encode("utf-8")


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``"<timestamp>." + body``."""
    digest = hmac.new(secret, f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: bytes, body: bytes, *, timestamp: str, signature: str, now: datetime, tolerance_s: float = 300
) -> bool:
    """What a receiver checks: the signature matches, and the timestamp is within ``tolerance_s`` of now."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now.timestamp() - sent) > tolerance_s:
        return False  # a replay of an old request
    return hmac.compare_digest(sign(secret, sent, body), signature)


def backoff_s(attempt: int, *, base_s: float, jitter: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): in [d/2, d], d = min(cap, base * 2^(n-1)).

    The jitter spreads the retries of many deliveries to one receiver that came back.
    """
    delay = min(MAX_BACKOFF_S, base_s * 2.0 ** (attempt - 1))
    return delay / 2 + delay / 2 * jitter()


@dataclass
class DeliveryReport:
    """What one call did with the deliveries it found due."""

    delivered: int = 0
    retrying: int = 0  # failed, to be tried again
    failed: int = 0  # failed for good
    deferred: int = 0  # not tried: their receiver failed earlier in the same call

    def __iadd__(self, other: DeliveryReport) -> DeliveryReport:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


@dataclass(frozen=True)
class _Claim:
    delivery_id: int
    notification_id: int
    receiver_id: int
    receiver: str
    url: str
    state: str
    payload: dict[str, Any]
    attempts: int
    lease_until: datetime


def deliver_due(
    sessions: SessionFactory,
    *,
    settings: Settings,
    now: datetime,
    client: httpx.Client | None = None,
    jitter: Callable[[], float] = random.random,
    limit: int = BATCH,
) -> DeliveryReport:
    """Queue deliveries for new notifications, then attempt each delivery due at ``now`` once."""
    fleet = settings.fleet
    _fan_out(sessions, fleet, now)
    with sessions() as session:
        due = list(
            session.exec(
                select(AlertDelivery.id, AlertDelivery.receiver_id)
                .where(
                    AlertDelivery.fleet == fleet,
                    AlertDelivery.state == DeliveryState.PENDING.value,
                    AlertDelivery.next_attempt_at <= now,
                )
                .order_by(col(AlertDelivery.next_attempt_at), col(AlertDelivery.id))
                .limit(limit)
            )
        )
        session.rollback()
    report = DeliveryReport()
    if not due:
        return report
    secret = webhook_secret(settings)
    lease = timedelta(seconds=4 * settings.alert_webhook_timeout_s + 30)
    down: set[int | None] = set()
    own = client or httpx.Client(timeout=settings.alert_webhook_timeout_s, follow_redirects=False)
    try:
        for delivery_id, receiver_id in due:
            assert delivery_id is not None
            if receiver_id in down:
                report.deferred += 1
                continue
            claim = _claim(sessions, delivery_id, now, now + lease)
            if claim is None:
                continue  # another replica has it, or it was given up
            error, status = _send(own, claim, secret, now, settings.alert_webhook_timeout_s)
            outcome = _record(
                sessions, claim, now=now, error=error, status=status, settings=settings, jitter=jitter
            )
            if outcome is DeliveryState.DELIVERED:
                report.delivered += 1
                continue
            down.add(receiver_id)
            if outcome is DeliveryState.FAILED:
                report.failed += 1
            elif outcome is DeliveryState.PENDING:
                report.retrying += 1
    finally:
        if client is None:
            own.close()
    return report


def _fan_out(sessions: SessionFactory, fleet: str, now: datetime) -> None:
    with transaction(sessions) as session:
        fresh = session.exec(
            select(AlertNotification)
            .where(AlertNotification.fleet == fleet, col(AlertNotification.fanned_out).is_(False))
            .order_by(col(AlertNotification.id))
            .limit(FAN_OUT_BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        if not fresh:
            return
        receivers = session.exec(
            select(AlertReceiver).where(AlertReceiver.fleet == fleet, col(AlertReceiver.enabled).is_(True))
        ).all()
        for notification in fresh:
            assert notification.id is not None
            for receiver in receivers:
                session.add(
                    AlertDelivery(
                        fleet=fleet,
                        notification_id=notification.id,
                        receiver_id=receiver.id,
                        receiver_name=receiver.name,
                        state=DeliveryState.PENDING,
                        next_attempt_at=now,
                        updated_at=now,
                    )
                )
            notification.fanned_out = True
            session.add(notification)


def _claim(sessions: SessionFactory, delivery_id: int, now: datetime, lease_until: datetime) -> _Claim | None:
    """Take the delivery for one attempt (None: not due any more); gives it up if its receiver went away."""
    with transaction(sessions) as session:
        taken = session.exec(
            update(AlertDelivery)
            .where(
                col(AlertDelivery.id) == delivery_id,
                col(AlertDelivery.state) == DeliveryState.PENDING.value,
                col(AlertDelivery.next_attempt_at) <= now,
            )
            .values(next_attempt_at=lease_until, updated_at=now)
        )
        if taken.rowcount != 1:
            return None
        delivery = session.get(AlertDelivery, delivery_id, populate_existing=True)
        assert delivery is not None
        receiver = None if delivery.receiver_id is None else session.get(AlertReceiver, delivery.receiver_id)
        if receiver is None or not receiver.enabled:
            delivery.state = next_state(DELIVERY_TRANSITIONS, DeliveryState.PENDING, DeliveryEvent.GIVE_UP)
            delivery.last_error = f"the receiver {'was deleted' if receiver is None else 'is disabled'}"
            delivery.next_attempt_at = now
            session.add(delivery)
            return None
        notification = session.get(AlertNotification, delivery.notification_id)
        assert notification is not None and receiver.id is not None
        return _Claim(
            delivery_id=delivery_id,
            notification_id=delivery.notification_id,
            receiver_id=receiver.id,
            receiver=receiver.name,
            url=receiver.url,
            state=notification.state,
            payload=dict(notification.payload),
            attempts=delivery.attempts,
            lease_until=lease_until,
        )


def _send(
    client: httpx.Client, claim: _Claim, secret: bytes, now: datetime, timeout_s: float
) -> tuple[str, int | None]:
    """POST the notification; ("", status) on a 2xx answer, else (what went wrong, status or None)."""
    body = json.dumps(
        {**claim.payload, "notification_id": claim.notification_id}, sort_keys=True, separators=(",", ":")
    ).encode("utf-8")
    timestamp = int(now.timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "edgefleet-hub",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        DELIVERY_HEADER: str(claim.delivery_id),
        EVENT_HEADER: claim.state,
    }
    try:
        # Streamed and closed unread: a receiver's answer body is of no use and may be large.
        with client.stream("POST", claim.url, content=body, headers=headers) as response:
            status = response.status_code
    except httpx.TimeoutException:
        return f"timed out after {timeout_s:g} s", None
    except httpx.HTTPError as e:
        # Errors may quote the URL, and a URL may hold a credential.
        text = str(e).replace(claim.url, redact_url(claim.url)) or type(e).__name__
        return f"{type(e).__name__}: {text}"[:500], None
    if 200 <= status < 300:
        return "", status
    phrase = httpx.codes.get_reason_phrase(status)
    redirect = " (redirects are not followed)" if 300 <= status < 400 else ""
    return f"HTTP {status} {phrase}{redirect}".strip(), status


def _record(
    sessions: SessionFactory,
    claim: _Claim,
    *,
    now: datetime,
    error: str,
    status: int | None,
    settings: Settings,
    jitter: Callable[[], float],
) -> DeliveryState | None:
    """Store the attempt's outcome; the delivery's new state (None: it was taken over meanwhile)."""
    attempts = claim.attempts + 1
    if not error:
        event = DeliveryEvent.SENT
    elif attempts >= settings.alert_webhook_attempts:
        event = DeliveryEvent.GIVE_UP
    else:
        event = DeliveryEvent.RETRY
    state = next_state(DELIVERY_TRANSITIONS, DeliveryState.PENDING, event)
    values: dict[str, Any] = {
        "state": state.value,
        "attempts": attempts,
        "last_status": status,
        "last_error": error,
        "updated_at": now,
        "next_attempt_at": now,
    }
    if event is DeliveryEvent.SENT:
        values["delivered_at"] = now
    elif event is DeliveryEvent.RETRY:
        wait = backoff_s(attempts, base_s=settings.alert_webhook_backoff_s, jitter=jitter)
        values["next_attempt_at"] = now + timedelta(seconds=wait)
    with transaction(sessions) as session:
        stored = session.exec(
            update(AlertDelivery)
            .where(
                col(AlertDelivery.id) == claim.delivery_id,
                col(AlertDelivery.state) == DeliveryState.PENDING.value,
                col(AlertDelivery.attempts) == claim.attempts,
                col(AlertDelivery.next_attempt_at) == claim.lease_until,
            )
            .values(**values)
        )
        if stored.rowcount != 1:
            log.warning("alert delivery %d: the lease ran out before the attempt ended", claim.delivery_id)
            return None
    if event is DeliveryEvent.SENT:
        log.info("alert notification %d delivered to receiver %r", claim.notification_id, claim.receiver)
    else:
        log.warning(
            "alert notification %d to receiver %r: attempt %d of %d failed (%s)%s",
            claim.notification_id, claim.receiver, attempts, settings.alert_webhook_attempts, error,
            "; giving up" if state is DeliveryState.FAILED else "",
        )  # fmt: skip
    return state


def _next_due(sessions: SessionFactory, fleet: str, now: datetime) -> datetime | None:
    """When a delivery is next due (``now`` if a notification awaits fan-out); None: nothing left."""
    with sessions() as session:
        waiting = session.exec(
            select(func.count())
            .select_from(AlertNotification)
            .where(AlertNotification.fleet == fleet, col(AlertNotification.fanned_out).is_(False))
        ).one()
        due = session.exec(
            select(func.min(AlertDelivery.next_attempt_at)).where(
                AlertDelivery.fleet == fleet, AlertDelivery.state == DeliveryState.PENDING.value
            )
        ).one()
        session.rollback()
    if waiting:
        return now
    return due


def drain(
    sessions: SessionFactory,
    *,
    settings: Settings,
    clock: Clock,
    sleep: Callable[[float], None],
    client: httpx.Client | None = None,
    jitter: Callable[[], float] = random.random,
    max_rounds: int = 1000,
) -> DeliveryReport:
    """Deliver until nothing is pending, sleeping (``sleep``) until each next attempt is due.

    For tests and tools: with a fake clock whose ``sleep`` advances it, the recorded sleeps are
    the back-off schedule, and nothing waits.
    """
    total = DeliveryReport()
    for _ in range(max_rounds):
        total += deliver_due(sessions, settings=settings, now=clock(), client=client, jitter=jitter)
        due = _next_due(sessions, settings.fleet, clock())
        if due is None:
            return total
        wait = (due - clock()).total_seconds()
        if wait > 0:
            sleep(wait)
    raise RuntimeError(f"alert deliveries still pending after {max_rounds} rounds; expected them to end")

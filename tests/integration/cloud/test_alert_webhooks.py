"""Webhook delivery against a real HTTP receiver on 127.0.0.1: signatures, retries, back-off, failure.

The receiver is a ``http.server`` in a thread that answers 503 to its first N requests. Time is a
``FrozenClock`` and ``sleep`` advances it, so the recorded sleeps are the back-off schedule.
"""

from __future__ import annotations

import json
import socket
import stat
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlmodel import select

from cloud.alerts import receivers, webhooks
from cloud.alerts.rules import apply_rules
from cloud.alerts.service import evaluate
from cloud.alerts.spec import parse_rules
from cloud.alerts.tables import AlertDelivery
from cloud.db import SessionFactory
from cloud.drift.tables import CohortMetric
from cloud.settings import Settings
from tests.unit.cloud.helpers import T0, FrozenClock

pytestmark = pytest.mark.integration

FLEET = "unit"


class Receiver:
    """A webhook receiver on a free port: 503 to the first ``fail_first`` requests, then 204."""

    def __init__(self, fail_first: int = 0, *, hang: threading.Event | None = None) -> None:
        self.fail_first = fail_first
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if hang is not None:
                    hang.wait(30)
                failing = len(receiver.requests) <= receiver.fail_first
                self.send_response(503 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0/secret-part"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def receiver_factory() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        r.close()


def start(made: list[Receiver], fail_first: int = 0, hang: threading.Event | None = None) -> Receiver:
    r = Receiver(fail_first, hang=hang)
    made.append(r)
    return r


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"alert_webhook_attempts": 4, "alert_webhook_backoff_s": 2.0, "alert_webhook_timeout_s": 5.0}
    )


def add_receiver(sessions: SessionFactory, name: str, url: str, *, enabled: bool = True) -> None:
    with sessions() as s:
        receivers.create_receiver(s, fleet=FLEET, name=name, url=url, enabled=enabled, clock=lambda: T0)


def fire(sessions: SessionFactory, name: str = "errors", metric: str = "error_rate") -> None:
    """A rule with no duration over a breaching bucket of its metric: one alert fires, one notification."""
    with sessions() as s:
        apply_rules(
            s,
            fleet=FLEET,
            specs=parse_rules(f"- {{name: {name}, metric: {metric}, comparison: '>', threshold: 0.1}}"),
        )
        s.add(
            CohortMetric(
                fleet=FLEET,
                bucket_start=T0,
                metric=metric,
                value=0.5,
                model_name="m",
                model_version="1",
            )
        )
        s.commit()
    assert len(evaluate(sessions, fleet=FLEET, now=T0 + timedelta(seconds=60))) == 1


def deliveries(sessions: SessionFactory) -> dict[str, AlertDelivery]:
    with sessions() as s:
        return {d.receiver_name: d for d in s.exec(select(AlertDelivery))}


class Sleeper:
    def __init__(self, clock: FrozenClock) -> None:
        self.clock = clock
        self.sleeps: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(seconds)


def test_a_receiver_failing_twice_gets_the_signed_notification_on_the_third_attempt(
    sessions: SessionFactory, hook_settings: Settings, receiver_factory: list[Receiver]
) -> None:
    hook = start(receiver_factory, fail_first=2)
    add_receiver(sessions, "ops", hook.url)
    fire(sessions)
    clock = FrozenClock(T0 + timedelta(seconds=60))
    sleep = Sleeper(clock)

    report = webhooks.drain(sessions, settings=hook_settings, clock=clock, sleep=sleep, jitter=lambda: 1.0)

    assert (report.delivered, report.retrying, report.failed) == (1, 2, 0)
    assert sleep.sleeps == [2.0, 4.0]  # base 2 s, doubling; jitter at its top
    assert len(hook.requests) == 3
    secret = webhooks.webhook_secret(hook_settings)
    sent_at = [T0 + timedelta(seconds=60), T0 + timedelta(seconds=62), T0 + timedelta(seconds=66)]
    for (headers, body), when in zip(hook.requests, sent_at, strict=True):
        assert headers["content-type"] == "application/json"
        assert headers["x-edgefleet-timestamp"] == str(int(when.timestamp()))
        assert webhooks.verify_signature(
            secret,
            body,
            timestamp=headers["x-edgefleet-timestamp"],
            signature=headers["x-edgefleet-signature"],
            now=when,
        )
        # Signed material includes the timestamp: the same body at another time does not verify.
        assert not webhooks.verify_signature(
            secret,
            body,
            timestamp=str(int(when.timestamp()) + 1),
            signature=headers["x-edgefleet-signature"],
            now=when,
        )
        assert headers["x-edgefleet-event"] == "firing"
    payload = json.loads(hook.requests[-1][1])
    assert (
        payload["state"] == "firing"
        and payload["rule"]["name"] == "errors"
        and payload["alert"]["value"] == 0.5
    )
    assert isinstance(payload["notification_id"], int)
    row = deliveries(sessions)["ops"]
    assert (row.state, row.attempts, row.last_status, row.last_error) == ("delivered", 3, 204, "")
    assert row.delivered_at == sent_at[-1]


def test_a_receiver_that_never_succeeds_ends_failed_with_its_last_error(
    sessions: SessionFactory, hook_settings: Settings, receiver_factory: list[Receiver]
) -> None:
    down = start(receiver_factory, fail_first=1000)
    add_receiver(sessions, "down", down.url)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/token-in-path"
    add_receiver(sessions, "refused", closed)
    fire(sessions)
    clock = FrozenClock(T0 + timedelta(seconds=60))
    sleep = Sleeper(clock)

    report = webhooks.drain(sessions, settings=hook_settings, clock=clock, sleep=sleep, jitter=lambda: 0.0)

    assert report.failed == 2 and report.delivered == 0
    assert sleep.sleeps == [1.0, 2.0, 4.0]  # jitter at its bottom: half of 2, 4, 8
    assert len(down.requests) == 4
    rows = deliveries(sessions)
    assert (rows["down"].state, rows["down"].attempts, rows["down"].last_status) == ("failed", 4, 503)
    assert rows["down"].last_error == "HTTP 503 Service Unavailable"
    assert rows["refused"].state == "failed" and rows["refused"].last_error.startswith("ConnectError")
    assert "token-in-path" not in rows["refused"].last_error


def test_one_down_receiver_costs_one_attempt_per_pass_and_holds_up_no_other(
    sessions: SessionFactory, hook_settings: Settings, receiver_factory: list[Receiver]
) -> None:
    ok, down = start(receiver_factory), start(receiver_factory, fail_first=1000)
    add_receiver(sessions, "ok", ok.url)
    add_receiver(sessions, "down", down.url)
    fire(sessions, "one", "error_rate")
    fire(sessions, "two", "p95_ms")
    report = webhooks.deliver_due(
        sessions, settings=hook_settings, now=T0 + timedelta(seconds=60), jitter=lambda: 0.5
    )
    assert (report.delivered, report.retrying, report.deferred) == (2, 1, 1)
    assert len(ok.requests) == 2 and len(down.requests) == 1


def test_receivers_added_later_hear_nothing_older_and_disabled_ones_give_up(
    sessions: SessionFactory, hook_settings: Settings, receiver_factory: list[Receiver]
) -> None:
    hook = start(receiver_factory, fail_first=1)
    add_receiver(sessions, "off", hook.url)
    fire(sessions)
    now = T0 + timedelta(seconds=60)
    assert webhooks.deliver_due(sessions, settings=hook_settings, now=now).retrying == 1
    with sessions() as s:
        receivers.update_receiver(s, FLEET, "off", enabled=False, clock=lambda: now)
    add_receiver(sessions, "late", hook.url)
    clock = FrozenClock(now)
    report = webhooks.drain(sessions, settings=hook_settings, clock=clock, sleep=Sleeper(clock))
    assert report.delivered == 0 and len(hook.requests) == 1
    rows = deliveries(sessions)
    assert list(rows) == ["off"]  # the notification was handed out before "late" came
    assert (rows["off"].state, rows["off"].attempts, rows["off"].last_error) == (
        "failed",
        1,
        "the receiver is disabled",
    )


def test_a_hanging_receiver_times_out(
    sessions: SessionFactory, settings: Settings, receiver_factory: list[Receiver]
) -> None:
    release = threading.Event()
    hook = start(receiver_factory, hang=release)
    add_receiver(sessions, "slow", hook.url)
    fire(sessions)
    quick = settings.model_copy(update={"alert_webhook_timeout_s": 0.2, "alert_webhook_attempts": 2})
    try:
        report = webhooks.deliver_due(sessions, settings=quick, now=T0 + timedelta(seconds=60))
    finally:
        release.set()
    assert report.retrying == 1
    row = deliveries(sessions)["slow"]
    assert (row.state, row.attempts, row.last_error) == ("pending", 1, "timed out after 0.2 s")
    assert T0 + timedelta(seconds=60.1) <= row.next_attempt_at <= T0 + timedelta(seconds=61)


def test_the_signing_secret_is_made_once_private_or_taken_from_the_settings(
    settings: Settings, tmp_path: Path
) -> None:
    first = webhooks.webhook_secret(settings)
    path = settings.data_dir / webhooks.SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert webhooks.webhook_secret(settings) == first and len(first) == 64
    path.chmod(0o644)
    with pytest.raises(webhooks.WebhookSecretError, match="expected mode 0600"):
        webhooks.webhook_secret(settings)
    given = settings.model_copy(update={"alert_webhook_secret": SecretStr("s" * 32)})
    assert webhooks.webhook_secret(given) == b"s" * 32
    with pytest.raises(webhooks.WebhookSecretError, match="at least 16 characters, got 5"):
        webhooks.webhook_secret(settings.model_copy(update={"alert_webhook_secret": SecretStr("short")}))


def test_back_off_doubles_up_to_its_cap_with_jitter_in_the_upper_half() -> None:
    assert [webhooks.backoff_s(n, base_s=1.0, jitter=lambda: 1.0) for n in (1, 2, 3, 4)] == [
        1.0,
        2.0,
        4.0,
        8.0,
    ]
    assert webhooks.backoff_s(30, base_s=1.0, jitter=lambda: 1.0) == webhooks.MAX_BACKOFF_S
    assert webhooks.backoff_s(3, base_s=1.0, jitter=lambda: 0.0) == 2.0

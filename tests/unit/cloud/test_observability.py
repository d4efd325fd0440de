"""The hub's own metrics and logs: /metrics through FastAPI's TestClient, a real APScheduler, JSON lines.

SQLite in a temp folder (the unit fixtures); the scheduler runs real jobs in its thread pool and the
tests wait on its events, never on time.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobEvent
from apscheduler.schedulers.background import BackgroundScheduler
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from cloud.api.app import create_app
from cloud.api.requestctx import REQUEST_ID_HEADER
from cloud.context import HubContext
from cloud.models import Role, Rollout
from cloud.observability.http import ACCESS_LOGGER, UNMATCHED
from cloud.observability.logging import JsonFormatter, configure_logging
from cloud.observability.metrics import JOB_FAILED, HubMetrics, IngestMetrics, channel_of
from cloud.rollouts.machine import RolloutState
from cloud.services import tokens

ROUTE = "/api/v1/devices/{device_id}"


@pytest.fixture
def client(ctx: HubContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


@pytest.fixture
def viewer(ctx: HubContext) -> dict[str, str]:
    with ctx.sessions() as s:
        _row, secret = tokens.create_token(s, "prometheus", Role.VIEWER)
    return {"Authorization": f"Bearer {secret}"}


def scrape(client: TestClient, headers: dict[str, str]) -> list[Sample]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    return [s for family in text_string_to_metric_families(response.text) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    found = [
        s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples, expected one"
    return found[0] if found else None


# --- the HTTP middleware ----------------------------------------------------------------------


def test_api_requests_are_counted_by_route_template_never_by_raw_path(
    client: TestClient, viewer: dict[str, str]
) -> None:
    for device in ("dev-a", "dev-b", "dev-c"):
        assert client.get(f"/api/v1/devices/{device}", headers=viewer).status_code == 404
    assert client.get("/api/v1/devices", headers=viewer).status_code == 200
    assert client.get("/no/such/path/x1").status_code == 404
    samples = scrape(client, viewer)
    count = "edgefleet_http_requests_total"
    assert value(samples, count, method="GET", route=ROUTE, status="4xx") == 3
    assert value(samples, count, method="GET", route="/api/v1/devices", status="2xx") == 1
    assert value(samples, count, method="GET", route=UNMATCHED, status="4xx") == 1
    routes = {s.labels["route"] for s in samples if s.name.startswith("edgefleet_http_request")}
    assert not any("dev-" in r or "x1" in r for r in routes), routes
    buckets = [
        s
        for s in samples
        if s.name == "edgefleet_http_request_duration_seconds_count" and s.labels["route"] == ROUTE
    ]
    assert [b.value for b in buckets] == [3]


def test_a_request_refused_before_routing_counts_as_unmatched(
    client: TestClient, viewer: dict[str, str]
) -> None:
    # Authentication answers 401 before the router picks a route: no template, and no raw path either.
    assert client.get("/api/v1/devices/dev-q").status_code == 401
    samples = scrape(client, viewer)
    assert value(samples, "edgefleet_http_requests_total", route=UNMATCHED, status="4xx") == 1
    assert value(samples, "edgefleet_http_requests_total", route=ROUTE, status="4xx") is None


def test_two_hubs_in_one_process_count_apart(ctx: HubContext, viewer: dict[str, str]) -> None:
    other = HubContext(
        settings=ctx.settings,
        engine=ctx.engine,
        store=ctx.store,
        publisher=ctx.publisher,
        artifact_endpoint=ctx.artifact_endpoint,
        clock=ctx.clock,
    )
    assert other.metrics.registry is not ctx.metrics.registry
    with TestClient(create_app(ctx)) as first, TestClient(create_app(other)) as second:
        first.get("/api/v1/devices", headers=viewer)
        first.get("/api/v1/devices", headers=viewer)
        second.get("/api/v1/devices", headers=viewer)
        name, route = "edgefleet_http_requests_total", "/api/v1/devices"
        assert value(scrape(first, viewer), name, route=route, status="2xx") == 2
        # The second hub's own scrape is counted after it is answered: one listing, then one scrape.
        assert value(scrape(second, viewer), name, route=route, status="2xx") == 1


# --- rollout states ---------------------------------------------------------------------------


def test_rollouts_are_gauged_per_state_with_zeros(
    ctx: HubContext, client: TestClient, viewer: dict[str, str]
) -> None:
    states = [RolloutState.RUNNING, RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.COMPLETED]
    with ctx.sessions() as s:
        for i, state in enumerate(states):
            s.add(
                Rollout(
                    id=f"r{i}",
                    fleet=ctx.settings.fleet,
                    name=f"r{i}",
                    target_kind="model",
                    target_name="digits",
                    target_version="2",
                    state=state.value,
                )
            )
        s.add(
            Rollout(
                id="elsewhere",
                fleet="other-fleet",
                name="x",
                target_kind="model",
                target_name="digits",
                target_version="2",
                state="running",
            )
        )
        s.commit()
    samples = scrape(client, viewer)
    gauge = {s.labels["state"]: s.value for s in samples if s.name == "edgefleet_rollouts"}
    assert gauge == {state.value: float(states.count(state)) for state in RolloutState}
    assert {s.labels["fleet"] for s in samples if s.name == "edgefleet_rollouts"} == {ctx.settings.fleet}


# --- ingest -----------------------------------------------------------------------------------


def test_ingest_counts_committed_messages_by_channel_with_batch_size_and_latency() -> None:
    metrics = HubMetrics()
    ingest: IngestMetrics = metrics.ingest
    topics = [
        f"ef/v1/f/dev/d{i}/{c}" for i, c in enumerate(["telemetry", "telemetry", "status", "sketch", "junk"])
    ]
    ingest.committed([(t, 100.0) for t in topics], now=100.25)
    ingest.windows(
        "telemetry", [datetime(2026, 1, 1, 11, 59, tzinfo=UTC)], datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    )
    registry = metrics.registry
    assert registry.get_sample_value("edgefleet_ingest_messages_total", {"channel": "telemetry"}) == 2
    assert registry.get_sample_value("edgefleet_ingest_messages_total", {"channel": "other"}) == 1
    assert registry.get_sample_value("edgefleet_ingest_messages_total", {"channel": "events"}) == 0
    assert registry.get_sample_value("edgefleet_ingest_batch_size_sum") == 5
    assert registry.get_sample_value("edgefleet_ingest_commit_latency_seconds_sum") == pytest.approx(5 * 0.25)
    lag = {"channel": "telemetry", "le": "60.0"}
    assert registry.get_sample_value("edgefleet_ingest_window_lag_seconds_bucket", lag) == 1
    assert (
        registry.get_sample_value("edgefleet_ingest_window_lag_seconds_sum", {"channel": "telemetry"}) == 60
    )
    assert channel_of("ef/v1/f/dev/d/events") == "events" and channel_of("$SYS/x") == "other"


# --- scheduler jobs ---------------------------------------------------------------------------


class JobEvents:
    """Waits for a number of APScheduler job events (the test's own listener, added after the metrics')."""

    def __init__(self, scheduler: BackgroundScheduler) -> None:
        self.events: list[JobEvent] = []
        self._cond = threading.Condition()
        scheduler.add_listener(self._on_event, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)

    def _on_event(self, event: JobEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = 10.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.events) >= count, timeout), (
                f"expected {count} job events within {timeout} s, got {len(self.events)}"
            )


def test_scheduler_jobs_count_runs_failures_and_last_success() -> None:
    metrics = HubMetrics()
    scheduler = BackgroundScheduler(timezone=UTC, daemon=True)
    metrics.jobs.attach(scheduler)
    events = JobEvents(scheduler)
    outcomes = iter([None, JOB_FAILED, "raise", None])

    def job() -> bool | None:
        outcome = next(outcomes)
        if outcome == "raise":
            raise RuntimeError("a job that fails loudly")
        return outcome  # type: ignore[return-value]

    scheduler.start()
    try:
        for i in range(4):
            scheduler.add_job(job, "date", run_date=datetime.now(UTC), id=f"j{i}", name="the-job")
            events.wait(i + 1)
    finally:
        scheduler.shutdown(wait=True)
    r = metrics.registry
    runs = sum(
        r.get_sample_value("edgefleet_scheduler_job_runs_total", {"job_id": f"j{i}"}) or 0 for i in range(4)
    )
    assert runs == 4
    assert (
        r.get_sample_value("edgefleet_scheduler_job_failures_total", {"job_id": "j1"}) == 1
    )  # returned JOB_FAILED
    assert r.get_sample_value("edgefleet_scheduler_job_failures_total", {"job_id": "j2"}) == 1  # raised
    assert r.get_sample_value("edgefleet_scheduler_job_failures_total", {"job_id": "j0"}) == 0
    assert (
        r.get_sample_value("edgefleet_scheduler_job_last_success_timestamp_seconds", {"job_id": "j3"})
        is not None
    )
    assert (
        r.get_sample_value("edgefleet_scheduler_job_last_success_timestamp_seconds", {"job_id": "j1"}) is None
    )
    assert r.get_sample_value("edgefleet_scheduler_job_duration_seconds_count", {"job_id": "j2"}) == 1


def test_the_rollout_tick_reports_its_own_failure_to_the_listener(
    ctx: HubContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloud.rollouts import engine
    from cloud.rollouts.scheduler import RolloutScheduler, run_tick

    calls = 0

    def tick(_ctx: HubContext, *, owner: str) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:  # the first tick fails; every later one (a kick) succeeds
            raise RuntimeError("the database went away")
        return []

    monkeypatch.setattr(engine, "tick", tick)
    scheduler = RolloutScheduler(ctx, interval_s=3600)
    # Its first tick runs at once, maybe before the test's listener is added: the kick makes a run
    # that the listener sees in any case, and by then the first one is counted.
    scheduler.start()
    try:
        assert scheduler._scheduler is not None
        events = JobEvents(scheduler._scheduler)
        scheduler.kick()
        events.wait(1)
    finally:
        scheduler.stop()
    r = ctx.metrics.registry
    job = {"job_id": scheduler.job_id}
    assert (r.get_sample_value("edgefleet_scheduler_job_runs_total", job) or 0) >= 1
    assert r.get_sample_value("edgefleet_scheduler_job_failures_total", job) == 1
    assert run_tick("no-such-key#nowhere") is None


# --- structured logs --------------------------------------------------------------------------


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.level, root.handlers[:], logging.getLogger(ACCESS_LOGGER).level)
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    yield stream
    root.handlers[:] = saved[1]
    root.setLevel(saved[0])
    logging.getLogger(ACCESS_LOGGER).setLevel(saved[2])


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]  # each line on its own


def test_json_lines_carry_the_request_id_and_actor_and_never_the_token(
    client: TestClient, viewer: dict[str, str], json_log: io.StringIO
) -> None:
    response = client.get(
        "/api/v1/devices/dev-x?secret=hunter2", headers={**viewer, REQUEST_ID_HEADER: "req-42"}
    )
    assert response.status_code == 404
    records = lines(json_log)
    access = [r for r in records if r["logger"] == ACCESS_LOGGER]
    assert len(access) == 1, records
    assert access[0]["request_id"] == "req-42" and access[0]["actor"] == "prometheus"
    assert access[0]["route"] == ROUTE and access[0]["status"] == 404 and access[0]["method"] == "GET"
    assert isinstance(access[0]["duration_ms"], float) and {"ts", "level", "msg"} <= access[0].keys()
    # The access line names the route, not the path: one series per route, whatever ids come.
    assert "dev-x" not in json.dumps(access[0])
    # The refusal's own line says why, which names what was asked for, under the same request id.
    refused = [r for r in records if r["logger"] == "cloud.api.errors"]
    assert len(refused) == 1 and refused[0]["request_id"] == "req-42"
    assert "404" in refused[0]["msg"] and "not known" in refused[0]["msg"]
    # Every line the hub wrote (the test client's own httpx lines show the URL it asked for).
    text = "\n".join(json.dumps(r) for r in records if r["logger"] != "httpx")
    token = viewer["Authorization"].removeprefix("Bearer ")
    for secret in (token, "Authorization", "Bearer", "hunter2"):
        assert secret not in text, f"{secret!r} is in the log: {text}"


def test_a_record_logged_inside_a_request_has_its_id(ctx: HubContext, json_log: io.StringIO) -> None:
    from fastapi import FastAPI

    from cloud.api.requestctx import RequestIdMiddleware

    app = FastAPI()

    @app.get("/work")
    def work() -> dict[str, str]:
        logging.getLogger("cloud.test").warning("doing\nwork")
        return {}

    app.add_middleware(RequestIdMiddleware)
    with TestClient(app) as c:
        rid = c.get("/work").headers[REQUEST_ID_HEADER]
    logging.getLogger("cloud.test").info("outside a request")
    records = lines(json_log)
    inside = [r for r in records if r["logger"] == "cloud.test"]
    assert inside[0] == {**inside[0], "level": "WARNING", "msg": "doing\nwork", "request_id": rid}
    assert "request_id" not in inside[1] and "actor" not in inside[1]


def test_exceptions_are_one_json_line_with_the_traceback() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("cloud.test.exc")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError("bad value")
        except ValueError:
            logger.exception("failed at %s", datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=1))
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    (record,) = lines(stream)
    assert record["msg"] == "failed at 2026-01-01 01:00:00+00:00" and record["level"] == "ERROR"
    assert "ValueError: bad value" in str(record["exc"]) and "Traceback" in str(record["exc"])


def test_text_mode_keeps_access_lines_out(client: TestClient, viewer: dict[str, str]) -> None:
    root = logging.getLogger()
    saved = (root.level, root.handlers[:], logging.getLogger(ACCESS_LOGGER).level)
    stream = io.StringIO()
    try:
        configure_logging("INFO", "text", stream=stream)
        client.get("/api/v1/devices", headers=viewer)
        logging.getLogger("cloud.test").info("a line for people")
    finally:
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])
        logging.getLogger(ACCESS_LOGGER).setLevel(saved[2])
    assert stream.getvalue().splitlines()[-1].endswith("INFO cloud.test: a line for people")
    assert ACCESS_LOGGER not in stream.getvalue()
    with pytest.raises(ValueError, match="expected text or json"):
        configure_logging("INFO", "xml")  # type: ignore[arg-type]


def test_the_log_format_setting_is_text_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    from cloud.settings import Settings

    assert Settings().log_format == "text"
    monkeypatch.setenv("EDGEFLEET_LOG_FORMAT", "json")
    assert Settings().log_format == "json"
    monkeypatch.setenv("EDGEFLEET_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="log_format"):
        Settings()

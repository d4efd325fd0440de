"""The hub process's own metrics: ingest, HTTP API and scheduler jobs, in one registry per hub.

What is counted in memory lives here; what is read from the database at each scrape (cohort
metrics, alerts, rollout states) lives in :mod:`cloud.alerts.prometheus` and
:mod:`cloud.observability.collectors`. Each :class:`HubMetrics` owns a ``CollectorRegistry`` of its
own rather than the process-wide default one, so that several hubs in one process (tests, the demo)
count apart and never clash on a metric name.

Label values stay few by construction: a route template (never a raw path), a status class, a
topic's channel, a scheduler job id.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
    JobExecutionEvent,
)
from apscheduler.schedulers.base import BaseScheduler
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "CHANNELS",
    "JOB_FAILED",
    "JOB_NOT_LEADER",
    "HealMetrics",
    "HttpMetrics",
    "HubMetrics",
    "IngestMetrics",
    "JobMetrics",
    "LeaderMetrics",
    "channel_of",
]

# The channels a device publishes on (edgefleet_proto.topics); anything else counts as "other".
CHANNELS = frozenset({"status", "telemetry", "sketch", "events"})
# What a job that logs and swallows its own errors returns for a failed run: the listener counts it
# as a failure without APScheduler logging the same traceback a second time.
JOB_FAILED = False
# What a periodic job returns when this replica is not the scheduler leader (cloud.leader) and skipped
# its run: counted apart, so that ``edgefleet_scheduler_job_runs`` summed over replicas is the runs done.
JOB_NOT_LEADER = "not-leader"

# Seconds; ingest commits in milliseconds, a lagging device reports windows minutes or hours late.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LAG_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 4 * 3600.0, 24 * 3600.0)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def channel_of(topic: str) -> str:
    """The channel a device topic ends with (``.../dev/{id}/telemetry`` -> telemetry), else "other"."""
    channel = topic.rpartition("/")[2]
    return channel if channel in CHANNELS else "other"


class IngestMetrics:
    """What the MQTT transport and the ingestor store, how big their batches are, and how late."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "edgefleet_ingest_messages",
            "Device messages committed to the database, by channel.",
            ["channel"],
            registry=registry,
        )
        self.batches = Histogram(
            "edgefleet_ingest_batch_size",
            "Messages per ingest batch (one database transaction).",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.commit_latency = Histogram(
            "edgefleet_ingest_commit_latency_seconds",
            "Seconds from the hub receiving a message to its batch being committed.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.window_lag = Histogram(
            "edgefleet_ingest_window_lag_seconds",
            "Seconds from the end of a telemetry or sketch window (device clock) to its storing.",
            ["channel"],
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        for channel in (*sorted(CHANNELS), "other"):
            self.messages.labels(channel)  # every series exists from the start: rate() needs a zero
        for channel in ("telemetry", "sketch"):
            self.window_lag.labels(channel)

    def committed(self, received: Sequence[tuple[str, float]], *, now: float | None = None) -> None:
        """A batch was committed: ``(topic, time.monotonic() at receipt)`` of each of its messages."""
        if not received:
            return
        at = time.monotonic() if now is None else now
        self.batches.observe(len(received))
        counts: dict[str, int] = {}
        for topic, received_at in received:
            channel = channel_of(topic)
            counts[channel] = counts.get(channel, 0) + 1
            self.commit_latency.observe(max(0.0, at - received_at))
        for channel, count in counts.items():
            self.messages.labels(channel).inc(count)

    def windows(self, channel: str, ends: Iterable[datetime], now: datetime) -> None:
        """Windows of ``channel`` stored at ``now``; a device clock ahead of the hub counts as no lag."""
        lag = self.window_lag.labels(channel)
        for end in ends:
            lag.observe(max(0.0, (now - end).total_seconds()))


class HttpMetrics:
    """Requests the API answered, by method, route template and status class, and how long each took."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["method", "route", "status"]
        self.requests = Counter(
            "edgefleet_http_requests", "HTTP requests answered by the hub.", labels, registry=registry
        )
        self.duration = Histogram(
            "edgefleet_http_request_duration_seconds",
            "Seconds from a request's arrival to the end of its response.",
            labels,
            buckets=_HTTP_BUCKETS,
            registry=registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        status_class = f"{status // 100}xx" if 100 <= status < 600 else "other"
        self.requests.labels(method, route, status_class).inc()
        self.duration.labels(method, route, status_class).observe(seconds)


class JobMetrics:
    """Runs, failures, misses and durations of APScheduler jobs, from the schedulers' own events.

    The label is ``job_id``, not ``job``: Prometheus gives every scraped series its own ``job`` label.

    A failure is a job that raised, or one that returned :data:`JOB_FAILED` (the hub's jobs log and
    swallow their errors so that the next interval retries). The duration is measured from the run's
    scheduled time, which for the hub's interval jobs is when it started, give or take the scheduler's
    wake-up; a run that waited on the one before it counts that wait too.
    """

    def __init__(self, registry: CollectorRegistry, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.runs = Counter(
            "edgefleet_scheduler_job_runs", "Scheduler job runs that ended.", ["job_id"], registry=registry
        )
        self.failures = Counter(
            "edgefleet_scheduler_job_failures",
            "Scheduler job runs that failed (raised, or reported their own failure).",
            ["job_id"],
            registry=registry,
        )
        self.missed = Counter(
            "edgefleet_scheduler_job_missed",
            "Scheduler job runs skipped: missed their time, or the previous run still ran.",
            ["job_id"],
            registry=registry,
        )
        self.duration = Histogram(
            "edgefleet_scheduler_job_duration_seconds",
            "Seconds from a job run's scheduled time to its end.",
            ["job_id"],
            buckets=_JOB_BUCKETS,
            registry=registry,
        )
        self.last_success = Gauge(
            "edgefleet_scheduler_job_last_success_timestamp_seconds",
            "Unix time of the job's last successful run.",
            ["job_id"],
            registry=registry,
        )
        self.follower_skips = Counter(
            "edgefleet_scheduler_job_follower_skips",
            "Scheduler job runs this replica skipped because another replica leads the scheduled jobs.",
            ["job_id"],
            registry=registry,
        )

    def attach(self, scheduler: BaseScheduler) -> None:
        """Count the jobs of ``scheduler`` (before or after it starts)."""
        mask = EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        scheduler.add_listener(self.listener, mask)

    def listener(self, event: JobEvent) -> None:
        job = event.job_id
        if event.code in (EVENT_JOB_MISSED, EVENT_JOB_MAX_INSTANCES):
            self.missed.labels(job).inc()
            return
        if not isinstance(event, JobExecutionEvent):
            return
        if isinstance(event.retval, str) and event.retval == JOB_NOT_LEADER:
            self.follower_skips.labels(job).inc()
            # A former leader's last success would age into EdgefleetSchedulerJobStalled: the job runs
            # elsewhere now, and that replica's series speaks for it.
            with contextlib.suppress(KeyError):
                self.last_success.remove(job)
            return
        now = self._clock()
        self.runs.labels(job).inc()
        self.duration.labels(job).observe(max(0.0, now - event.scheduled_run_time.timestamp()))
        if event.exception is not None or event.retval is JOB_FAILED:
            self.failures.labels(job).inc()
        else:
            self.last_success.labels(job).set(now)
            self.failures.labels(job)  # a zero series, so that increase() sees the first failure


class LeaderMetrics:
    """Whether this replica leads the scheduled jobs (cloud.leader), and how often that changed."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.leader = Gauge(
            "edgefleet_scheduler_leader",
            "1 while this hub replica leads the scheduled jobs of its fleet, else 0.",
            registry=registry,
        )
        self.changes = Counter(
            "edgefleet_scheduler_leadership_changes",
            "Times this replica became leader or stopped being leader.",
            ["to"],
            registry=registry,
        )
        for to in ("leader", "follower"):
            self.changes.labels(to)

    def set_leader(self, leading: bool) -> None:
        self.leader.set(1.0 if leading else 0.0)

    def changed(self, leading: bool) -> None:
        self.set_leader(leading)
        self.changes.labels("leader" if leading else "follower").inc()


class HealMetrics:
    """Re-reads of the retained statuses (cloud.transport.mqtt) and what asked for them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.heals = Counter(
            "edgefleet_mqtt_status_rereads",
            "Times the hub re-read the retained device statuses to heal messages the broker dropped.",
            registry=registry,
        )
        self.triggers = Counter(
            "edgefleet_mqtt_heal_triggers",
            "What asked for a re-read: the broker's dropped count moved, or a telemetry seq gap.",
            ["reason"],
            registry=registry,
        )
        self.seq_gaps = Counter(
            "edgefleet_ingest_telemetry_seq_gaps",
            "Telemetry windows missing between a device's stored seq and the next one received.",
            registry=registry,
        )
        for reason in ("broker_dropped", "seq_gap"):
            self.triggers.labels(reason)


class _Callback(Collector):
    """Values the hub reads from its parts at scrape time (queue depth, connection, ingest outcomes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ingest_stats: Callable[[], Mapping[str, int]] | None = None
        self.queue_depth: Callable[[], int] | None = None
        self.mqtt_connected: Callable[[], bool] | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            stats, depth, connected = self.ingest_stats, self.queue_depth, self.mqtt_connected
        if stats is not None:
            outcomes = CounterMetricFamily(
                "edgefleet_ingest_records",
                "What ingest did with what devices sent, by outcome (received messages, stored rows, "
                "duplicates, malformed, rejected, failed).",
                labels=["outcome"],
            )
            for outcome, value in sorted(stats().items()):
                outcomes.add_metric([outcome], float(value))
            yield outcomes
        if depth is not None:
            yield GaugeMetricFamily(
                "edgefleet_ingest_queue_depth",
                "Messages received from the broker and not yet handed to ingest.",
                value=float(depth()),
            )
        if connected is not None:
            yield GaugeMetricFamily(
                "edgefleet_mqtt_connected",
                "1 while the hub is connected to the MQTT broker.",
                value=1.0 if connected() else 0.0,
            )

    def bind(
        self,
        *,
        ingest_stats: Callable[[], Mapping[str, int]],
        queue_depth: Callable[[], int],
        mqtt_connected: Callable[[], bool],
    ) -> None:
        with self._lock:
            self.ingest_stats = ingest_stats
            self.queue_depth = queue_depth
            self.mqtt_connected = mqtt_connected


class HubMetrics:
    """One hub's metrics, in a registry of its own; the hub's parts record into its members."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.ingest = IngestMetrics(self.registry)
        self.http = HttpMetrics(self.registry)
        self.jobs = JobMetrics(self.registry)
        self.leader = LeaderMetrics(self.registry)
        self.heal = HealMetrics(self.registry)
        self._parts = _Callback()
        self.registry.register(self._parts)

    def bind_parts(
        self,
        *,
        ingest_stats: Callable[[], Mapping[str, int]],
        queue_depth: Callable[[], int],
        mqtt_connected: Callable[[], bool],
    ) -> None:
        """What the hub reads from its running parts at each scrape."""
        self._parts.bind(ingest_stats=ingest_stats, queue_depth=queue_depth, mqtt_connected=mqtt_connected)

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()

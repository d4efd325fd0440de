"""A hub with something to show: devices over the real broker, a cohort, a rollout half-way through its
canary, drift scores over the last hours, a firing alert, and tokens of every role.

Devices, events and telemetry travel as a device sends them (protobuf over MQTT, through the hub's
ingest); models, cohorts, rules and the rollout go through the HTTP API. Drift scores are written as the
observe cycle writes them (``CohortMetric`` rows) and the alert rule is judged by the alert service, so
the test does not wait for a cycle of the hub's scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlmodel import select

from cloud.alerts.service import evaluate
from cloud.drift.tables import CohortMetric
from cloud.hub import Hub
from cloud.models import Cohort, Role
from cloud.services import tokens
from edgefleet_proto.topics import FleetTopics
from edgefleet_proto.v1 import event_pb2, telemetry_pb2
from tests.integration.cloud.mqtt_probe import Probe, wait_for
from tests.unit.cloud.helpers import model_ref, status, tiny_onnx

MODEL = "tiny"
OLD, NEW = "1", "2"
CANARY = ("d-01", "d-02")
ONLINE = ("d-01", "d-02", "d-03", "d-04", "d-05")
OFFLINE = ("d-06",)
FEATURES = ("f0", "f1", "f2")
MAX_ROLLBACK_PCT = 50.0

PLAN = f"""
name: tiny-2
target: {{kind: model, model: {MODEL}, version: "{NEW}"}}
stages:
  - {{name: canary, cohort: canary, bake: 1h}}
  - {{name: everyone, percent: 100, bake: 1m, approval: true}}
gates: {{max_rollback_pct: {MAX_ROLLBACK_PCT:g}}}
"""

RULES = """
rules:
  - {name: canary-drift, metric: drift_score, comparison: ">", threshold: 1, for: 0s, scope: "cohort:canary"}
"""


@dataclass(frozen=True)
class Seeded:
    hub: Hub
    fleet: str
    tokens: dict[Role, str]
    names: dict[Role, str]
    rollout_id: str

    @property
    def url(self) -> str:
        return f"{self.hub.api_url}/ui/"

    def api(self, role: Role = Role.ADMIN) -> httpx.Client:
        return httpx.Client(
            base_url=self.hub.api_url, headers={"Authorization": f"Bearer {self.tokens[role]}"}, timeout=10
        )


def _ok(response: httpx.Response, expected: int = 200) -> Any:
    assert response.status_code == expected, f"{response.request.url}: {response.status_code} {response.text}"
    return response.json() if response.content else None


def _event(device_id: str, seq: int, kind: int, version: str, reason: str) -> event_pb2.Event:
    return event_pb2.Event(
        device_id=device_id,
        seq=seq,
        ts_ms=int(datetime.now(UTC).timestamp() * 1000),
        kind=kind,  # type: ignore[arg-type]
        model=model_ref(MODEL, version, "ab" * 32),
        reason=reason,
        generation=1,
    )


def _telemetry(device_id: str, windows: int) -> telemetry_pb2.TelemetryBatch:
    """The last ``windows`` minutes of the old version serving, busier and slower each minute."""
    batch = telemetry_pb2.TelemetryBatch(device_id=device_id)
    end = int(datetime.now(UTC).timestamp()) * 1000
    for seq in range(1, windows + 1):
        start = end - 60_000 * (windows - seq + 1)
        batch.windows.add(
            seq=seq,
            window_start_ms=start,
            window_end_ms=start + 60_000,
            model_name=MODEL,
            model_version=OLD,
            requests=100 * seq,
            errors=seq - 1,
            latency=telemetry_pb2.LatencySummary(
                p50_ms=1.0 * seq, p95_ms=2.0 * seq, p99_ms=3.0 * seq, mean_ms=1.2 * seq, max_ms=5.0 * seq
            ),
        )
    return batch


def seed(hub: Hub, probe: Probe, fleet: str) -> Seeded:
    ctx = hub.context
    assert ctx is not None
    topics = FleetTopics(fleet)
    for device_id in ONLINE + OFFLINE:
        ring = "canary" if device_id in CANARY else "main"
        msg = status(
            device_id,
            fleet=fleet,
            online=device_id not in OFFLINE,
            labels={"ring": ring, "region": "eu" if device_id < "d-04" else "us"},
            active=model_ref(MODEL, OLD, "cd" * 32),
        )
        probe.publish(topics.device(device_id).status, msg.SerializeToString(), retain=True)

    secrets: dict[Role, str] = {}
    names: dict[Role, str] = {}
    with ctx.sessions() as session:
        for role in Role:
            names[role] = f"ui-{role.value}"
            _row, secrets[role] = tokens.create_token(session, names[role], role)
    admin = httpx.Client(
        base_url=hub.api_url, headers={"Authorization": f"Bearer {secrets[Role.ADMIN]}"}, timeout=10
    )
    with admin:
        wait_for(lambda: _ok(admin.get("/api/v1/devices"))["count"] == len(ONLINE + OFFLINE), timeout=15)
        for version, scale in ((OLD, 1.0), (NEW, 2.0)):
            files = {"file": ("m.onnx", tiny_onnx(scale))}
            _ok(admin.post("/api/v1/models", data={"name": MODEL, "version": version}, files=files), 201)
        _ok(admin.post("/api/v1/cohorts", json={"name": "canary", "selector": "ring=canary"}), 201)
        _ok(admin.post("/api/v1/cohorts", json={"name": "eu", "selector": "region=eu"}), 201)

        # Device d-01's own history: what the device detail page lists.
        for seq, kind in enumerate(
            (event_pb2.EVENT_KIND_DESIRED_RECEIVED, event_pb2.EVENT_KIND_ACTIVATED), 1
        ):
            probe.publish(
                topics.device("d-01").events,
                _event("d-01", seq, kind, OLD, f"step {seq}").SerializeToString(),
            )
        probe.publish(topics.device("d-01").telemetry, _telemetry("d-01", 3).SerializeToString())

        created = _ok(
            admin.post(
                "/api/v1/rollouts", content=PLAN.encode(), headers={"Content-Type": "application/yaml"}
            ),
            201,
        )
        rollout_id = str(created["id"])

        def canary_offered() -> bool:
            view = _ok(admin.get(f"/api/v1/rollouts/{rollout_id}"))
            return bool(view["stage_detail"][0]["by_state"].get("offered", 0) == len(CANARY))

        wait_for(canary_offered, timeout=20)
        # The canary commits the new version: the rollout's gate has a figure to show.
        for seq, device_id in enumerate(CANARY, 10):
            event = _event(device_id, seq, event_pb2.EVENT_KIND_COMMITTED, NEW, "trial passed")
            probe.publish(topics.device(device_id).events, event.SerializeToString())

        def canary_baking() -> bool:
            view = _ok(admin.get(f"/api/v1/rollouts/{rollout_id}"))
            stage = view["stage_detail"][0]
            return bool(view["state"] == "baking" and stage["by_state"].get("committed", 0) == len(CANARY))

        wait_for(canary_baking, timeout=20)

        _seed_drift(hub, fleet)
        _ok(admin.post("/api/v1/alert-rules/apply", content=RULES.encode(),
                       headers={"Content-Type": "application/yaml"}))  # fmt: skip
        evaluate(ctx.sessions, fleet=fleet, now=datetime.now(UTC))
        alerts = _ok(admin.get("/api/v1/alerts", params={"state": "firing"}))
        assert alerts["count"] == 1, alerts
    return Seeded(hub=hub, fleet=fleet, tokens=secrets, names=names, rollout_id=rollout_id)


def _seed_drift(hub: Hub, fleet: str) -> None:
    """Six 5-minute buckets up to now: canary drifts more and more on f1, eu stays calm."""
    ctx = hub.context
    assert ctx is not None
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    with ctx.sessions() as session:
        ids = {c.name: c.id or 0 for c in session.exec(select(Cohort).where(Cohort.fleet == fleet))}
        for i in range(6):
            start = now - timedelta(minutes=5 * (6 - i))
            for cohort, score in (("canary", 0.4 + 0.4 * i), ("eu", 0.3)):
                rows: list[tuple[str, str, float | None, float, bool]] = [
                    ("drift_score", "", None, score, score >= 1)
                ]
                rows += [
                    ("drift_ks", f, 0.08, 0.08 * score if f == "f1" else 0.02, f == "f1" and score >= 1)
                    for f in FEATURES
                ]
                for metric, feature, threshold, value, drifted in rows:
                    session.add(
                        CohortMetric(
                            fleet=fleet,
                            cohort_id=ids[cohort],
                            model_name=MODEL,
                            model_version=NEW,
                            bucket_start=start,
                            bucket_s=300,
                            metric=metric,
                            feature=feature,
                            reference="baseline",
                            value=value,
                            threshold=threshold,
                            drifted=drifted,
                            n=200,
                        )
                    )
        session.commit()

"""The hub resolves the trial policy in force per device and signs it into the desired state.

Order: the assignment's, then the rollout plan's (a stage's before the plan's), then the bundle's
default, then the built-in default. Faulty policies are refused at the door, naming the field.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cloud.api.app import create_app
from cloud.artifacts import ArtifactStore
from cloud.cli.app import app as cli_app
from cloud.context import HubContext
from cloud.db import SessionFactory
from cloud.models import Bundle, DesiredState, Role
from cloud.rollouts.plan import PlanError, RolloutPlan, parse_plan
from cloud.services import assignments, desired, registry, tokens
from cloud.services.ingest import InboundMessage, Ingestor
from cloud.services.publisher import RecordingPublisher
from edgefleet_proto.topics import FleetTopics
from edgefleet_proto.v1 import desired_pb2
from model_tools.trial_policy import PolicySource, TrialPolicy, parse_trial_policy
from tests.unit.cloud.helpers import FrozenClock, status, tiny_onnx

FLEET = "unit"
ENDPOINT = "hub.example:50051"
BUNDLE_POLICY = {"latency": {"budget_ms": 30.0}}
PLAN_POLICY = {"latency": {"budget_ms": 20.0}}
STAGE_POLICY = {"latency": {"budget_ms": 15.0}, "divergence": {"reference": "profile"}}
ASSIGNED_POLICY = {"latency": {"budget_ms": 10.0}}


def _seed(sessions: SessionFactory, store: ArtifactStore, clock: FrozenClock) -> None:
    Ingestor(sessions, FleetTopics(FLEET), clock=clock).ingest(
        [InboundMessage(f"ef/v1/{FLEET}/dev/d1/status", status("d1").SerializeToString())]
    )
    with sessions() as s:
        registry.register_model(s, store, "digits", "1", io.BytesIO(tiny_onnx()))


def _add_bundle_policy(sessions: SessionFactory, policy: Mapping[str, object]) -> None:
    with sessions() as s:
        mv = registry.get_model(s, "digits", "1")
        assert mv.id is not None
        s.add(
            Bundle(
                model_version_id=mv.id,
                manifest={"trial_policy": dict(policy)},
                profile_sha256="ab" * 32,
                profile_length=10,
                profile_media_type="application/x-edgefleet-profile+protobuf",
            )
        )
        s.commit()


def _assign(
    sessions: SessionFactory, publisher: RecordingPublisher, clock: FrozenClock, policy: TrialPolicy | None
) -> desired_pb2.DesiredState:
    with sessions() as s:
        assignments.assign(
            s, publisher, "digits", "1", device_ids=["d1"], fleet=FLEET,
            artifact_endpoint=ENDPOINT, clock=clock, trial_policy=policy,
        )  # fmt: skip
    return desired_pb2.DesiredState.FromString(publisher.retained["d1"])


def _budget(state: desired_pb2.DesiredState) -> tuple[str, float | None]:
    policy = state.trial_policy
    return policy.source, policy.latency.budget_ms if policy.latency.HasField("budget_ms") else None


def test_resolution_order_assignment_then_rollout_then_bundle_then_default(
    sessions: SessionFactory, store: ArtifactStore, clock: FrozenClock, publisher: RecordingPublisher
) -> None:
    _seed(sessions, store, clock)
    # Nothing set anywhere: the device's own defaults judge, and the state says so.
    state = _assign(sessions, publisher, clock, None)
    assert state.HasField("trial_policy") and _budget(state) == ("default", None)

    _add_bundle_policy(sessions, BUNDLE_POLICY)
    assert _budget(_assign(sessions, publisher, clock, None)) == ("bundle", 30.0)

    # A rollout's offer stores the plan's policy on the assignment row.
    plan = RolloutPlan.model_validate(
        {
            "name": "r",
            "target": {"model": "digits", "version": "1"},
            "stages": [
                {"name": "one", "percent": 10},
                {"name": "two", "percent": 100, "trial_policy": STAGE_POLICY},
            ],
            "trial_policy": PLAN_POLICY,
        }
    )
    with sessions() as s:
        row = s.get(DesiredState, "d1")
        assert row is not None
        row.trial_policy = desired.override(plan.trial_policy_for(plan.stages[0]), PolicySource.ROLLOUT)
        s.add(row)
        s.flush()
        device_state = desired.trial_policy(row, s.get(Bundle, row.model_version_id))
        assert (device_state.source, device_state.latency.budget_ms) == ("rollout", 20.0)
        row.trial_policy = desired.override(plan.trial_policy_for(plan.stages[1]), PolicySource.ROLLOUT)
        device_state = desired.trial_policy(row, s.get(Bundle, row.model_version_id))
        assert (device_state.source, device_state.latency.budget_ms) == ("rollout", 15.0)
        assert device_state.divergence.reference == "profile"

    # An operator's assignment comes before everything; a later plain assignment clears it again.
    assert _budget(_assign(sessions, publisher, clock, parse_trial_policy(ASSIGNED_POLICY))) == (
        "assignment",
        10.0,
    )
    with sessions() as s:
        row = s.get(DesiredState, "d1")
        assert row is not None and row.trial_policy == {"source": "assignment", "policy": ASSIGNED_POLICY}
    assert _budget(_assign(sessions, publisher, clock, None)) == ("bundle", 30.0)


def test_a_plan_refuses_a_faulty_policy_naming_the_field() -> None:
    text = """
name: r
target: {model: digits, version: "1"}
stages:
  - {name: one, percent: 100, trial_policy: {latency: {ratio: 0.5}}}
trial_policy: {divergence: {reference: yesterday}}
"""
    with pytest.raises(PlanError) as info:
        parse_plan(text)
    problems = "\n".join(info.value.problems)
    assert "latency.ratio must be >= 1, got 0.5" in problems
    assert "divergence.reference must be one of profile, previous, none, got 'yesterday'" in problems
    plan = parse_plan(text.replace("0.5", "1.5").replace("yesterday", "none"))
    assert RolloutPlan.model_validate(plan.to_dict()) == plan
    assert plan.trial_policy_for(plan.stages[0]) == parse_trial_policy({"latency": {"ratio": 1.5}})


@pytest.fixture
def client(ctx: HubContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


def test_the_api_takes_an_assignment_policy_and_refuses_a_faulty_one(
    ctx: HubContext, client: TestClient, publisher: RecordingPublisher
) -> None:
    _seed(ctx.sessions, ctx.store, ctx.clock)  # type: ignore[arg-type]
    with ctx.sessions() as s:
        _row, secret = tokens.create_token(s, "op", Role.OPERATOR)
    op = {"Authorization": f"Bearer {secret}"}
    body = {"model": "digits", "version": "1", "devices": ["d1"]}
    r = client.post(
        "/api/v1/assignments", headers=op, json={**body, "trial_policy": {"latency": {"ratio": 0.5}}}
    )
    assert r.status_code in (400, 422), r.text
    assert "trial policy: latency.ratio must be >= 1, got 0.5" in r.text
    assert "d1" not in publisher.retained
    r = client.post("/api/v1/assignments", headers=op, json={**body, "trial_policy": ASSIGNED_POLICY})
    assert r.status_code == 200, r.text
    state = desired_pb2.DesiredState.FromString(publisher.retained["d1"])
    assert _budget(state) == ("assignment", 10.0)


def test_the_cli_checks_a_policy_before_calling_the_hub(tmp_path: Path) -> None:
    """A faulty policy names its field; nothing is sent (no hub listens at this address)."""
    hub = ["--hub-url", "http://127.0.0.1:9", "--token", "x"]
    policy = tmp_path / "policy.json"
    policy.write_text('{"latency": {"ratio": 0.5}}')
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: r\ntarget: {model: m, version: '1'}\nstages: [{percent: 100}]\n")
    cases = [
        (
            ["assign", "--model", "m", "--version", "1", "-d", "d1", "--trial-policy", str(policy), *hub],
            "latency.ratio must be >= 1, got 0.5",
        ),
        (
            ["rollouts", "create", "-f", str(plan), "--trial-policy", '{"mode": "canary"}', *hub],
            "mode must be one of serve, shadow, got 'canary'",
        ),
    ]
    for args, message in cases:
        result = CliRunner().invoke(cli_app, args)
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())

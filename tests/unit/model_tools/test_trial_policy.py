"""Trial policies as data: parsing names the faulty field, the forms agree, resolution has one order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from model_tools.bundle import BundleManifest
from model_tools.errors import BundleError
from model_tools.graph_signature import GraphSignatureError, onnx_graph_signature
from model_tools.trial_policy import (
    DivergencePolicy,
    DivergenceReference,
    LatencyPolicy,
    PolicySource,
    TrialPolicy,
    TrialPolicyError,
    parse_trial_policy,
    policy_digest,
    read_trial_policy,
    resolve,
)
from tests.large_model import MiB, make_large_onnx
from tests.unit.model_tools.test_bundle import _manifest

FULL: dict[str, Any] = {
    "mode": "shadow",
    "window_s": 120.0,
    "window_requests": 300,
    "min_requests": 30,
    "max_error_rate": 0.01,
    "latency": {"budget_ms": 250.0, "ratio": 3.0},
    "divergence": {"reference": "profile", "limit": 0.3},
    "max_disagreement": 0.5,
}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"latency": {"ratio": 0.5}}, "latency.ratio must be >= 1, got 0.5"),
        ({"latency": {"budget_ms": -3}}, "latency.budget_ms must be a number of milliseconds > 0, got -3"),
        ({"latency": {"budget_ms": "x"}}, "latency.budget_ms must be a number of milliseconds > 0, got 'x'"),
        ({"latency": {}}, "latency must set budget_ms, ratio or both, got neither"),
        ({"latency": 5}, "latency must be a mapping, got 5"),
        ({"latency": {"p99": 3}}, "unknown field latency.p99; expected one of budget_ms, ratio"),
        (
            {"divergence": {"reference": "yesterday"}},
            "divergence.reference must be one of profile, previous, none, got 'yesterday'",
        ),
        (
            {"divergence": {"reference": "profile", "limit": 2}},
            "divergence.limit must be a fraction in 0..1, got 2",
        ),
        ({"mode": "canary"}, "mode must be one of serve, shadow, got 'canary'"),
        ({"window_s": -1}, "window_s must be a number of seconds >= 0, got -1"),
        ({"window_requests": 2.5}, "window_requests must be a whole number >= 0, got 2.5"),
        ({"min_requests": True}, "min_requests must be a whole number >= 0, got True"),
        ({"max_error_rate": 1.5}, "max_error_rate must be a fraction in 0..1, got 1.5"),
        ({"max_disagreement": -0.1}, "max_disagreement must be a fraction in 0..1, got -0.1"),
        ({"window": 60}, "unknown field window; expected one of mode, window_s"),
        ({"window_s": 0, "window_requests": 0}, "window_s and window_requests are both 0"),
        ([1, 2], "expected a mapping, got a list"),
    ],
)
def test_a_faulty_policy_is_refused_naming_its_field(data: Any, message: str) -> None:
    with pytest.raises(TrialPolicyError) as info:
        parse_trial_policy(data)
    assert str(info.value).startswith(f"trial policy: {message}")


def test_json_text_that_does_not_parse_says_what_was_expected() -> None:
    with pytest.raises(
        TrialPolicyError, match="trial policy: expected a JSON object, got text that does not parse"
    ):
        parse_trial_policy("{latency: 3}")


def test_the_dict_json_and_proto_forms_round_trip() -> None:
    policy = parse_trial_policy(FULL)
    assert policy == TrialPolicy(
        mode="shadow",
        window_s=120.0,
        window_requests=300,
        min_requests=30,
        max_error_rate=0.01,
        latency=LatencyPolicy(budget_ms=250.0, ratio=3.0),
        divergence=DivergencePolicy(DivergenceReference.PROFILE, 0.3),
        max_disagreement=0.5,
    )
    assert parse_trial_policy(policy.to_dict()) == policy
    assert parse_trial_policy(json.dumps(FULL)) == policy
    msg = policy.to_proto(PolicySource.ROLLOUT)
    assert msg.source == "rollout"
    assert TrialPolicy.from_proto(msg) == policy
    # Unset fields stay unset through the message: "the device's default", not zero.
    partial = parse_trial_policy({"latency": {"budget_ms": 80}})
    back = partial.to_proto("assignment")
    assert not back.HasField("window_s") and not back.latency.HasField("ratio")
    assert TrialPolicy.from_proto(back) == partial


def test_the_digest_is_canonical_and_tells_policies_apart() -> None:
    a = parse_trial_policy({"latency": {"budget_ms": 80, "ratio": 2}, "min_requests": 10})
    b = parse_trial_policy('{"min_requests": 10, "latency": {"ratio": 2.0, "budget_ms": 80.0}}')
    assert policy_digest(a) == policy_digest(b)
    assert len(policy_digest(a)) == 64
    assert policy_digest(a) != policy_digest(parse_trial_policy({"latency": {"budget_ms": 81}}))
    assert policy_digest(TrialPolicy()) != policy_digest(a)


def test_resolution_order_is_assignment_then_rollout_then_bundle_then_default() -> None:
    assignment = parse_trial_policy({"latency": {"budget_ms": 10}})
    rollout = parse_trial_policy({"latency": {"budget_ms": 20}})
    bundle = parse_trial_policy({"latency": {"budget_ms": 30}})
    assert resolve(assignment=assignment, rollout=rollout, bundle=bundle) == (
        assignment,
        PolicySource.ASSIGNMENT,
    )
    assert resolve(rollout=rollout, bundle=bundle) == (rollout, PolicySource.ROLLOUT)
    assert resolve(bundle=bundle) == (bundle, PolicySource.BUNDLE)
    assert resolve() == (TrialPolicy(), PolicySource.DEFAULT)


def test_a_command_line_argument_is_inline_json_or_a_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"latency": {"budget_ms": 40}}))
    assert read_trial_policy(str(path)).latency == LatencyPolicy(budget_ms=40.0)
    assert read_trial_policy('{"mode": "shadow"}').mode == "shadow"
    with pytest.raises(TrialPolicyError, match=r"expected inline JSON or a readable file, got 'nope\.json'"):
        read_trial_policy("nope.json")


def test_graph_signature_ignores_weights_and_sees_the_graph(tmp_path: Path) -> None:
    small = make_large_onnx(tmp_path / "small.onnx", target_bytes=MiB // 4, layers=1, seed=0)
    wider = make_large_onnx(tmp_path / "wider.onnx", target_bytes=MiB, layers=1, seed=1)
    deeper = make_large_onnx(tmp_path / "deeper.onnx", target_bytes=MiB // 4, layers=2)
    assert onnx_graph_signature(small) == onnx_graph_signature(wider)  # retrained: other weights
    assert onnx_graph_signature(small) != onnx_graph_signature(deeper)
    other_io = make_large_onnx(tmp_path / "io.onnx", target_bytes=MiB // 4, layers=1, classes=4)
    assert onnx_graph_signature(small) != onnx_graph_signature(other_io)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x0f" * 64)
    with pytest.raises(GraphSignatureError):
        onnx_graph_signature(junk)


def test_a_bundle_manifest_carries_a_default_policy_and_refuses_a_faulty_one() -> None:
    manifest = _manifest(trial_policy={"latency": {"budget_ms": 120}})
    assert manifest.trial_policy == {"latency": {"budget_ms": 120.0}}
    again = BundleManifest.from_json(manifest.to_json())
    assert again.trial_policy == manifest.trial_policy
    assert "trial_policy" not in _manifest().to_dict()  # manifests without one keep their bytes
    with pytest.raises(BundleError, match=r"manifest trial policy: latency\.ratio must be >= 1, got 0\.5"):
        _manifest(trial_policy={"latency": {"ratio": 0.5}})

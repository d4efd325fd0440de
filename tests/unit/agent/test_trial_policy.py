"""The trial policy on the device: laid over its config, aware of architecture changes, judged by gates."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from edge_agent.config import TrialConfig, TrialMode
from edge_agent.desired import check_desired
from edge_agent.errors import DesiredRejectedError
from edge_agent.gates import TrialJudge, Verdict
from edge_agent.trial import DEVICE_SOURCE, policy_in_force
from edgefleet_proto.v1 import common_pb2, desired_pb2
from model_tools.trial_policy import parse_trial_policy, policy_digest

BASE = TrialConfig(window_requests=100, window_s=60, min_requests=16)


def carried(data: dict[str, Any], source: str = "assignment") -> common_pb2.TrialPolicy:
    return parse_trial_policy(data).to_proto(source)


def gates_of(cfg: TrialConfig) -> tuple[float, float, str, float, bool]:
    return (
        cfg.latency_budget_ms,
        cfg.max_latency_ratio,
        cfg.divergence_reference,
        cfg.max_disagreement,
        cfg.compare_previous,
    )


@pytest.mark.parametrize(
    ("policy", "architecture", "expected"),
    [
        # Nothing carried, same graph: today's gates (ratio 2x to the previous, auto baseline).
        (None, "same", (0.0, 2.0, "auto", 0.2, True)),
        (None, "first", (0.0, 2.0, "auto", 0.2, True)),
        # Another graph: never the previous model's latency or answers; the configured budget.
        (None, "changed", (1000.0, 0.0, "profile", 1.0, False)),
        # A latency policy sets exactly its gates.
        ({"latency": {"budget_ms": 250}}, "same", (250.0, 0.0, "auto", 0.2, True)),
        ({"latency": {"budget_ms": 250}}, "changed", (250.0, 0.0, "profile", 1.0, False)),
        # An operator who asks for the ratio across an architecture change gets it (and the comparisons).
        ({"latency": {"ratio": 3}}, "changed", (0.0, 3.0, "profile", 1.0, True)),
        (
            {"divergence": {"reference": "none"}, "latency": {"budget_ms": 9}},
            "same",
            (9.0, 0.0, "none", 0.2, False),
        ),
        (
            {"divergence": {"reference": "previous", "limit": 0.4}},
            "changed",
            (1000.0, 0.0, "previous", 1.0, True),
        ),
    ],
)
def test_the_policy_in_force_lays_the_carried_fields_over_the_architecture_default(
    policy: dict[str, Any] | None, architecture: str, expected: tuple[float, float, str, float, bool]
) -> None:
    msg = carried(policy) if policy is not None else None
    got = policy_in_force(BASE, msg, architecture=architecture)
    assert gates_of(got.config) == expected
    assert got.architecture == architecture
    assert got.source == ("assignment" if policy is not None else DEVICE_SOURCE)
    assert got.digest == policy_digest(parse_trial_policy(policy or {}))


def test_the_other_fields_of_a_policy_replace_the_device_config() -> None:
    msg = carried(
        {"mode": "shadow", "window_s": 5, "window_requests": 24, "min_requests": 8, "max_error_rate": 0.1},
        source="bundle",
    )
    got = policy_in_force(BASE, msg, architecture="same")
    cfg = got.config
    assert (cfg.mode, cfg.window_s, cfg.window_requests, cfg.min_requests, cfg.max_error_rate) == (
        TrialMode.SHADOW, 5.0, 24, 8, 0.1,
    )  # fmt: skip
    assert got.source == "bundle"
    details = got.details()
    assert details["policy_source"] == "bundle" and details["architecture"] == "same"
    assert details["policy_digest"] == got.digest


def test_a_configured_budget_is_kept_on_an_architecture_change() -> None:
    got = policy_in_force(replace(BASE, latency_budget_ms=40.0), None, architecture="changed")
    assert got.config.latency_budget_ms == 40.0


def _feed(
    judge: TrialJudge, n: int, *, new: int, old: int, latency: float, ref_latency: float
) -> Verdict | None:
    out = np.zeros((1, 4), np.float32)
    ref = np.zeros((1, 4), np.float32)
    for _ in range(n):
        out[:] = 0
        out[0, new] = 1
        ref[:] = 0
        ref[0, old] = 1
        judge.observe(
            latency_ms=latency, outputs={"y": out}, ref_outputs={"y": ref}, ref_latency_ms=ref_latency
        )
        if judge.verdict is not None:
            return judge.verdict
    return None


def test_a_new_architecture_passes_where_the_retrain_gates_fail_it() -> None:
    """20x slower and always another class than the previous model: fine under the new-architecture
    gates (its own profile, an absolute budget), rolled back under today's."""
    profile = [0.25, 0.25, 0.25, 0.25]
    judge = TrialJudge(BASE, mode=TrialMode.SERVE, profile_distribution=profile)
    failed = _feed(judge, 32, new=1, old=2, latency=40.0, ref_latency=2.0)
    assert failed is not None and failed.gate == "latency_ratio"

    changed = policy_in_force(BASE, None, architecture="changed").config
    # Spread its answers over the classes the way the profile says.
    judge = TrialJudge(changed, mode=TrialMode.SERVE, profile_distribution=profile)
    for i in range(100):
        _feed(judge, 1, new=i % 4, old=0, latency=40.0, ref_latency=2.0)
    assert judge.verdict is not None and judge.verdict.passed, judge.verdict
    assert judge.verdict.figures["baseline"] == "profile"

    over = TrialJudge(changed, mode=TrialMode.SERVE, profile_distribution=profile)
    verdict = _feed(over, 32, new=1, old=1, latency=1500.0, ref_latency=2.0)
    assert verdict is not None and verdict.gate == "latency_budget"
    assert "over the budget 1000 ms" in verdict.reason


def test_an_explicit_profile_reference_never_falls_back_to_the_previous_version() -> None:
    cfg = replace(BASE, divergence_reference="profile")
    judge = TrialJudge(cfg, mode=TrialMode.SHADOW, profile_distribution=None)
    # Every answer differs from the previous version's: the divergence gate has no profile to use.
    verdict = _feed(judge, 100, new=1, old=2, latency=1.0, ref_latency=1.0)
    assert verdict is not None and verdict.gate == "disagreement"  # shadow disagreement still judges
    cfg = replace(cfg, max_disagreement=1.0)
    judge = TrialJudge(cfg, mode=TrialMode.SHADOW, profile_distribution=None)
    verdict = _feed(judge, 100, new=1, old=2, latency=1.0, ref_latency=1.0)
    assert verdict is not None and verdict.passed and "js_divergence" not in verdict.figures


def test_the_judge_carries_its_context_into_every_verdict() -> None:
    judge = TrialJudge(
        BASE, mode=TrialMode.SERVE, context={"policy_source": "rollout", "policy_digest": "ab"}
    )
    verdict = judge.finish("time")
    assert verdict.figures["policy_source"] == "rollout" and verdict.figures["policy_digest"] == "ab"


def test_a_desired_state_with_a_faulty_policy_is_rejected_naming_the_field() -> None:
    desired = desired_pb2.DesiredState(device_id="d", fleet="f", generation=2)
    desired.trial_policy.source = "assignment"
    desired.trial_policy.latency.ratio = 0.5
    with pytest.raises(DesiredRejectedError, match=r"trial policy: latency\.ratio must be >= 1, got 0\.5"):
        check_desired(desired, device_id="d", fleet="f", applied_generation=1, max_artifact_bytes=1 << 20)

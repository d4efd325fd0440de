"""Trial gates, fed observations by hand: each gate fails on what it should and says so with figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_agent.config import TrialConfig, TrialMode
from edge_agent.gates import TrialJudge, Verdict, class_counts, js_divergence

CFG = TrialConfig(window_requests=100, window_s=60, min_requests=16)


def logits(cls: int, n_classes: int = 4, rows: int = 1) -> dict[str, np.ndarray]:
    out = np.zeros((rows, n_classes), np.float32)
    out[:, cls] = 1.0
    return {"y": out}


def feed(judge: TrialJudge, n: int, **kw: object) -> Verdict | None:
    verdict = None
    for i in range(n):
        args = {k: (v(i) if callable(v) else v) for k, v in kw.items()}
        verdict = judge.observe(**args) or verdict  # type: ignore[arg-type]
        if judge.verdict is not None:
            return judge.verdict
    return verdict


def test_js_divergence_is_zero_for_equal_one_for_disjoint_and_symmetric() -> None:
    assert js_divergence([1, 1, 2], [2, 2, 4]) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    p, q = [5, 3, 1, 1], [1, 1, 4, 4]
    assert js_divergence(p, q) == pytest.approx(js_divergence(q, p))
    # uniform over 10 classes against always one class: the "garbage output" case
    assert js_divergence(np.ones(10), np.eye(10)[3]) == pytest.approx(0.758, abs=1e-3)
    with pytest.raises(ValueError, match="positive total"):
        js_divergence([0, 0], [1, 1])


def test_class_counts_take_the_argmax_of_a_single_output_only() -> None:
    out = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], np.float32)
    assert class_counts({"y": out}, 2).tolist() == [1, 2]
    assert class_counts({"y": out, "z": out}, 2) is None
    assert class_counts({"y": out[:, 0]}, 2) is None


def test_nan_fails_at_once_and_says_where() -> None:
    judge = TrialJudge(CFG, mode=TrialMode.SERVE)
    assert judge.observe(latency_ms=1.0, outputs=logits(0)) is None
    bad = {"y": np.array([[np.nan, 1.0, math.inf, 0.0]], np.float32)}
    verdict = judge.observe(latency_ms=1.0, outputs=bad)
    assert verdict is not None and not verdict.passed and verdict.gate == "nonfinite"
    assert "2 of 4 values of output 'y' on request 2" in verdict.reason
    assert verdict.figures["requests"] == 2
    # decided: later observations change nothing
    assert judge.observe(latency_ms=1.0, outputs=logits(0)) is None and judge.requests == 2


def test_error_rate_above_the_limit_fails_once_enough_requests_were_seen() -> None:
    judge = TrialJudge(CFG, mode=TrialMode.SERVE)
    verdict = feed(
        judge,
        40,
        latency_ms=1.0,
        outputs=lambda i: None if i % 4 == 0 else logits(i % 4),
        error=lambda i: "boom" if i % 4 == 0 else "",
    )
    assert verdict is not None and verdict.gate == "errors" and judge.requests == CFG.min_requests
    assert "error rate 25.0% (4 of 16 requests)" in verdict.reason


def test_far_slower_than_the_previous_version_fails_the_latency_gate() -> None:
    judge = TrialJudge(CFG, mode=TrialMode.SERVE)
    verdict = feed(
        judge,
        40,
        latency_ms=30.0,
        outputs=lambda i: logits(i % 4),
        ref_outputs=lambda i: logits(i % 4),
        ref_latency_ms=2.0,
    )
    assert verdict is not None and verdict.gate == "latency_ratio"
    assert "15.0x the previous version's 2.00 ms" in verdict.reason
    assert verdict.figures["p95_ms"] == 30.0 and verdict.figures["previous_p95_ms"] == 2.0


def test_a_few_microseconds_slower_is_within_the_slack() -> None:
    judge = TrialJudge(CFG, mode=TrialMode.SERVE)
    verdict = feed(
        judge,
        100,
        latency_ms=0.03,
        outputs=lambda i: logits(i % 4),
        ref_outputs=lambda i: logits(i % 4),
        ref_latency_ms=0.01,
    )
    assert verdict is not None and verdict.passed and verdict.gate == "window"


def test_the_latency_budget_is_absolute() -> None:
    cfg = TrialConfig(window_requests=100, min_requests=16, latency_budget_ms=5.0)
    verdict = feed(TrialJudge(cfg, mode=TrialMode.SERVE), 40, latency_ms=9.0, outputs=lambda i: logits(i % 4))
    assert (
        verdict is not None and verdict.gate == "latency_budget" and "over the budget 5 ms" in verdict.reason
    )


def test_constant_answers_diverge_from_the_profile() -> None:
    judge = TrialJudge(CFG, mode=TrialMode.SERVE, profile_distribution=[0.25, 0.25, 0.25, 0.25])
    verdict = feed(judge, 40, latency_ms=1.0, outputs=logits(2))
    assert verdict is not None and verdict.gate == "divergence"
    assert "diverges from the bundle's data profile" in verdict.reason
    assert verdict.figures["baseline"] == "profile" and float(verdict.figures["js_divergence"]) > 0.5
    assert verdict.figures["top_class_share"] == 1.0


def test_without_a_profile_the_previous_versions_answers_are_the_baseline() -> None:
    judge = TrialJudge(CFG, mode=TrialMode.SERVE)
    verdict = feed(judge, 40, latency_ms=1.0, outputs=logits(2), ref_outputs=lambda i: logits(i % 4))
    assert verdict is not None and verdict.gate == "divergence"
    assert "previous version's answers on the same inputs" in verdict.reason


def test_shadow_disagreement_fails_even_when_the_distribution_matches() -> None:
    # Same class shares, different answer on every request: only a paired comparison sees it.
    judge = TrialJudge(
        TrialConfig(window_requests=100, min_requests=16, mode=TrialMode.SHADOW), mode=TrialMode.SHADOW
    )
    verdict = feed(
        judge, 40, latency_ms=1.0, outputs=lambda i: logits((i + 1) % 4), ref_outputs=lambda i: logits(i % 4)
    )
    assert verdict is not None and verdict.gate == "disagreement"
    assert "disagrees with the previous one on 100.0% of 16 answers" in verdict.reason


def test_a_good_version_passes_when_the_window_is_full() -> None:
    judge = TrialJudge(CFG, mode=TrialMode.SERVE, profile_distribution=[0.25] * 4)
    verdict = feed(
        judge,
        200,
        latency_ms=1.0,
        outputs=lambda i: logits(i % 4),
        ref_outputs=lambda i: logits(i % 4),
        ref_latency_ms=1.0,
    )
    assert verdict is not None and verdict.passed and judge.requests == 100
    assert verdict.reason == "every gate passed: the trial window was full"
    assert verdict.figures["js_divergence"] == 0.0 and verdict.figures["disagreement"] == 0.0


def test_thin_traffic_passes_on_time_but_says_what_was_not_judged() -> None:
    judge = TrialJudge(CFG, mode=TrialMode.SERVE)
    feed(judge, 3, latency_ms=1.0, outputs=logits(1))
    verdict = judge.finish("time")
    assert verdict.passed and verdict.figures["judged"] is False
    assert "the trial time was up; only 3 request(s)" in verdict.reason


def test_finish_early_judges_what_was_seen() -> None:
    cfg = TrialConfig(window_requests=100, min_requests=10)
    judge = TrialJudge(cfg, mode=TrialMode.SERVE, profile_distribution=[0.25] * 4)
    feed(judge, 12, latency_ms=1.0, outputs=logits(0))  # checks run every 8th request: none yet
    assert judge.verdict is None
    verdict = judge.finish("superseded")
    assert not verdict.passed and verdict.gate == "divergence"


def test_sampling_allowance_shrinks_with_the_answers_and_matches_chance() -> None:
    from edge_agent.gates import sampling_allowance

    assert sampling_allowance(10, 20) > 0.2 > sampling_allowance(10, 2_000)
    assert sampling_allowance(10, 40) == pytest.approx(sampling_allowance(10, 20) / 2)
    # Checked against chance: 20 answers drawn from the profile itself stray beyond the allowance
    # about 1 time in 100-1000 (the chi-squared approximation is loose at a few tens of answers; the
    # fixed limit the gate adds on top covers that).
    rng = np.random.default_rng(7)
    profile = np.full(10, 0.1)
    strays = [
        js_divergence(np.bincount(rng.choice(10, 20, p=profile), minlength=10), profile) for _ in range(2_000)
    ]
    assert np.mean(np.array(strays) > sampling_allowance(10, 20)) < 0.01


def test_a_good_version_on_few_answers_is_not_rolled_back_on_chance() -> None:
    """Twenty answers of a version that matches a ten-class profile: JS alone passes 0.2 often."""
    rng = np.random.default_rng(3)
    failed = 0
    for _ in range(200):
        judge = TrialJudge(CFG, mode=TrialMode.SERVE, profile_distribution=[0.1] * 10)
        answers = rng.choice(10, 24)
        verdict = feed(judge, 24, latency_ms=1.0, outputs=lambda i, a=answers: logits(int(a[i]), 10))
        failed += verdict is not None and not verdict.passed
    assert failed <= 2


def test_constant_answers_still_fail_over_the_allowance() -> None:
    judge = TrialJudge(CFG, mode=TrialMode.SERVE, profile_distribution=[0.1] * 10)
    verdict = feed(judge, 20, latency_ms=1.0, outputs=logits(3, 10))
    assert verdict is not None and verdict.gate == "divergence"
    assert "stray by chance" in verdict.reason

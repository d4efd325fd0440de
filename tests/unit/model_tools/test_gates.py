"""Gate policies and decisions: table-driven, no models needed (figures are given)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_tools.errors import GatePolicyError
from model_tools.gates import GatePolicy, Measured, judge

FP32 = Measured(accuracy=0.970, bytes=100_000, latency_ms={1: 0.100, 32: 2.000})


@pytest.mark.parametrize(
    ("measured", "baseline", "policy", "reasons"),
    [
        # within every limit
        (Measured(0.965, 30_000, {1: 0.05, 32: 0.8}), FP32, GatePolicy(), []),
        # exactly at the limits passes (1.0 point, 1.10x)
        (Measured(0.960, 30_000, {1: 0.110, 32: 2.2}), FP32, GatePolicy(), []),
        # a damaged variant: accuracy collapsed
        (
            Measured(0.120, 30_000, {1: 0.05, 32: 0.8}),
            FP32,
            GatePolicy(),
            ["85.00 points below fp32's 0.9700"],
        ),
        # slower at batch 1 only (dynamic int8 on a tiny MLP)
        (
            Measured(0.970, 30_000, {1: 0.137, 32: 1.9}),
            FP32,
            GatePolicy(),
            ["latency at batch 1 is 0.137 ms, 1.37x"],
        ),
        # microseconds on a tiny model: 1.5x slower, but by less than the noise floor
        (
            Measured(0.970, 30_000, {1: 0.0055, 32: 0.010}),
            Measured(0.970, 60_000, {1: 0.0040, 32: 0.010}),
            GatePolicy(),
            [],
        ),
        (
            Measured(0.970, 30_000, {1: 0.0055, 32: 0.010}),
            Measured(0.970, 60_000, {1: 0.0040, 32: 0.010}),
            GatePolicy(latency_noise_ms=0.0),
            ["latency at batch 1 is 0.0055 ms, 1.38x"],
        ),
        # the runtime's own baseline has no latency gate
        (Measured(0.970, 30_000, {1: 9.0, 32: 90.0}), None, GatePolicy(), []),
        # a batch size the policy wants but nobody measured
        (Measured(0.970, 30_000, {1: 0.1}), FP32, GatePolicy(), ["latency at batch 32 was not measured"]),
        (
            Measured(0.950, 30_000, {1: 0.1, 32: 2.0}),
            FP32,
            GatePolicy(max_accuracy_drop_points=3.0, min_accuracy=0.96),
            ["accuracy 0.9500 is below the floor 0.96"],
        ),
        (
            Measured(0.970, 60_000, {1: 0.1, 32: 2.0}),
            FP32,
            GatePolicy(max_bytes_ratio=0.5),
            ["60000 bytes is 0.60x fp32's 100000: expected at most 0.5x"],
        ),
        (
            Measured(0.970, 30_000, {1: 0.2}),
            FP32,
            GatePolicy(latency_batch_sizes=(1,), max_latency_increase_pct=100.0),
            [],
        ),
    ],
)
def test_judge(measured: Measured, baseline: Measured | None, policy: GatePolicy, reasons: list[str]) -> None:
    decision = judge("v", measured, reference=FP32, latency_baseline=baseline, policy=policy)
    assert decision.passed == (not reasons)
    assert len(decision.reasons) == len(reasons)
    for got, expected in zip(decision.reasons, reasons, strict=True):
        assert expected in got


def test_decision_records_the_checks() -> None:
    d = judge(
        "int8",
        Measured(0.96, 25_000, {1: 0.05, 32: 1.0}),
        reference=FP32,
        latency_baseline=FP32,
        policy=GatePolicy(),
    )
    assert d.to_dict() == {
        "passed": True,
        "reasons": [],
        "checks": {"accuracy_drop_points": 1.0, "latency_ratio_b1": 0.5, "latency_ratio_b32": 0.5},
    }


def test_nan_accuracy_fails() -> None:
    d = judge(
        "x",
        Measured(float("nan"), 1, {1: 0.1, 32: 2.0}),
        reference=FP32,
        latency_baseline=FP32,
        policy=GatePolicy(),
    )
    assert not d.passed


def test_defaults_are_the_issue_s_policy() -> None:
    p = GatePolicy()
    assert (p.max_accuracy_drop_points, p.max_latency_increase_pct, p.latency_batch_sizes) == (
        1.0,
        10.0,
        (1, 32),
    )


@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_policy_parses_from_toml_and_json(fmt: str) -> None:
    text = (
        "[gates]\nmax_accuracy_drop_points = 0.5\nlatency_batch_sizes = [32]\nmin_accuracy = 0.9\n"
        if fmt == "toml"
        else json.dumps({"max_accuracy_drop_points": 0.5, "latency_batch_sizes": [32], "min_accuracy": 0.9})
    )
    p = GatePolicy.parse(text, fmt=fmt)
    assert p == GatePolicy(max_accuracy_drop_points=0.5, latency_batch_sizes=(32,), min_accuracy=0.9)
    assert GatePolicy.from_mapping(p.to_dict()) == p


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        ("max_accuracy_drop = 1", "toml", r"unknown keys \['max_accuracy_drop'\]: expected some of"),
        ("max_accuracy_drop_points = 'one'", "toml", "max_accuracy_drop_points must be a number, got 'one'"),
        ("max_accuracy_drop_points = true", "toml", "must be a number, got True"),
        ("max_latency_increase_pct = -5", "toml", "max_latency_increase_pct must be >= 0, got -5"),
        ("min_accuracy = 1.5", "toml", "min_accuracy must be between 0 and 1, got 1.5"),
        (
            "latency_batch_sizes = 32",
            "toml",
            "latency_batch_sizes must be a list of positive integers, got 32",
        ),
        (
            "latency_batch_sizes = [0]",
            "toml",
            r"latency_batch_sizes must be a non-empty list of positive integers",
        ),
        ("latency_batch_sizes = []", "toml", "non-empty list"),
        ("gates = 3", "toml", r"\[gates\] must be a table, got int"),
        ("max_accuracy_drop_points = ", "toml", "gates.toml is not valid TOML"),
        ("{not json", "json", "gates.toml is not valid JSON"),
        ("[1, 2]", "json", "expected a table of gate settings, got list"),
    ],
)
def test_bad_policies_are_refused_with_the_key_named(text: str, fmt: str, message: str) -> None:
    with pytest.raises(GatePolicyError, match=message):
        GatePolicy.parse(text, fmt=fmt, source="gates.toml")


def test_load_picks_the_format_by_suffix(tmp_path: Path) -> None:
    (tmp_path / "g.json").write_text('{"max_latency_increase_pct": 20}')
    (tmp_path / "g.toml").write_text("max_latency_increase_pct = 30\n")
    assert GatePolicy.load(tmp_path / "g.json").max_latency_increase_pct == 20
    assert GatePolicy.load(tmp_path / "g.toml").max_latency_increase_pct == 30
    with pytest.raises(GatePolicyError, match="cannot read gate policy"):
        GatePolicy.load(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(GatePolicyError, match="not UTF-8"):
        GatePolicy.load(tmp_path / "bad.toml")

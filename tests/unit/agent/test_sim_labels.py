"""Labels of a simulated fleet: parsing --label and --label-mix, and sharing a mix out by device index."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from edge_agent.cli import main
from edge_agent.errors import ConfigError
from edge_agent.sim import Fleet
from edge_agent.sim_labels import LabelMix, parse_label, parse_label_mix


def test_a_mix_parses_per_key_in_the_order_given() -> None:
    mix = parse_label_mix("region=eu:40, region=us:60,tier=edge:100")
    assert mix == LabelMix((("region", (("eu", 40), ("us", 60))), ("tier", (("edge", 100),))))
    assert mix.keys == ("region", "tier")


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        (10, {"eu": 4, "us": 6}),
        (1, {"us": 1}),  # the larger remainder wins the only device
        (3, {"eu": 1, "us": 2}),
        (7, {"eu": 3, "us": 4}),  # 2.8 and 4.2: the remainder goes to eu
    ],
)
def test_counts_add_up_to_the_fleet(devices: int, expected: dict[str, int]) -> None:
    labels = parse_label_mix("region=eu:40,region=us:60").assign(devices)
    assert len(labels) == devices
    assert Counter(d["region"] for d in labels) == expected


def test_thirds_are_shared_by_the_order_given() -> None:
    labels = parse_label_mix("zone=a:33,zone=b:33,zone=c:34").assign(4)
    # 1.32, 1.32, 1.36: the fourth device goes to the largest remainder, c.
    assert [d["zone"] for d in labels] == ["a", "b", "c", "c"]


def test_assignment_is_by_index_and_reproducible() -> None:
    mix = parse_label_mix("region=eu:40,region=us:60,tier=edge:50,tier=core:50")
    first = mix.assign(10)
    assert first == parse_label_mix("region=eu:40,region=us:60,tier=edge:50,tier=core:50").assign(10)
    assert [d["region"] for d in first] == ["eu"] * 4 + ["us"] * 6
    assert [d["tier"] for d in first] == ["edge"] * 5 + ["core"] * 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "region=eu:40,region=us:50",
            r"shares of 'region' add up to 90: expected 100 \(region=eu:40, region=us:50\)",
        ),
        ("region=eu", r"expected KEY=VALUE:PERCENT"),
        ("eu:100", r"expected KEY=VALUE:PERCENT"),
        ("region=eu:forty,region=us:60", r"expected a whole percentage from 1 to 100, got 'forty'"),
        ("region=eu:0,region=us:100", r"whole percentage from 1 to 100, got '0'"),
        ("region=eu:101", r"whole percentage from 1 to 100, got '101'"),
        ("region=eu:50,region=eu:50", r"gives region=eu twice"),
        ("region=eu:100,,", r"empty item"),
        ("=eu:100", r"empty key"),
        ("region=:100", r"empty value"),
        ("region=e u:100", r"may not hold spaces"),
    ],
)
def test_a_bad_mix_says_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_label_mix(text)


def test_single_labels_parse_and_refuse_what_cannot_be_selected() -> None:
    assert parse_label("cohort=canary") == ("cohort", "canary")
    assert parse_label("note=") == ("note", "")
    with pytest.raises(ConfigError, match="expects KEY=VALUE, got 'canary'"):
        parse_label("canary")
    with pytest.raises(ConfigError, match="may not hold a comma"):
        parse_label("site=a,b")


def test_fleet_devices_carry_labels_mix_and_precision(tmp_path: Path) -> None:
    from edge_agent.sim_mix import parse_runtimes_mix

    fleet = Fleet(
        4,
        tmp_path,
        "lab",
        labels={"cohort": "canary"},
        label_mix=parse_label_mix("region=eu:50,region=us:50"),
        runtimes_mix=parse_runtimes_mix("onnxruntime@fp32,onnxruntime"),
        local_api_devices=0,
    )
    assert [dict(a.config.labels) for a in fleet.agents] == [
        {"cohort": "canary", "region": "eu", "precision": "fp32"},
        {"cohort": "canary", "region": "eu"},
        {"cohort": "canary", "region": "us", "precision": "fp32"},
        {"cohort": "canary", "region": "us"},
    ]


def _simulate(tmp_path: Path, *extra: str) -> list[str]:
    return ["simulate", "--fleet", "lab", "--state-root", str(tmp_path), *extra, "--check"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--label-mix", "region=eu:40,region=us:50"],
            "argument --label-mix: --label-mix shares of 'region'",
        ),
        (["--label", "canary"], "argument --label: --label expects KEY=VALUE, got 'canary'"),
        (
            ["--label", "region=eu", "--label-mix", "region=eu:100"],
            "label region is given by both --label and --label-mix",
        ),
    ],
)
def test_cli_bad_labels_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(_simulate(tmp_path, *extra))
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_good_labels_pass_the_check(tmp_path: Path) -> None:
    argv = _simulate(tmp_path, "--label", "cohort=canary", "--label-mix", "region=eu:40,region=us:60")
    assert main(argv) == 0

"""Deltas: both algorithms, the builder's choice, and refusing what is not the pinned image."""

from __future__ import annotations

import hashlib

import pytest

from firmware_images.build import build_bundle, build_delta
from firmware_images.delta import DeltaError, apply_delta, make_delta
from firmware_images.format import BundleKind
from firmware_images.samples import sample_bundle, sample_payload

BASE = sample_payload("sim-board", "1.0.0")
NEW = sample_payload("sim-board", "1.1.0")


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.mark.parametrize("algorithm", ["bsdiff4", "zstd-dict"])
def test_each_algorithm_round_trips_and_is_small(algorithm: str) -> None:
    chosen, patch = make_delta(BASE, NEW, algorithm)
    assert chosen == algorithm
    assert len(patch) < 0.1 * len(NEW)
    assert apply_delta(BASE, patch, algorithm, expected_sha256=sha(NEW), expected_length=len(NEW)) == NEW


def test_auto_keeps_the_smaller_patch() -> None:
    sizes = {a: len(make_delta(BASE, NEW, a)[1]) for a in ("bsdiff4", "zstd-dict")}
    chosen, patch = make_delta(BASE, NEW)
    assert len(patch) == min(sizes.values())
    assert sizes[chosen] == len(patch)


@pytest.mark.parametrize("algorithm", ["bsdiff4", "zstd-dict"])
def test_a_delta_on_the_wrong_base_is_refused(algorithm: str) -> None:
    _, patch = make_delta(BASE, NEW, algorithm)
    wrong_base = sample_payload("other-board", "1.0.0")
    with pytest.raises(DeltaError):
        apply_delta(wrong_base, patch, algorithm, expected_sha256=sha(NEW), expected_length=len(NEW))


@pytest.mark.parametrize("algorithm", ["bsdiff4", "zstd-dict"])
def test_a_delta_that_makes_another_length_is_refused_before_it_runs(algorithm: str) -> None:
    _, patch = make_delta(BASE, NEW, algorithm)
    with pytest.raises(DeltaError, match="expected 10"):
        apply_delta(BASE, patch, algorithm, expected_sha256=sha(NEW), expected_length=10)


def test_a_corrupt_patch_is_refused() -> None:
    _, patch = make_delta(BASE, NEW, "bsdiff4")
    broken = patch[:40] + bytes(len(patch) - 40)
    with pytest.raises(DeltaError):
        apply_delta(BASE, broken, "bsdiff4", expected_sha256=sha(NEW), expected_length=len(NEW))
    with pytest.raises(DeltaError, match="not a zstd frame"):
        apply_delta(BASE, b"garbage", "zstd-dict", expected_sha256=sha(NEW), expected_length=len(NEW))


def test_build_delta_pins_both_images() -> None:
    base, new = sample_bundle("sim-board", "1.0.0"), sample_bundle("sim-board", "1.1.0")
    delta = build_delta(base, new)
    assert delta is not None
    m = delta.manifest
    assert m.kind is BundleKind.DELTA
    assert (m.base_version, m.version) == ("1.0.0", "1.1.0")
    assert m.base_payload_sha256 == base.manifest.payload_sha256
    assert m.payload_sha256 == new.manifest.payload_sha256
    assert delta.length < 0.1 * new.length
    assert (
        apply_delta(
            base.payload,
            delta.payload,
            m.algorithm,
            expected_sha256=m.payload_sha256,
            expected_length=m.payload_length,
        )
        == new.payload
    )


def test_build_delta_refuses_other_hardware_and_older_versions() -> None:
    a = sample_bundle("sim-board", "1.0.0")
    with pytest.raises(DeltaError, match="same image name and hardware"):
        build_delta(a, sample_bundle("other-board", "1.0.0"))
    with pytest.raises(DeltaError, match="expected a newer version"):
        build_delta(sample_bundle("sim-board", "1.1.0"), a)


def test_no_delta_when_it_would_not_pay_off() -> None:
    a = build_bundle(b"a" * 1000, name="fw", version="1.0.0", hardware_id="b")
    b = build_bundle(bytes(range(256)) * 4, name="fw", version="2.0.0", hardware_id="b")
    assert build_delta(a, b, max_ratio=0.01) is None

"""The committed sample images are what the generator makes, and make a small delta."""

from __future__ import annotations

from pathlib import Path

from firmware_images.build import build_delta
from firmware_images.samples import SAMPLE_DIR, SAMPLES, build_samples, sample_bundle


def test_committed_samples_are_reproducible(tmp_path: Path) -> None:
    for path in build_samples(tmp_path):
        assert path.read_bytes() == (SAMPLE_DIR / path.name).read_bytes(), path.name


def test_samples_are_tiny_and_one_percent_apart() -> None:
    assert len(SAMPLES) == 3
    for image in SAMPLES:
        bundle = sample_bundle(image.hardware_id, image.version)
        assert bundle.manifest.hardware_id == image.hardware_id
        assert bundle.length < 64 * 1024
    old, new = sample_bundle("sim-board", "1.0.0"), sample_bundle("sim-board", "1.1.0")
    changed = sum(x != y for x, y in zip(old.payload, new.payload, strict=True))
    assert 0.005 * len(new.payload) < changed <= 0.011 * len(new.payload)
    delta = build_delta(old, new)
    assert delta is not None
    assert delta.length <= 0.10 * new.length

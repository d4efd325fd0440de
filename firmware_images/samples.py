"""Three tiny sample firmware images for tests, the demo and the benchmark.

    sim-board   1.0.0    the image simulated devices start on
    sim-board   1.1.0    1.0.0 with about 1% of its bytes changed (a delta is ~1-2% of it)
    other-board 1.0.0    an image for hardware no simulated device has

The committed bundles under ``firmware_images/samples/`` are what :func:`build_samples`
makes; the payloads come from a counter-mode sha256 stream, so they are the same bytes on
every machine and Python version (a test holds that).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from firmware_images.build import Bundle, build_bundle, load_bundle

__all__ = ["SAMPLES", "SAMPLE_DIR", "SampleImage", "build_samples", "sample_bundle", "sample_payload"]

SAMPLE_DIR = Path(__file__).resolve().parent / "samples"
SAMPLE_NAME = "edgefleet-fw"
PAYLOAD_BYTES = 32 * 1024


@dataclass(frozen=True, slots=True)
class SampleImage:
    hardware_id: str
    version: str

    @property
    def file_name(self) -> str:
        return f"{SAMPLE_NAME}-{self.hardware_id}-{self.version}.efw"


SAMPLES = (
    SampleImage("sim-board", "1.0.0"),
    SampleImage("sim-board", "1.1.0"),
    SampleImage("other-board", "1.0.0"),
)


def _stream(seed: str, n: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


def _image(seed: str, n: int) -> bytearray:
    """Firmware-like bytes: runs of code-like noise between runs of padding, as real images have."""
    noise = _stream(seed, n)
    image = bytearray()
    i = 0
    while len(image) < n:
        kind, length = noise[i % n], 64 + noise[(i + 1) % n] * 2
        image += bytes([kind & 0x07]) * length if kind & 1 else noise[i : i + length]
        i += length
    return image[:n]


def sample_payload(hardware_id: str, version: str) -> bytes:
    header = f"EDGEFLEET SAMPLE FIRMWARE {hardware_id} {version}\n".encode()
    body = _image(f"edgefleet-sample:{hardware_id}", PAYLOAD_BYTES - len(header))
    if version != "1.0.0":
        # A new version changes ~1% of the bytes, in scattered 16-byte runs.
        patch = _stream(f"edgefleet-sample:{hardware_id}:{version}", PAYLOAD_BYTES)
        for k in range(PAYLOAD_BYTES // 100 // 16):
            at = int.from_bytes(patch[4 * k : 4 * k + 4], "big") % (len(body) - 16)
            body[at : at + 16] = patch[1024 + 16 * k : 1024 + 16 * k + 16]
    return header + bytes(body)


def sample_bundle(hardware_id: str = "sim-board", version: str = "1.0.0") -> Bundle:
    """A sample bundle read from the committed file."""
    image = SampleImage(hardware_id, version)
    if image not in SAMPLES:
        raise KeyError(f"no sample image {hardware_id} {version}: expected one of {SAMPLES}")
    return load_bundle(SAMPLE_DIR / image.file_name)


def build_samples(out_dir: Path = SAMPLE_DIR) -> list[Path]:
    """(Re)write the sample bundles; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for image in SAMPLES:
        bundle = build_bundle(
            sample_payload(image.hardware_id, image.version),
            name=SAMPLE_NAME,
            version=image.version,
            hardware_id=image.hardware_id,
        )
        written.append(bundle.write(out_dir / image.file_name))
    return written


if __name__ == "__main__":
    for path in build_samples():
        print(path)

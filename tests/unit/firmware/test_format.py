"""The bundle format: manifests, the container, version order."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from firmware_images.build import build_bundle
from firmware_images.format import (
    MAX_MANIFEST_BYTES,
    BundleError,
    BundleKind,
    Manifest,
    check_matches_custom,
    compare_versions,
    iter_payload,
    read_manifest,
    read_payload,
    write_bundle,
)

PAYLOAD = b"firmware image bytes " * 100


def bundle_bytes() -> bytes:
    return build_bundle(PAYLOAD, name="fw", version="1.2.3", hardware_id="board-x").data


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    b = build_bundle(PAYLOAD, name="fw", version="1.2.3", hardware_id="board-x", min_agent_version="0.2.0")
    path = write_bundle(tmp_path / "fw.efw", b.manifest, PAYLOAD)
    manifest, payload = read_payload(path)
    assert payload == PAYLOAD
    assert manifest == b.manifest
    assert manifest.kind is BundleKind.FULL
    assert manifest.min_agent_version == "0.2.0"
    assert path.read_bytes() == b.data


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (3, "truncated bundle: 3 header bytes"),
        (12, "truncated bundle: manifest has"),
        (-1, "partial bundle: payload ends 1 bytes short"),
    ],
)
def test_a_partial_bundle_is_refused(cut: int, message: str) -> None:
    f = io.BytesIO(bundle_bytes()[:cut])
    with pytest.raises(BundleError, match=message):
        manifest = read_manifest(f)
        b"".join(iter_payload(f, manifest))


def test_extra_or_changed_payload_bytes_are_refused() -> None:
    data = bundle_bytes()
    f = io.BytesIO(data + b"x")
    with pytest.raises(BundleError, match="bytes after the payload"):
        b"".join(iter_payload(f, read_manifest(f)))
    changed = bytearray(data)
    changed[-1] ^= 0xFF
    f = io.BytesIO(bytes(changed))
    with pytest.raises(BundleError, match="payload sha256 mismatch"):
        b"".join(iter_payload(f, read_manifest(f)))


def test_bad_magic_and_oversized_manifest_are_refused() -> None:
    with pytest.raises(BundleError, match="not a firmware bundle"):
        read_manifest(io.BytesIO(b"ELF\x7f" + bundle_bytes()[4:]))
    huge = b"EFFW\x01\x00" + (MAX_MANIFEST_BYTES + 1).to_bytes(4, "big")
    with pytest.raises(BundleError, match="manifest claims"):
        read_manifest(io.BytesIO(huge))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "../etc", "invalid name"),
        ("hardware_id", "board x", "invalid hardware id"),
        ("version", "one", "invalid version"),
        ("payload_sha256", "AB" * 32, "invalid payload sha256"),
        ("payload_length", -1, "invalid payload length"),
    ],
)
def test_manifest_fields_are_validated(field: str, value: object, message: str) -> None:
    data = build_bundle(PAYLOAD, name="fw", version="1.0.0", hardware_id="b").manifest.to_dict()
    data[field] = value
    with pytest.raises(BundleError, match=message):
        Manifest.from_dict(data)


def test_unknown_manifest_fields_are_refused() -> None:
    data = build_bundle(PAYLOAD, name="fw", version="1.0.0", hardware_id="b").manifest.to_dict()
    data["run_me"] = "rm -rf /"
    with pytest.raises(BundleError, match="unknown fields"):
        Manifest.from_dict(data)


def test_manifest_must_match_the_signed_custom_fields() -> None:
    manifest = build_bundle(PAYLOAD, name="fw", version="1.0.0", hardware_id="b").manifest
    check_matches_custom(manifest, manifest.custom())
    other = {**manifest.custom(), "hardware_id": "other"}
    with pytest.raises(BundleError, match="hardware_id='b' differs from the signed target metadata"):
        check_matches_custom(manifest, other)
    with pytest.raises(BundleError, match="no custom fields"):
        check_matches_custom(manifest, None)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.0.0", "1.0.0", 0),
        ("1.0", "1.0.0", 0),
        ("1.2.0", "1.10.0", -1),
        ("2.0.0", "1.99.99", 1),
        ("1.2.0-rc1", "1.2.0", -1),
        ("1.2.0+build5", "1.2.0", 0),
    ],
)
def test_version_order(a: str, b: str, expected: int) -> None:
    assert compare_versions(a, b) == expected


def test_custom_fields_name_the_target_kind() -> None:
    full = build_bundle(PAYLOAD, name="fw", version="1.0.0", hardware_id="b").manifest
    assert full.custom()["kind"] == "firmware"
    assert full.custom()["hardware_id"] == "b"

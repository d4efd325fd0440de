"""Artifact store: only verified bytes get in, atomically; stored bytes are checked again before use."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.errors import DigestMismatchError, LengthMismatchError, StoreError
from edge_agent.store import ArtifactStore
from tests.unit.agent.fakes import ref_for

DATA = b"model bytes " * 100


def stage(store: ArtifactStore, sha256: str, data: bytes) -> None:
    store.partial_path(sha256).write_bytes(data)


def test_a_verified_partial_is_installed_under_its_digest(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    ref = ref_for(DATA)
    stage(store, ref.sha256, DATA)
    path = store.install_partial(ref)
    assert path == tmp_path / "sha256" / ref.sha256
    assert path.read_bytes() == DATA
    assert not store.partial_path(ref.sha256).exists()
    assert store.has(ref.sha256)
    assert store.verified_path(ref) == path


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (DATA[:-10], LengthMismatchError, f"length mismatch (truncated): expected {len(DATA)} bytes, got "),
        (DATA + b"x", LengthMismatchError, "length mismatch (too long)"),
        (DATA[:-1] + b"?", DigestMismatchError, "sha256 mismatch: expected "),
    ],
)
def test_wrong_bytes_are_refused_and_the_partial_deleted(
    tmp_path: Path, data: bytes, error: type[Exception], message: str
) -> None:
    store = ArtifactStore(tmp_path)
    ref = ref_for(DATA)
    stage(store, ref.sha256, data)
    with pytest.raises(error) as info:
        store.install_partial(ref)
    assert message in str(info.value)
    assert not store.has(ref.sha256)
    assert not store.partial_path(ref.sha256).exists()


def test_digest_mismatch_names_both_digests(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    ref = ref_for(DATA)
    other = DATA[:-1] + b"?"
    stage(store, ref.sha256, other)
    with pytest.raises(DigestMismatchError) as info:
        store.install_partial(ref)
    assert ref.sha256 in str(info.value)
    assert ref_for(other).sha256 in str(info.value)


def test_a_stored_artifact_that_changed_on_disk_fails_verification(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    ref = ref_for(DATA)
    stage(store, ref.sha256, DATA)
    path = store.install_partial(ref)
    path.write_bytes(DATA[:-1] + b"!")
    with pytest.raises(DigestMismatchError):
        store.verified_path(ref)


def test_missing_artifact_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is not in the store"):
        ArtifactStore(tmp_path).verified_path(ref_for(DATA))


@pytest.mark.parametrize(
    "address",
    ["../../etc/passwd", "A" * 64, "a" * 63, "g" * 64, "/" + "a" * 63, "a" * 64 + "/x", ""],
)
def test_addresses_must_be_strict_lowercase_hex(tmp_path: Path, address: str) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(StoreError, match="expected 64 lowercase hex digits"):
        store.path_for(address)
    with pytest.raises(StoreError):
        store.partial_path(address)


def test_partial_size_reports_bytes_held(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    sha = ref_for(DATA).sha256
    assert store.partial_size(sha) == 0
    stage(store, sha, DATA[:100])
    assert store.partial_size(sha) == 100


def test_prune_keeps_only_what_is_named(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    keep, drop = ref_for(b"keep me"), ref_for(b"drop me")
    for ref, data in ((keep, b"keep me"), (drop, b"drop me")):
        stage(store, ref.sha256, data)
        store.install_partial(ref)
    stage(store, ref_for(b"half").sha256, b"ha")
    removed = store.prune({keep.sha256})
    assert sorted(removed) == sorted([drop.sha256, ref_for(b"half").sha256 + ".part"])
    assert store.has(keep.sha256) and not store.has(drop.sha256)

"""Artifact store: content addressing, atomic writes, limits, and digests that cannot escape the root."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from cloud.artifacts import ArtifactNotFoundError, ArtifactStore, check_sha256
from cloud.errors import InvalidArtifactError, InvalidInputError, TooLargeError


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leftovers(store: ArtifactStore) -> list[Path]:
    return list(store.tmp_dir.iterdir())


def test_put_stream_stores_by_content(store: ArtifactStore) -> None:
    data = b"model bytes" * 1000
    info = store.put_stream(io.BytesIO(data))
    assert info.sha256 == _sha(data) and info.length == len(data)
    assert store.path(info.sha256) == store.root / "sha256" / info.sha256[:2] / info.sha256
    assert store.exists(info.sha256)
    assert store.stat(info.sha256) == info
    with store.open(info.sha256) as f:
        assert f.read() == data
    assert store.verify(info.sha256)
    assert _leftovers(store) == []


def test_same_content_twice_is_one_artifact(store: ArtifactStore) -> None:
    a = store.put_stream([b"abc", b"def"])
    b = store.put_bytes(b"abcdef")
    assert a == b
    assert len(list((store.root / "sha256").rglob("*"))) == 2  # one fan-out folder, one file


def test_max_length_aborts_and_leaves_nothing(store: ArtifactStore) -> None:
    with pytest.raises(TooLargeError, match="expected at most 10 bytes"):
        store.put_stream([b"123456", b"789012"], max_length=10)
    assert _leftovers(store) == []
    assert not store.exists(_sha(b"123456789012"))


def test_exactly_max_length_is_accepted(store: ArtifactStore) -> None:
    assert store.put_stream([b"0123456789"], max_length=10).length == 10


def test_truncated_stream_is_refused(store: ArtifactStore) -> None:
    data = b"x" * 100
    with pytest.raises(InvalidArtifactError, match="expected 100 bytes, got 60"):
        store.put_stream([data[:60]], expected_length=100, expected_sha256=_sha(data))
    assert not store.exists(_sha(data)) and not store.exists(_sha(data[:60]))
    assert _leftovers(store) == []


def test_wrong_digest_is_refused(store: ArtifactStore) -> None:
    with pytest.raises(InvalidArtifactError, match="sha256 mismatch"):
        store.put_stream([b"abc"], expected_sha256=_sha(b"abd"))
    assert not store.exists(_sha(b"abc"))


def test_verify_detects_a_file_changed_on_disk(store: ArtifactStore) -> None:
    info = store.put_bytes(b"0123456789")
    path = store.path(info.sha256)
    path.chmod(0o644)
    path.write_bytes(b"01234")  # truncated behind the store's back
    assert not store.verify(info.sha256)
    assert store.stat(info.sha256).length == 5


@pytest.mark.parametrize(
    "bad",
    [
        "../../../../etc/passwd",
        "a" * 63,
        "a" * 65,
        "A" * 64,
        "g" * 64,
        "../" + "a" * 61,
        "a" * 62 + "/.",
        "",
    ],
)
def test_digests_that_are_not_64_lowercase_hex_are_refused(store: ArtifactStore, bad: str) -> None:
    with pytest.raises(InvalidInputError, match="expected 64 lowercase hex digits"):
        check_sha256(bad)
    for op in (store.path, store.exists, store.stat, store.open, store.delete):
        with pytest.raises(InvalidInputError):
            op(bad)


def test_unknown_artifact(store: ArtifactStore) -> None:
    missing = _sha(b"never stored")
    assert not store.exists(missing)
    with pytest.raises(ArtifactNotFoundError, match=missing):
        store.stat(missing)
    with pytest.raises(ArtifactNotFoundError):
        store.open(missing)
    assert store.delete(missing) is False


def test_delete_removes_file_and_empty_fan_out(store: ArtifactStore) -> None:
    info = store.put_bytes(b"bye")
    assert store.delete(info.sha256)
    assert not store.exists(info.sha256)
    assert not store.path(info.sha256).parent.exists()


def test_writer_discards_on_error(store: ArtifactStore) -> None:
    with pytest.raises(RuntimeError, match="boom"), store.writer() as w:
        w.write(b"partial")
        raise RuntimeError("boom")
    assert _leftovers(store) == []

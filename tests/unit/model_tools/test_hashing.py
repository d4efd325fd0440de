"""Content hashes: files, bytes and arrays (pure functions, no fakes needed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from model_tools.errors import ConfigError
from model_tools.hashing import array_digest, sha256_bytes, sha256_file


def test_sha256_bytes_matches_the_standard_test_vector() -> None:
    assert sha256_bytes(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_sha256_file_is_the_same_for_any_chunk_size(tmp_path: Path, chunk: int) -> None:
    data = bytes(range(256)) * 41 + b"tail"
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path, chunk=chunk) == hashlib.sha256(data).hexdigest()


def test_sha256_file_of_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert sha256_file(path) == hashlib.sha256(b"").hexdigest()


def test_sha256_file_refuses_a_non_positive_chunk(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"x")
    with pytest.raises(ConfigError, match="positive"):
        sha256_file(path, chunk=0)


def test_array_digest_is_stable_for_equal_arrays() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert array_digest(a, np.arange(3)) == array_digest(a.copy(), np.arange(3))


def test_array_digest_changes_when_one_value_changes() -> None:
    a = np.zeros((4, 4), dtype=np.float32)
    b = a.copy()
    b[2, 3] = 1e-6
    assert array_digest(a) != array_digest(b)


def test_array_digest_depends_on_argument_order() -> None:
    a, b = np.arange(3), np.arange(3, 6)
    assert array_digest(a, b) != array_digest(b, a)


def test_array_digest_depends_on_dtype_and_shape_not_only_bytes() -> None:
    a = np.arange(6, dtype=np.int32)
    assert array_digest(a) != array_digest(a.view(np.float32))
    assert array_digest(a) != array_digest(a.reshape(2, 3))


def test_array_digest_keeps_array_boundaries() -> None:
    a, b = np.arange(4), np.arange(4, 8)
    assert array_digest(a, b) != array_digest(np.concatenate([a, b]))
    assert array_digest(a, b) != array_digest(np.arange(2), np.arange(2, 8))


def test_array_digest_hashes_values_whatever_the_memory_layout() -> None:
    a = np.arange(20, dtype=np.float64).reshape(4, 5)
    big_endian = a.astype(">f8")
    fortran = np.asfortranarray(a)
    wide = np.zeros((4, 10))
    wide[:, ::2] = a
    strided = wide[:, ::2]
    assert array_digest(a) == array_digest(big_endian) == array_digest(fortran) == array_digest(strided)


def test_array_digest_of_no_arrays_differs_from_an_empty_array() -> None:
    assert array_digest() != array_digest(np.array([], dtype=np.float32))


def test_array_digest_refuses_object_arrays_and_non_arrays() -> None:
    with pytest.raises(ConfigError, match="object dtype"):
        array_digest(np.array([1, "a"], dtype=object))
    with pytest.raises(ConfigError, match="expected a numpy array, got list"):
        array_digest([1, 2, 3])  # type: ignore[arg-type]

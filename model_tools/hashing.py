"""Content hashes for artifacts and data sets (light: numpy and hashlib only).

Artifacts are pinned by sha256 in signed metadata, and a trained model records
the hash of the data it saw; both are computed here so the hub and the device
agree byte for byte on what a hash covers.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import numpy as np

from model_tools.errors import ConfigError

__all__ = ["DEFAULT_CHUNK", "array_digest", "sha256_bytes", "sha256_file"]

DEFAULT_CHUNK = 1 << 20


def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk: int = DEFAULT_CHUNK) -> str:
    """Hex sha256 of a file, read ``chunk`` bytes at a time so large artifacts need little memory."""
    if chunk <= 0:
        raise ConfigError(f"chunk must be a positive number of bytes, got {chunk}")
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def array_digest(*arrays: np.ndarray) -> str:
    """Hex sha256 over the dtype, shape and bytes of each array, in argument order.

    Dtype and shape are hashed with the bytes so that the same buffer read as
    another type or shape gives another digest, and every field is length
    prefixed so that no two different argument lists share one byte stream.
    Arrays are hashed as little-endian C-ordered data: the digest describes the
    values, not how one machine happens to lay them out in memory.
    """
    digest = hashlib.sha256()
    digest.update(struct.pack("<Q", len(arrays)))
    for index, array in enumerate(arrays):
        if not isinstance(array, np.ndarray):
            raise ConfigError(
                f"array_digest argument {index}: expected a numpy array, got {type(array).__name__}"
            )
        if array.dtype.hasobject:
            # Object arrays hold pointers: their bytes change from run to run.
            raise ConfigError(f"array_digest argument {index}: object dtype cannot be hashed by content")
        canonical = np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")
        header = f"{canonical.dtype.str}|{','.join(str(d) for d in canonical.shape)}".encode()
        digest.update(struct.pack("<Q", len(header)))
        digest.update(header)
        digest.update(struct.pack("<Q", canonical.nbytes))
        digest.update(canonical.tobytes())
    return digest.hexdigest()

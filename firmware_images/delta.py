"""Binary deltas between firmware images: bsdiff4, or zstd with the base image as dictionary.

Measured on a 1 MiB image with 1% of its bytes changed in scattered 16-byte runs (see
``bench/ota.py`` and docs/benchmarks.md): both make a patch of about 1.2% of the image;
zstd applies about ten times faster and builds a little faster, bsdiff4 wins on some
inputs by a few percent. So the builder makes both and keeps the smaller
(``algorithm="auto"``), and the device applies either. Both libraries are imported only
when used: a device that never receives a delta needs neither.

Applying refuses any result that is not exactly the pinned image (length and sha256),
and never lets a patch make more than the pinned length: the patch is signed, but a
device does not bet its memory on that.
"""

from __future__ import annotations

import hashlib
import struct

from firmware_images.format import BundleError, DeltaAlgorithm

__all__ = ["DeltaError", "apply_delta", "make_delta"]

# zstd's window must cover the whole base image for it to act as a dictionary.
_MIN_WINDOW_LOG = 20
_MAX_WINDOW_LOG = 30  # 1 GiB: far above any image an edge device takes
_BSDIFF_MAGIC = b"BSDIFF40"


class DeltaError(BundleError):
    """A delta could not be made, or does not turn the base image into the pinned one."""


def _window_log(size: int) -> int:
    return min(_MAX_WINDOW_LOG, max(_MIN_WINDOW_LOG, size.bit_length() + 1))


def _zstd_make(base: bytes, new: bytes, level: int) -> bytes:
    import zstandard

    dictionary = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    params = zstandard.ZstdCompressionParameters.from_level(
        level, window_log=_window_log(max(len(base), len(new))), enable_ldm=True
    )
    return zstandard.ZstdCompressor(dict_data=dictionary, compression_params=params).compress(new)


def _zstd_apply(base: bytes, patch: bytes, expected_length: int) -> bytes:
    import zstandard

    dictionary = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    decompressor = zstandard.ZstdDecompressor(
        dict_data=dictionary, max_window_size=1 << _window_log(max(len(base), expected_length))
    )
    try:
        params = zstandard.get_frame_parameters(patch)
    except zstandard.ZstdError as e:
        raise DeltaError(f"zstd delta is not a zstd frame: {e}") from e
    if params.content_size != expected_length:
        raise DeltaError(f"zstd delta makes {params.content_size} bytes: expected {expected_length}")
    try:
        return decompressor.decompress(patch, max_output_size=expected_length)
    except zstandard.ZstdError as e:
        raise DeltaError(f"zstd delta does not apply to this base image: {e}") from e


def _bsdiff_apply(base: bytes, patch: bytes, expected_length: int) -> bytes:
    import bsdiff4  # type: ignore[import-untyped]

    if len(patch) < 32 or patch[:8] != _BSDIFF_MAGIC:
        raise DeltaError("bsdiff4 delta has no BSDIFF40 header")
    # The header's third length is the size of the result; check it before bsdiff4 allocates it.
    # bsdiff stores sign and magnitude, little-endian; a negative length is nonsense.
    (raw_len,) = struct.unpack("<Q", patch[24:32])
    new_length = -1 if raw_len >> 63 else raw_len
    if new_length != expected_length:
        raise DeltaError(f"bsdiff4 delta makes {new_length} bytes: expected {expected_length}")
    try:
        return bytes(bsdiff4.patch(base, patch))
    except (ValueError, OSError) as e:  # bz2 raises OSError on corrupt data
        raise DeltaError(f"bsdiff4 delta does not apply to this base image: {e}") from e


def make_delta(
    base: bytes, new: bytes, algorithm: str = "auto", *, zstd_level: int = 19
) -> tuple[str, bytes]:
    """A patch from ``base`` to ``new``: ``(algorithm, patch)``; "auto" keeps the smaller of both."""
    if algorithm == "auto":
        made = [make_delta(base, new, a.value, zstd_level=zstd_level) for a in DeltaAlgorithm]
        return min(made, key=lambda pair: len(pair[1]))
    if algorithm == DeltaAlgorithm.BSDIFF4:
        import bsdiff4

        return algorithm, bytes(bsdiff4.diff(base, new))
    if algorithm == DeltaAlgorithm.ZSTD_DICT:
        return algorithm, _zstd_make(base, new, zstd_level)
    raise DeltaError(
        f"unknown delta algorithm {algorithm!r}: expected auto, {', '.join(a.value for a in DeltaAlgorithm)}"
    )


def apply_delta(
    base: bytes, patch: bytes, algorithm: str, *, expected_sha256: str, expected_length: int
) -> bytes:
    """The image ``patch`` makes from ``base``; DeltaError unless it is exactly the pinned one."""
    if algorithm == DeltaAlgorithm.BSDIFF4:
        result = _bsdiff_apply(base, patch, expected_length)
    elif algorithm == DeltaAlgorithm.ZSTD_DICT:
        result = _zstd_apply(base, patch, expected_length)
    else:
        raise DeltaError(f"unknown delta algorithm {algorithm!r}")
    digest = hashlib.sha256(result).hexdigest()
    if len(result) != expected_length or digest != expected_sha256:
        raise DeltaError(
            f"delta result is not the pinned image: expected {expected_length} bytes with sha256 "
            f"{expected_sha256}, got {len(result)} bytes with sha256 {digest}"
        )
    return result

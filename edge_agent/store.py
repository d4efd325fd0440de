"""The device's content-addressed artifact store.

    {root}/sha256/<hex>          verified artifacts, named by their digest
    {root}/partial/<hex>.part    downloads in progress (resumed from their length)

A file becomes visible under ``sha256/`` only after its exact length and sha256
match what the desired state pinned, through an atomic rename; an artifact read
back later is verified again before use, because a disk can rot and a person can
edit files. Addresses are strict lowercase hex, so no desired state can steer a
path outside the store.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from edge_agent.errors import DigestMismatchError, LengthMismatchError, StoreError
from edgefleet_proto.v1 import common_pb2
from model_tools.atomic import fsync_dir
from model_tools.hashing import sha256_file

__all__ = ["ArtifactStore", "check_sha256", "fsync_dir"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def check_sha256(value: str) -> str:
    """Return ``value`` if it is 64 lowercase hex digits; raise :class:`StoreError` otherwise."""
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise StoreError(f"invalid sha256 {value!r}: expected 64 lowercase hex digits")
    return value


class ArtifactStore:
    """Artifacts on the device, addressed by sha256."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._final = root / "sha256"
        self._partial = root / "partial"
        try:
            self._final.mkdir(parents=True, exist_ok=True)
            self._partial.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create artifact store under {root}: {e.strerror}") from e

    def path_for(self, sha256: str) -> Path:
        return self._final / check_sha256(sha256)

    def partial_path(self, sha256: str) -> Path:
        return self._partial / f"{check_sha256(sha256)}.part"

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def partial_size(self, sha256: str) -> int:
        """Bytes already downloaded for ``sha256`` (0 when no download was started)."""
        try:
            return self.partial_path(sha256).stat().st_size
        except FileNotFoundError:
            return 0

    def discard_partial(self, sha256: str) -> None:
        self.partial_path(sha256).unlink(missing_ok=True)

    def discard(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)

    @staticmethod
    def verify_file(path: Path, ref: common_pb2.ModelRef) -> None:
        """Check exact length, then sha256; raise a :class:`VerifyError` saying what differs."""
        check_sha256(ref.sha256)
        try:
            size = path.stat().st_size
        except OSError as e:
            raise StoreError(f"cannot read artifact {path}: {e.strerror}") from e
        if size != ref.length:
            what = "truncated" if size < ref.length else "too long"
            raise LengthMismatchError(f"length mismatch ({what}): expected {ref.length} bytes, got {size}")
        try:
            digest = sha256_file(path)
        except OSError as e:
            raise StoreError(f"cannot read artifact {path}: {e.strerror}") from e
        if digest != ref.sha256:
            raise DigestMismatchError(f"sha256 mismatch: expected {ref.sha256} got {digest}")

    def install_partial(self, ref: common_pb2.ModelRef) -> Path:
        """Verify the finished download for ``ref`` (length, sha256) and move it into the store.

        A partial that fails verification is deleted: its bytes are wrong somewhere, so
        resuming from its length would only keep the damage.
        """
        part = self.partial_path(ref.sha256)
        try:
            self.verify_file(part, ref)
        except StoreError:
            part.unlink(missing_ok=True)
            raise
        return self.promote_partial(ref)

    def promote_partial(self, ref: common_pb2.ModelRef) -> Path:
        """Move a download that the caller's verifiers accepted into the store, atomically."""
        part = self.partial_path(ref.sha256)
        final = self.path_for(ref.sha256)
        try:
            # The fetcher fsyncs what it wrote; this covers a partial left by an older run.
            with part.open("rb+") as f:
                os.fsync(f.fileno())
            part.replace(final)
            fsync_dir(self._final)
        except OSError as e:
            raise StoreError(f"cannot install artifact {ref.sha256} into {self._final}: {e.strerror}") from e
        return final

    def verified_path(self, ref: common_pb2.ModelRef) -> Path:
        """Path of the stored artifact for ``ref``, verified again now; raises if missing or damaged."""
        path = self.path_for(ref.sha256)
        if not path.is_file():
            raise StoreError(f"artifact {ref.sha256} is not in the store")
        self.verify_file(path, ref)
        return path

    def prune(self, keep: set[str]) -> list[str]:
        """Delete stored artifacts and partials whose digest is not in ``keep``; return what went."""
        removed: list[str] = []
        for folder, suffix in ((self._final, ""), (self._partial, ".part")):
            for entry in folder.iterdir():
                digest = entry.name.removesuffix(suffix) if suffix else entry.name
                if digest in keep:
                    continue
                with contextlib.suppress(OSError):
                    entry.unlink()
                    removed.append(entry.name)
        return removed

"""Two firmware slots on disk, written one at a time and verified before anyone trusts them.

    {root}/slots/a/image.bin     the image in slot a
    {root}/slots/b/image.bin
    {root}/bootctl.json          which slot boots (see bootctl)
    {root}/partial/              bundles being downloaded

A slot is written through a temporary file and an atomic rename; the running slot is
never opened for writing, so no failed install can damage what runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from edge_agent.errors import StoreError, VerifyError
from edge_agent.firmware.bootctl import SlotImage, SlotName
from edge_agent.store import fsync_dir

__all__ = ["SlotStore"]

_CHUNK = 1024 * 1024


class SlotStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.partial_dir = root / "partial"
        try:
            for slot in ("a", "b"):
                (root / "slots" / slot).mkdir(parents=True, exist_ok=True)
            self.partial_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create firmware slots under {root}: {e.strerror}") from e

    def image_path(self, slot: SlotName) -> Path:
        return self.root / "slots" / slot / "image.bin"

    def write(self, slot: SlotName, chunks: Iterable[bytes], image: SlotImage) -> None:
        """Write an image into ``slot``; VerifyError (nothing left behind) unless it is ``image``."""
        folder = self.image_path(slot).parent
        digest = hashlib.sha256()
        length = 0
        try:
            fd, tmp = tempfile.mkstemp(prefix="image.", suffix=".tmp", dir=folder)
        except OSError as e:
            raise StoreError(f"cannot write firmware slot {slot}: {e.strerror}") from e
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                    digest.update(chunk)
                    length += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            if length != image.payload_length or digest.hexdigest() != image.payload_sha256:
                raise VerifyError(
                    f"firmware image for slot {slot} is not the pinned one: expected {image.payload_length} "
                    f"bytes with sha256 {image.payload_sha256}, got {length} bytes with {digest.hexdigest()}"
                )
            Path(tmp).replace(self.image_path(slot))
            fsync_dir(folder)
        except OSError as e:
            raise StoreError(f"cannot write firmware slot {slot}: {e.strerror}") from e
        finally:
            with contextlib.suppress(OSError):
                Path(tmp).unlink()

    def read(self, slot: SlotName, image: SlotImage) -> bytes:
        """The verified image in ``slot`` (for patching); VerifyError when it is not ``image``."""
        try:
            data = self.image_path(slot).read_bytes()
        except OSError as e:
            raise VerifyError(f"firmware slot {slot} cannot be read: {e.strerror}") from e
        self._check(slot, image, len(data), hashlib.sha256(data).hexdigest())
        return data

    def verify(self, slot: SlotName, image: SlotImage) -> None:
        digest = hashlib.sha256()
        length = 0
        try:
            with self.image_path(slot).open("rb") as f:
                for chunk in iter(lambda: f.read(_CHUNK), b""):
                    digest.update(chunk)
                    length += len(chunk)
        except OSError as e:
            raise VerifyError(f"firmware slot {slot} cannot be read: {e.strerror}") from e
        self._check(slot, image, length, digest.hexdigest())

    @staticmethod
    def _check(slot: SlotName, image: SlotImage, length: int, digest: str) -> None:
        if length != image.payload_length or digest != image.payload_sha256:
            raise VerifyError(
                f"firmware slot {slot} does not hold {image.name} {image.version}: expected "
                f"{image.payload_length} bytes with sha256 {image.payload_sha256}, "
                f"got {length} bytes with {digest}"
            )

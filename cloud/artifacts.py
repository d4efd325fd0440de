"""Content-addressed artifact store on local disk.

An artifact lives at ``{root}/sha256/ab/<hex>``, named by the sha256 of its bytes. Writes go
to a temporary file under ``{root}/tmp`` (same file system), are hashed while written,
fsynced and renamed into place, so a reader never sees a partial artifact and a crash
leaves at most a stray temporary file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, Self, runtime_checkable

from cloud.errors import InvalidArtifactError, InvalidInputError, NotFoundError, TooLargeError
from model_tools.atomic import fsync_dir

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
COPY_CHUNK = 1024 * 1024


def check_sha256(value: str) -> str:
    """Accept only 64 lowercase hex digits: the digest becomes a file name."""
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value):
        shown = value[:80] if isinstance(value, str) else type(value).__name__
        raise InvalidInputError(f"invalid sha256 {shown!r}: expected 64 lowercase hex digits")
    return value


def without_path(text: str, path: Path, name: str) -> str:
    """``text``, a library's message about the file at ``path``, naming it ``name`` instead.

    Messages from onnxruntime, onnx or zipfile quote the file they read; a caller is told which artifact
    (its sha256 or file name), never where the hub keeps its data.
    """
    for shown in {str(path), str(path.resolve()), str(path.parent), str(path.parent.resolve())}:
        text = text.replace(shown, name)
    return text


class ArtifactNotFoundError(NotFoundError):
    def __init__(self, sha256: str) -> None:
        self.sha256 = sha256
        super().__init__(f"artifact {sha256} is not in the store")


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    sha256: str
    length: int


@runtime_checkable
class Readable(Protocol):
    """Anything with a binary ``read(n)``: an open file, an upload, a socket file."""

    def read(self, n: int = -1, /) -> bytes: ...


def _chunks(stream: Readable | Iterable[bytes]) -> Iterable[bytes]:
    if isinstance(stream, Readable):
        return iter(lambda: stream.read(COPY_CHUNK), b"")
    return stream


class ArtifactWriter:
    """One artifact being written; ``commit()`` moves it into the store, anything else discards it."""

    def __init__(self, store: ArtifactStore, max_length: int | None) -> None:
        self._store = store
        self._max_length = max_length
        self._hash = hashlib.sha256()
        self._length = 0
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="upload-")
        self._tmp = Path(name)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self._committed = False

    @property
    def length(self) -> int:
        return self._length

    def write(self, data: bytes) -> None:
        if self._file is None:
            raise RuntimeError("cannot write to an artifact writer that is committed or aborted")
        new_length = self._length + len(data)
        if self._max_length is not None and new_length > self._max_length:
            self.abort()
            raise TooLargeError(self._max_length, new_length)
        self._file.write(data)
        self._hash.update(data)
        self._length = new_length

    def commit(
        self, *, expected_sha256: str | None = None, expected_length: int | None = None
    ) -> ArtifactInfo:
        """Verify what was written against what the caller expected, then publish it atomically."""
        if self._file is None:
            raise RuntimeError("cannot commit an artifact writer twice or after abort")
        digest = self._hash.hexdigest()
        try:
            if expected_length is not None and self._length != expected_length:
                raise InvalidArtifactError(
                    f"artifact truncated or padded: expected {expected_length} bytes, got {self._length}"
                )
            if expected_sha256 is not None and digest != check_sha256(expected_sha256):
                raise InvalidArtifactError(
                    f"artifact sha256 mismatch: expected {expected_sha256}, got {digest}"
                )
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            info = ArtifactInfo(digest, self._length)
            self._store._place(self._tmp, info)
            self._committed = True
            # A durable copy elsewhere (an object store) comes after the local one is complete.
            self._store._committed(info)
        except BaseException:
            self.abort()
            raise
        return info

    def abort(self) -> None:
        """Discard the temporary file (idempotent; nothing to do after a commit)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if not self._committed:
            # Once committed, the temporary name is free and may belong to another upload.
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._file is not None:
            self.abort()


class ArtifactStore:
    """Artifacts by sha256 under one root folder.

    The interface every store keeps (cloud.storage.s3 adds an object store behind the same one): a
    caller that needs a file gets ``path()``, a local file holding exactly the artifact's bytes.
    Subclasses change where bytes come from (``path`` may fetch them) and what a commit also does.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._objects = self.root / "sha256"
        self.tmp_dir = self.root / "tmp"
        self._objects.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def local_path(self, sha256: str) -> Path:
        """Where this machine keeps the artifact's file (it may not be there)."""
        check_sha256(sha256)
        return self._objects / sha256[:2] / sha256

    def path(self, sha256: str) -> Path:
        """A local file with the artifact's bytes (absent when the store does not hold it)."""
        return self.local_path(sha256)

    def _place(self, tmp: Path, info: ArtifactInfo) -> None:
        """Move a complete, verified temporary file to its place (same file system: atomic)."""
        final = self.local_path(info.sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.replace(final)
        fsync_dir(final.parent)

    def _committed(self, info: ArtifactInfo) -> None:
        """Called once an artifact is in place; the local store has nothing more to do."""

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def stat(self, sha256: str) -> ArtifactInfo:
        try:
            return ArtifactInfo(sha256, self.path(sha256).stat().st_size)
        except FileNotFoundError:
            raise ArtifactNotFoundError(sha256) from None

    def open(self, sha256: str) -> BinaryIO:
        try:
            return self.path(sha256).open("rb")
        except FileNotFoundError:
            raise ArtifactNotFoundError(sha256) from None

    def writer(self, *, max_length: int | None = None) -> ArtifactWriter:
        return ArtifactWriter(self, max_length)

    def put_stream(
        self,
        stream: Readable | Iterable[bytes],
        *,
        max_length: int | None = None,
        expected_sha256: str | None = None,
        expected_length: int | None = None,
    ) -> ArtifactInfo:
        """Copy a file object or an iterable of chunks into the store without holding it in memory."""
        with self.writer(max_length=max_length) as writer:
            for chunk in _chunks(stream):
                writer.write(chunk)
            return writer.commit(expected_sha256=expected_sha256, expected_length=expected_length)

    def put_bytes(self, data: bytes) -> ArtifactInfo:
        return self.put_stream([data])

    def verify(self, sha256: str) -> bool:
        """Re-hash a stored artifact: False when the file on disk no longer matches its name."""
        digest = hashlib.sha256()
        with self.open(sha256) as f:
            for chunk in iter(lambda: f.read(COPY_CHUNK), b""):
                digest.update(chunk)
        return digest.hexdigest() == sha256

    def delete(self, sha256: str) -> bool:
        """Remove an artifact; False when it was not there."""
        path = self.local_path(sha256)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only succeeds when the fan-out folder is empty
        return True

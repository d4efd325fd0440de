"""Artifacts in an S3-compatible object store, served from a bounded local cache.

The object store is the durable copy that hub replicas share; validation, TUF and gRPC serving
need a local file, so each replica keeps a cache folder (the local store's layout) in front of it:

- write: the upload streams into a temporary file while hashed (as for the local store), moves into
  the cache, and is then uploaded (multipart above 8 MiB) to ``{prefix}sha256/ab/<hex>``. An upload
  that fails removes the cached file again, so the registration fails as a whole.
- read: ``path()`` of an artifact not cached downloads it into a temporary file while hashing it,
  and keeps it only if the bytes match their sha256 (a corrupt object is refused, never served).
- the cache holds at most ``cache_max_bytes``; past it, the least recently used files go (the one
  just used is always kept, so an artifact larger than the cap still works, alone).

Credentials come only from the AWS chain (environment, shared config, instance role); nothing here
reads or logs them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]  # no stubs shipped
from boto3.exceptions import Boto3Error  # type: ignore[import-untyped]  # no stubs shipped
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]  # no stubs shipped
from botocore.config import Config  # type: ignore[import-untyped]  # no stubs shipped
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]  # no stubs shipped

from cloud.artifacts import COPY_CHUNK, ArtifactInfo, ArtifactNotFoundError, ArtifactStore, check_sha256
from cloud.errors import InvalidArtifactError
from cloud.storage import StorageError

__all__ = ["CorruptArtifactError", "S3ArtifactStore", "S3Location"]

log = logging.getLogger(__name__)

# Multipart parts of 8 MiB, two at a time: an upload holds about 16 MiB in memory, whatever its size.
_TRANSFER = TransferConfig(
    multipart_threshold=8 * 1024 * 1024,
    multipart_chunksize=8 * 1024 * 1024,
    max_concurrency=2,
    use_threads=True,
)
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


class CorruptArtifactError(InvalidArtifactError):
    """An object's bytes do not hash to the sha256 it is stored under."""


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None

    def key(self, sha256: str) -> str:
        return f"{self.prefix}sha256/{sha256[:2]}/{sha256}"

    def __str__(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _reason(e: Exception) -> str:
    """The service's error code, without the local paths that boto3's transfer messages quote."""
    if isinstance(e, ClientError):
        return _code(e) or type(e).__name__
    found = re.search(r"An error occurred \((\w+)\)", str(e))
    return found.group(1) if found else type(e).__name__


class _LruFiles:
    """The cached files by sha256, least recently used first, with their total size."""

    def __init__(self) -> None:
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self.total = 0
        self._lock = threading.Lock()

    def touch(self, sha256: str, size: int) -> None:
        with self._lock:
            self.total += size - self._sizes.get(sha256, 0)
            self._sizes[sha256] = size
            self._sizes.move_to_end(sha256)

    def forget(self, sha256: str) -> None:
        with self._lock:
            self.total -= self._sizes.pop(sha256, 0)

    def over(self, cap: int, keep: str) -> list[str]:
        """Take out the oldest entries until the total fits ``cap`` (never ``keep``); their sha256s."""
        gone: list[str] = []
        with self._lock:
            for sha256 in list(self._sizes):
                if self.total <= cap:
                    break
                if sha256 != keep:
                    self.total -= self._sizes.pop(sha256)
                    gone.append(sha256)
        return gone


class S3ArtifactStore(ArtifactStore):
    """An ArtifactStore whose durable copy is an S3 bucket and whose ``root`` is a local cache."""

    def __init__(
        self,
        cache_root: Path,
        location: S3Location,
        *,
        cache_max_bytes: int,
        client: Any = None,
    ) -> None:
        if cache_max_bytes < 1:
            raise ValueError(f"cache_max_bytes: expected at least 1, got {cache_max_bytes}")
        super().__init__(cache_root)
        self.location = location
        self.cache_max_bytes = cache_max_bytes
        self._client = client or boto3.client(
            "s3",
            endpoint_url=location.endpoint_url,
            region_name=location.region,
            config=Config(
                connect_timeout=5, read_timeout=60, retries={"max_attempts": 4, "mode": "standard"}
            ),
        )
        self._lru = _LruFiles()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._check_bucket()
        self._index_cache()

    def _check_bucket(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.location.bucket)
        except ClientError as e:
            if _code(e) in _MISSING:
                raise StorageError(
                    f"the artifact bucket {self.location} does not exist: create it, or name another "
                    "(EDGEFLEET_S3_BUCKET, EDGEFLEET_S3_ENDPOINT_URL)"
                ) from e
            raise StorageError(
                f"the artifact bucket {self.location} refused access ({_code(e) or 'no code'}): check the "
                "AWS credentials of the hub's environment"
            ) from e
        except BotoCoreError as e:
            raise StorageError(f"cannot reach the artifact bucket {self.location}: {e}") from e

    def _index_cache(self) -> None:
        """Start the LRU order from the files already cached, oldest modified first."""
        found: list[tuple[float, str, int]] = []
        for path in self.root.glob("sha256/*/*"):
            st = path.stat()
            found.append((st.st_mtime, path.name, st.st_size))
        for _, sha256, size in sorted(found):
            self._lru.touch(sha256, size)
        self._evict(keep="")

    def _lock_for(self, sha256: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(sha256, threading.Lock())

    def _evict(self, keep: str) -> None:
        for sha256 in self._lru.over(self.cache_max_bytes, keep):
            self.local_path(sha256).unlink(missing_ok=True)
            log.debug("evicted artifact %s from the cache", sha256)

    def _cached(self, sha256: str) -> Path | None:
        path = self.local_path(sha256)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        self._lru.touch(sha256, size)
        return path

    # -- reads ---------------------------------------------------------------------------------------

    def path(self, sha256: str) -> Path:
        """The cached file, downloaded and verified first when this replica does not hold it yet."""
        cached = self._cached(sha256)
        if cached is not None:
            return cached
        with self._lock_for(sha256):
            cached = self._cached(sha256)  # another thread may have fetched it meanwhile
            if cached is None and self._fetch(sha256):
                cached = self._cached(sha256)
                self._evict(keep=sha256)
        return cached if cached is not None else self.local_path(sha256)

    def _fetch(self, sha256: str) -> bool:
        """Download into the cache, verifying the bytes; False when the bucket has no such object."""
        key = self.location.key(sha256)
        try:
            body = self._client.get_object(Bucket=self.location.bucket, Key=key)["Body"]
        except ClientError as e:
            if _code(e) in _MISSING:
                return False
            raise StorageError(f"cannot read artifact {sha256} from {self.location}: {_code(e)}") from e
        except BotoCoreError as e:
            raise StorageError(f"cannot read artifact {sha256} from {self.location}: {e}") from e
        digest = hashlib.sha256()
        length = 0
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="fetch-")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in body.iter_chunks(COPY_CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    length += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            if digest.hexdigest() != sha256:
                raise CorruptArtifactError(
                    f"artifact {sha256} in {self.location} is corrupt: its {length} bytes hash to "
                    f"{digest.hexdigest()}; refused"
                )
            self._place(tmp, ArtifactInfo(sha256, length))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            body.close()
        log.info("fetched artifact %s (%d bytes) from %s into the cache", sha256, length, self.location)
        return True

    def _head(self, sha256: str) -> int | None:
        try:
            answer = self._client.head_object(Bucket=self.location.bucket, Key=self.location.key(sha256))
        except ClientError as e:
            if _code(e) in _MISSING:
                return None
            raise StorageError(f"cannot look up artifact {sha256} in {self.location}: {_code(e)}") from e
        except BotoCoreError as e:
            raise StorageError(f"cannot look up artifact {sha256} in {self.location}: {e}") from e
        return int(answer["ContentLength"])

    def exists(self, sha256: str) -> bool:
        check_sha256(sha256)
        return self._cached(sha256) is not None or self._head(sha256) is not None

    def stat(self, sha256: str) -> ArtifactInfo:
        check_sha256(sha256)
        cached = self._cached(sha256)
        if cached is not None:
            return ArtifactInfo(sha256, cached.stat().st_size)
        length = self._head(sha256)
        if length is None:
            raise ArtifactNotFoundError(sha256)
        return ArtifactInfo(sha256, length)

    def open(self, sha256: str) -> Any:
        try:
            return self.path(sha256).open("rb")
        except FileNotFoundError:
            raise ArtifactNotFoundError(sha256) from None

    # -- writes --------------------------------------------------------------------------------------

    def _committed(self, info: ArtifactInfo) -> None:
        path = self.local_path(info.sha256)
        try:
            if self._head(info.sha256) != info.length:
                self._client.upload_file(
                    str(path), self.location.bucket, self.location.key(info.sha256), Config=_TRANSFER
                )
        except (ClientError, BotoCoreError, Boto3Error, StorageError) as e:
            path.unlink(missing_ok=True)
            log.warning("upload of artifact %s to %s failed: %s", info.sha256, self.location, e)
            raise StorageError(f"cannot store artifact {info.sha256} in {self.location}: {_reason(e)}") from e
        self._lru.touch(info.sha256, info.length)
        self._evict(keep=info.sha256)

    def delete(self, sha256: str) -> bool:
        check_sha256(sha256)
        there = self._head(sha256) is not None
        if there:
            try:
                self._client.delete_object(Bucket=self.location.bucket, Key=self.location.key(sha256))
            except (ClientError, BotoCoreError) as e:
                raise StorageError(f"cannot delete artifact {sha256} from {self.location}: {e}") from e
        self._lru.forget(sha256)
        return super().delete(sha256) or there

"""The device's view of the signed repository: python-tuf's ngclient, with limits and a clock.

    {state_dir}/trust/root.json          the root installed at provisioning (the trust anchor)
    {state_dir}/trust/metadata/          ngclient's cache: root_history/, timestamp.json, ...

:meth:`TrustedRepository.refresh` runs the TUF client workflow (root chain, timestamp,
snapshot, targets) through a :class:`~edge_agent.trust.transport.TufTransport` and keeps
the verified targets; :meth:`target` answers from them. ngclient persists every file
atomically and only after it verified, and re-verifies its cache against the current
root on the next refresh, so a cached file signed by a since-rotated key is dropped.

Errors from python-tuf become :mod:`edge_agent.trust.errors` classes with the library's
own explanation kept in the message and in ``__cause__``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, TargetFile
from tuf.ngclient import Updater, UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface

from edge_agent.trust.director import DirectorKeys
from edge_agent.trust.errors import (
    HostileTargetError,
    MetadataDownloadError,
    MetadataError,
    MetadataExpiredError,
    MetadataRollbackError,
    MetadataSignatureError,
    MetadataTooLargeError,
    NotProvisionedError,
    TrustError,
)
from edge_agent.trust.targets import SignedTarget, check_target_path
from edge_agent.trust.transport import METADATA_URL, TARGETS_URL
from model_tools.atomic import atomic_write

__all__ = ["RefreshResult", "TrustLimits", "TrustedRepository", "install_root"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrustLimits:
    """Size caps: no metadata file may make the device read more than this (endless-data attacks)."""

    root_max_bytes: int = 64 * 1024
    timestamp_max_bytes: int = 16 * 1024
    snapshot_max_bytes: int = 256 * 1024
    targets_max_bytes: int = 4 * 1024 * 1024
    max_root_rotations: int = 64

    def config(self) -> UpdaterConfig:
        return UpdaterConfig(
            max_root_rotations=self.max_root_rotations,
            max_delegations=1,
            root_max_length=self.root_max_bytes,
            timestamp_max_length=self.timestamp_max_bytes,
            snapshot_max_length=self.snapshot_max_bytes,
            targets_max_length=self.targets_max_bytes,
        )


@dataclass(frozen=True, slots=True)
class RefreshResult:
    root_version: int
    timestamp_version: int
    snapshot_version: int
    targets_version: int
    targets: Any = field(default_factory=lambda: MappingProxyType({}))


def install_root(trust_dir: Path, root: bytes) -> int:
    """Install the trusted root at provisioning; returns its version. Refuses anything but root metadata."""
    try:
        md: Metadata[Any] = Metadata.from_bytes(root)
    except Exception as e:  # python-tuf raises several types for bad input
        raise NotProvisionedError(f"not TUF root metadata: {e}") from e
    if not isinstance(md.signed, Root):
        raise NotProvisionedError(f"expected root metadata, got {md.signed.type}")
    # Self-signed by a threshold of its own root keys, or it is not a root anyone should start from.
    try:
        md.signed.verify_delegate(Root.type, md.signed_bytes, md.signatures)
    except tuf_errors.UnsignedMetadataError as e:
        raise NotProvisionedError(f"root v{md.signed.version} is not signed by its own root keys: {e}") from e
    # Public metadata: readable by the apps' group like the rest of the state folder.
    atomic_write(trust_dir / "root.json", root, mode=0o644)
    return md.signed.version


class _Tracking(FetcherInterface):
    """Remembers the last file asked for, so an error can say which file it was about."""

    def __init__(self, inner: FetcherInterface) -> None:
        self._inner = inner
        self.last = ""

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.last = url.rpartition("/")[2]
        return self._inner.fetch(url)


def _wrap(e: Exception, where: str = "") -> TrustError:
    """A trust error for what python-tuf raised, most specific class first."""
    text = (str(e) or type(e).__name__) + (f"; last file fetched: {where}" if where else "")
    if isinstance(e, tuf_errors.ExpiredMetadataError):
        return MetadataExpiredError(
            f"repository metadata expired ({text}): a freeze, or a hub that stopped re-signing"
        )
    if isinstance(e, tuf_errors.BadVersionNumberError):
        return MetadataRollbackError(
            f"repository metadata version refused ({text}): a rollback or a skipped version"
        )
    if isinstance(e, tuf_errors.UnsignedMetadataError):
        return MetadataSignatureError(f"repository metadata signatures refused ({text})")
    if isinstance(e, tuf_errors.LengthOrHashMismatchError):
        return MetadataError(f"repository metadata does not match what signed metadata pins ({text})")
    if isinstance(e, tuf_errors.DownloadLengthMismatchError):
        return MetadataTooLargeError(f"repository metadata larger than allowed ({text})")
    if isinstance(e, tuf_errors.DownloadError):
        return MetadataDownloadError(f"cannot fetch repository metadata ({text})")
    if isinstance(e, tuf_errors.RepositoryError):
        return MetadataError(f"repository metadata refused ({text})")
    return MetadataError(f"repository metadata refused ({type(e).__name__}: {text})")


class TrustedRepository:
    """One device's TUF client. Thread-safe: refreshes run one at a time in worker threads."""

    def __init__(
        self,
        trust_dir: Path,
        fetcher: FetcherInterface,
        *,
        limits: TrustLimits | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.trust_dir = trust_dir
        self.metadata_dir = trust_dir / "metadata"
        self._fetcher = _Tracking(fetcher)
        self.limits = limits or TrustLimits()
        self._now = now
        self._lock = threading.Lock()
        self._targets: dict[str, TargetFile] = {}
        self._root: Root | None = None
        self.last: RefreshResult | None = None

    @property
    def provisioned(self) -> bool:
        return (self.trust_dir / "root.json").is_file()

    def _bootstrap(self) -> bytes:
        try:
            return (self.trust_dir / "root.json").read_bytes()
        except FileNotFoundError:
            raise NotProvisionedError(
                f"no trusted root at {self.trust_dir / 'root.json'}: "
                "provision the device with the fleet's root.json"
            ) from None

    def refresh(self) -> RefreshResult:
        """Run the TUF client workflow; raise a :class:`TrustError` saying what did not verify."""
        with self._lock:
            bootstrap = self._bootstrap()
            self.metadata_dir.mkdir(parents=True, exist_ok=True)
            try:
                updater = Updater(
                    str(self.metadata_dir),
                    METADATA_URL,
                    None,
                    TARGETS_URL,
                    self._fetcher,
                    self.limits.config(),
                    bootstrap=bootstrap,
                )
                # ngclient reads the wall clock once, when it is built; expiry is judged against the
                # device's clock instead, so that tests and devices with a trusted time source agree.
                trusted = updater._trusted_set  # the one seam python-tuf offers for the reference time
                trusted.reference_time = self._now()
                updater.refresh()
            except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as e:
                raise _wrap(e, self._fetcher.last) from e
            except OSError as e:
                raise MetadataError(
                    f"cannot write the metadata cache in {self.metadata_dir}: {e.strerror}"
                ) from e
            root, targets = trusted.root, trusted.targets
            self._root = root
            self._targets = dict(targets.targets)
            self.last = RefreshResult(
                root_version=root.version,
                timestamp_version=trusted.timestamp.version,
                snapshot_version=trusted.snapshot.version,
                targets_version=targets.version,
            )
            return self.last

    def target(self, path: str) -> SignedTarget | None:
        """The target at ``path`` in the last refreshed targets metadata; None when it is not listed."""
        check_target_path(path)
        info = self._targets.get(path)
        if info is None:
            return None
        sha256 = info.hashes.get("sha256")
        if not isinstance(sha256, str):
            raise HostileTargetError(
                f"target {path!r} carries no sha256: expected one in the signed metadata"
            )
        custom = info.custom if isinstance(info.custom, dict) else {}
        return SignedTarget(path=path, length=info.length, sha256=sha256, custom=custom)

    def root_version(self) -> int:
        return self.trusted_root().version

    def trusted_root(self) -> Root:
        """The newest root this device verified (from the cache, checked link by link), else the bootstrap."""
        if self._root is not None:
            return self._root
        md: Metadata[Any] = Metadata.from_bytes(self._bootstrap())
        root = md.signed
        assert isinstance(root, Root)
        history = self.metadata_dir / "root_history"
        version = root.version + 1
        while (history / f"{version}.root.json").is_file():
            try:
                nxt: Metadata[Any] = Metadata.from_bytes((history / f"{version}.root.json").read_bytes())
                new = nxt.signed
                assert isinstance(new, Root) and new.version == version
                root.verify_delegate(Root.type, nxt.signed_bytes, nxt.signatures)
                new.verify_delegate(Root.type, nxt.signed_bytes, nxt.signatures)
            except (tuf_errors.RepositoryError, AssertionError, ValueError, OSError) as e:
                log.warning("cached root v%d does not verify (%s); trusting v%d", version, e, root.version)
                break
            root = new
            version += 1
        self._root = root
        return root

    def director_keys(self) -> DirectorKeys:
        return DirectorKeys.from_root(self.trusted_root())

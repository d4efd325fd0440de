"""The signed-update channel of one device, as the updater plugs it in.

- As a :class:`~edge_agent.verify.DesiredDecoder` (:meth:`SignedUpdateChannel.decode`):
  a payload from the desired topic is accepted only when a threshold of director keys
  named in the trusted root signed it for this device, it has not expired, and its
  counter is not below the last accepted one. The counter is saved before the
  instruction is acted on. Runs on the event loop, so it reads only local files.
- As an :class:`~edge_agent.verify.ArtifactVerifier` (:meth:`SignedUpdateChannel.verify`,
  name ``"tuf"``): before any downloaded (or cached) artifact is used, the repository
  metadata is refreshed (TUF: root chain, timestamp, snapshot, targets), the target
  the director named must be listed there with the same length and sha256, and the
  file must be exactly those bytes. Runs in a worker thread.
- For firmware (:meth:`firmware_offer`): the full image's signed target, and the delta
  that its signed custom fields name for the image the device runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edge_agent.errors import VerifyError
from edge_agent.logs import Log
from edge_agent.trust.director import (
    DirectorKeys,
    DirectorMark,
    UnknownDirectorKeyError,
    verify_signed_desired,
)
from edge_agent.trust.errors import (
    DirectorRejectedError,
    MetadataDownloadError,
    MetadataError,
    MetadataTooLargeError,
    RepositoryMismatchError,
    TrustError,
)
from edge_agent.trust.state import TrustStateFile
from edge_agent.trust.targets import SignedTarget, verify_file
from edgefleet_proto.v1 import common_pb2, desired_pb2

if TYPE_CHECKING:
    # Types only: firmware slots load only on a device that takes firmware, and the repository
    # module imports python-tuf (see edge_agent.trust.lazy).
    from edge_agent.firmware.manager import FirmwareOffer
    from edge_agent.trust.repository import RefreshResult

__all__ = ["DEFAULT_MAX_DESIRED_BYTES", "Repository", "SignedUpdateChannel"]

log = logging.getLogger(__name__)

# A signed desired state is a few hundred bytes; anything near this is not one.
DEFAULT_MAX_DESIRED_BYTES = 16 * 1024


class Repository(Protocol):
    """What the channel asks of the signed repository.

    :class:`~edge_agent.trust.repository.TrustedRepository` is the real one; an agent hands in a
    :class:`~edge_agent.trust.lazy.LazyRepository`, which builds the real one (and imports
    python-tuf) on the first call that needs it.
    """

    def refresh(self) -> RefreshResult: ...

    def target(self, path: str) -> SignedTarget | None: ...

    def root_version(self) -> int: ...

    def director_keys(self) -> DirectorKeys: ...


class SignedUpdateChannel:
    """Director checks at intake, TUF checks before use."""

    name = "tuf"

    def __init__(
        self,
        repository: Repository,
        state: TrustStateFile,
        *,
        device_id: str,
        fleet: str,
        wall_ms: Callable[[], int],
        max_desired_bytes: int = DEFAULT_MAX_DESIRED_BYTES,
        logger: Log = log,
    ) -> None:
        self.repository = repository
        self._state = state
        self._device_id = device_id
        self._fleet = fleet
        self._wall_ms = wall_ms
        self._max_bytes = max_desired_bytes
        self._log = logger
        self._mark: DirectorMark | None = None
        self._lock = threading.Lock()
        # Set by the agent: where verified firmware requests go, and what to do when an instruction is
        # signed by a director key the cached root does not name yet (refresh the root, then retry).
        self.on_firmware: Callable[[desired_pb2.DesiredState], None] = lambda _desired: None
        self.on_unknown_key: Callable[[bytes], None] = lambda _payload: None

    # -- intake --------------------------------------------------------------------------------

    @property
    def mark(self) -> DirectorMark:
        if self._mark is None:
            self._mark = self._state.load()
        return self._mark

    def decode(self, payload: bytes) -> desired_pb2.DesiredState:
        """The verified desired state; a DirectorRejectedError (or NotProvisionedError) otherwise."""
        with self._lock:
            try:
                desired, mark = verify_signed_desired(
                    payload,
                    self.repository.director_keys(),
                    device_id=self._device_id,
                    fleet=self._fleet,
                    last=self.mark,
                    now_ms=self._wall_ms(),
                    max_bytes=self._max_bytes,
                )
            except UnknownDirectorKeyError:
                self.on_unknown_key(payload)
                raise
            except DirectorRejectedError:
                raise
            except TrustError as e:  # no root installed, a damaged trust state: refuse, saying why
                raise DirectorRejectedError(f"cannot check the director's signature: {e}") from e
            if mark != self._mark:
                self._state.save(mark)
                self._mark = mark
        if desired.HasField("firmware"):
            self.on_firmware(desired)
        return desired

    def refresh(self) -> RefreshResult:
        """Refresh repository metadata (blocking: call from a worker thread)."""
        return self.repository.refresh()

    # -- before use ----------------------------------------------------------------------------

    def _signed_target(self, path: str, what: str) -> SignedTarget:
        if not path:
            raise RepositoryMismatchError(f"the director named no repository target for {what}")
        target = self.repository.target(path)
        if target is None:
            raise RepositoryMismatchError(f"the repository does not list {what} (target {path!r})")
        return target

    def verify(self, path: Path, ref: common_pb2.ModelRef, desired: desired_pb2.DesiredState) -> None:
        """Refresh the metadata, match the director's target with the repository's, check the bytes.

        Raises a :class:`VerifyError` for anything that stops the artifact from being trusted.
        Metadata the hub did not deliver (unreachable, busy, a broken stream) judges nothing:
        that is a :class:`MetadataDownloadError`, which the updater reports as a failed download
        and retries, keeping the bytes. Metadata larger than allowed is refused as untrusted.
        """
        try:
            self.refresh()
        except VerifyError:
            raise
        except MetadataDownloadError as e:
            if not isinstance(e, MetadataTooLargeError):
                raise
            wrapped = MetadataError(str(e))
            wrapped.code = e.code
            raise wrapped from e
        except TrustError as e:
            wrapped = MetadataError(str(e))
            wrapped.code = e.code  # keep the precise check name (metadata_too_large, not_provisioned, ...)
            raise wrapped from e
        model = desired.model
        if ref.sha256 == model.sha256:
            target = self._signed_target(desired.model_target, f"model {model.name} {model.version}")
            kinds = {"model"}
        elif model.HasField("profile") and ref.sha256 == model.profile.sha256:
            target = self._signed_target(
                desired.profile_target, f"the data profile of {model.name} {model.version}"
            )
            kinds = {"profile"}
        else:
            raise RepositoryMismatchError(
                f"artifact {ref.sha256} is neither the model nor its profile the director named"
            )
        if (target.sha256, target.length) != (ref.sha256, ref.length):
            raise RepositoryMismatchError(
                f"the director pins {ref.sha256} ({ref.length} bytes) but the repository lists "
                f"{target.path} as {target.sha256} ({target.length} bytes)"
            )
        if target.kind not in kinds:
            raise RepositoryMismatchError(
                f"target {target.path} is a {target.kind or 'untyped'} target: expected {kinds}"
            )
        verify_file(path, target)

    # -- firmware -----------------------------------------------------------------------------

    def firmware_offer(
        self, firmware: common_pb2.FirmwareRef, running_payload_sha256: str | None
    ) -> FirmwareOffer:
        """The signed targets for a desired image (refresh first). Raises when the repository disagrees."""
        from edge_agent.firmware.manager import FirmwareOffer

        full = self._signed_target(firmware.target, f"firmware {firmware.name} {firmware.version}")
        if (full.sha256, full.length) != (firmware.sha256, firmware.length):
            raise RepositoryMismatchError(
                f"the director pins firmware {firmware.sha256} ({firmware.length} bytes) but the "
                f"repository lists {full.path} as {full.sha256} ({full.length} bytes)"
            )
        if full.kind != "firmware":
            raise RepositoryMismatchError(
                f"target {full.path} is a {full.kind or 'untyped'} target: expected firmware"
            )
        delta = None
        deltas = full.custom.get("deltas")
        if running_payload_sha256 and isinstance(deltas, dict):
            delta_path = deltas.get(running_payload_sha256)
            if isinstance(delta_path, str):
                try:
                    delta = self.repository.target(delta_path)
                except VerifyError as e:
                    self._log.warning("ignoring delta %r: %s", delta_path, e)
        return FirmwareOffer(
            name=firmware.name,
            version=firmware.version,
            hardware_id=firmware.hardware_id,
            full=full,
            delta=delta if delta is not None and delta.kind == "firmware-delta" else None,
        )

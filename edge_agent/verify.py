"""The VERIFYING step's seam: who decides that bytes on disk are the artifact the hub meant.

The updater calls every verifier in its :class:`VerifierChain` on the finished
download (or on a stored artifact about to be used again) before anything else
reads the file; the first one that objects stops the update with its reason.
Verifiers are synchronous and may be slow (hashing): the updater runs them in a
worker thread.

Without signed updates the chain is :class:`PinnedDigestVerifier` alone: exact
length and sha256 as the desired state pins them. With them (the default), the
agent's verifier is :class:`~edge_agent.trust.attach.TrustVerifier`:
``VerifierChain([PinnedDigestVerifier(), SignedUpdateChannel])``, the signed
repository (TUF) after the pinned digest. The desired state itself passes through
a :class:`DesiredDecoder` at intake, which is where a signed desired state is
checked. This module imports nothing of the signed-update stack: an agent loads
that on its first check (see :mod:`edge_agent.trust.lazy`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from edge_agent.desired import decode_desired
from edge_agent.store import ArtifactStore
from edgefleet_proto.v1 import common_pb2, desired_pb2

__all__ = [
    "ArtifactVerifier",
    "DesiredDecoder",
    "PinnedDigestVerifier",
    "ProtobufDesiredDecoder",
    "VerifierChain",
]


class ArtifactVerifier(Protocol):
    """Judges the bytes at ``path`` against what ``desired`` asks for.

    ``ref`` is the artifact under test: ``desired.model`` for the model itself,
    or a ModelRef built from ``desired.model.profile`` for its data profile.
    Raise :class:`~edge_agent.errors.VerifyError` (or a subclass) saying what was
    expected and what came; raise :class:`~edge_agent.errors.StoreError` when the
    file cannot be read, and a :class:`~edge_agent.errors.DownloadError` when what the
    judgement needs (signed metadata) cannot be fetched: nothing was judged then. Return
    None when the bytes are acceptable.
    """

    @property
    def name(self) -> str:
        """Short name for logs and events ("sha256", "tuf")."""
        ...

    def verify(self, path: Path, ref: common_pb2.ModelRef, desired: desired_pb2.DesiredState) -> None: ...


class PinnedDigestVerifier:
    """Exact length, then sha256, as pinned in the desired state's ModelRef."""

    name = "sha256"

    def verify(self, path: Path, ref: common_pb2.ModelRef, desired: desired_pb2.DesiredState) -> None:
        ArtifactStore.verify_file(path, ref)


class VerifierChain:
    """Runs verifiers in order; every one must accept the bytes."""

    def __init__(self, verifiers: Sequence[ArtifactVerifier]) -> None:
        if not verifiers:
            raise ValueError("a verifier chain needs at least one verifier")
        self._verifiers = tuple(verifiers)

    @property
    def names(self) -> list[str]:
        return [v.name for v in self._verifiers]

    def verify(self, path: Path, ref: common_pb2.ModelRef, desired: desired_pb2.DesiredState) -> None:
        for verifier in self._verifiers:
            verifier.verify(path, ref, desired)


class DesiredDecoder(Protocol):
    """Turns a payload from the desired topic into a DesiredState, or refuses it.

    Raise :class:`~edge_agent.errors.DesiredRejectedError` saying why. A signed
    desired state is checked here, before the updater looks at its content.
    """

    def decode(self, payload: bytes) -> desired_pb2.DesiredState: ...


class ProtobufDesiredDecoder:
    """A bare DesiredState protobuf (no signature)."""

    def decode(self, payload: bytes) -> desired_pb2.DesiredState:
        return decode_desired(payload)

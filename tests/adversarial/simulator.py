"""An in-memory update repository, director and artifact server on which attacks are staged.

Like python-tuf's test ``RepositorySimulator``, it implements the TUF ``FetcherInterface``
and serves metadata and targets from memory, recording every fetch; unlike a real
repository it can be told to misbehave: sign with the wrong keys, serve an old version,
send endless bytes, stall, swap a file. It also plays the hub's director (signed desired
states) and the artifact service (the agent's resumable :class:`Fetcher`).

Time is frozen: ``now`` is a datetime the test moves; nothing sleeps.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, MetaFile, Role, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer
from tuf.ngclient.fetcher import FetcherInterface

from cloud.tuf.keys import generate_signer
from cloud.tuf.metadata import DIRECTOR_FIELD, SPEC_VERSION
from edge_agent.errors import DownloadStalledError, HubUnavailableError
from edge_agent.fetcher import write_chunks_from
from edge_agent.trust.transport import METADATA_URL, TARGETS_URL
from edgefleet_proto.v1 import common_pb2, desired_pb2

START = datetime(2030, 1, 1, tzinfo=UTC)
ONLINE = ("targets", "snapshot", "timestamp")


def serialize(md: Metadata[Any]) -> bytes:
    return md.to_bytes(JSONSerializer(compact=True))


def sign(md: Metadata[Any], signers: list[CryptoSigner]) -> bytes:
    md.signatures.clear()
    for s in signers:
        md.sign(s, append=True)
    return serialize(md)


def meta(version: int, data: bytes) -> MetaFile:
    return MetaFile(version, len(data), {"sha256": hashlib.sha256(data).hexdigest()})


@dataclass
class Artifact:
    data: bytes
    sha256: str
    length: int


@dataclass
class RepoSim(FetcherInterface):
    """A TUF repository whose every file a test may replace."""

    now: datetime = START
    files: dict[str, bytes] = field(default_factory=dict)
    signers: dict[str, list[CryptoSigner]] = field(default_factory=dict)
    threshold: dict[str, int] = field(default_factory=dict)
    director: list[CryptoSigner] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)
    fetches: list[str] = field(default_factory=list)
    # url -> exception to raise (stall, refuse) or bytes to serve without end
    faults: dict[str, Exception] = field(default_factory=dict)
    endless: set[str] = field(default_factory=set)
    counters: dict[str, int] = field(default_factory=dict)
    # The artifact service: sha256s whose stream stalls, and bytes served instead of the real ones.
    stall_artifacts: set[str] = field(default_factory=set)
    swap_artifacts: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Root(
            version=1,
            spec_version=SPEC_VERSION,
            expires=self.now + timedelta(days=365),
            consistent_snapshot=True,
        )
        for role in ("root", *ONLINE):
            self.set_keys(role, [generate_signer()], 1, root=self.root)
        self.director = [generate_signer()]
        self._set_director(self.root)
        self.targets = Targets(version=1, spec_version=SPEC_VERSION, expires=self.now + timedelta(days=30))
        self._targets_signed = False
        self.snapshot_version = 0
        self.timestamp_version = 0
        self.publish_root()
        self.publish()

    # -- keys and roots ----------------------------------------------------------------------

    def set_keys(self, role: str, signers: list[CryptoSigner], threshold: int, *, root: Root) -> None:
        root.roles[role] = Role([], threshold)
        for s in signers:
            root.add_key(s.public_key, role)
        self.signers[role] = signers
        self.threshold[role] = threshold
        self._gc(root)

    def _set_director(self, root: Root) -> None:
        for s in self.director:
            root.keys[s.public_key.keyid] = s.public_key
        root.unrecognized_fields[DIRECTOR_FIELD] = {
            "keyids": [s.public_key.keyid for s in self.director],
            "threshold": 1,
        }
        self._gc(root)

    @staticmethod
    def _gc(root: Root) -> None:
        field_ = root.unrecognized_fields.get(DIRECTOR_FIELD, {})
        used = {k for r in root.roles.values() for k in r.keyids} | set(field_.get("keyids", []))
        for keyid in list(root.keys):
            if keyid not in used:
                del root.keys[keyid]

    def publish_root(
        self, sign_with: list[CryptoSigner] | None = None, *, version: int | None = None
    ) -> bytes:
        """Sign the current root (with the current root signers unless told otherwise) and serve it."""
        md = Metadata(self.root)
        data = sign(md, self.signers["root"] if sign_with is None else sign_with)
        self.files[f"{version or self.root.version}.root.json"] = data
        return data

    def next_root(self) -> Root:
        """Start a new root version: a copy of the current one, version + 1."""
        md: Metadata[Root] = Metadata.from_bytes(self.files[f"{self.root.version}.root.json"])
        self.root = md.signed
        self.root.version += 1
        self.root.expires = self.now + timedelta(days=365)
        return self.root

    def rotate(self, role: str, count: int = 1, threshold: int = 1) -> list[CryptoSigner]:
        """A correct rotation: new keys for ``role``, the new root signed by old and new root keys."""
        old_root_signers = list(self.signers["root"])
        root = self.next_root()
        new = [generate_signer() for _ in range(count)]
        if role == "director":
            self.director = new
            self._set_director(root)
        else:
            self.set_keys(role, new, threshold, root=root)
        signers = old_root_signers + ([] if role != "root" else new)
        self.publish_root(signers if role == "root" else self.signers["root"])
        if role in ONLINE:
            self.publish()
        return new

    @property
    def bootstrap(self) -> bytes:
        return self.files["1.root.json"]

    # -- online metadata -----------------------------------------------------------------------

    def add_target(self, path: str, data: bytes, custom: dict[str, Any] | None = None) -> TargetFile:
        target = TargetFile.from_data(path, data, ["sha256"])
        target.unrecognized_fields["custom"] = dict(custom or {"kind": "model"})
        self.targets.targets[path] = target
        self.blobs[target.hashes["sha256"]] = data
        return target

    def publish(self, *, targets: bool = True, snapshot: bool = True) -> None:
        """New targets, snapshot and timestamp versions, signed by the current online keys."""
        if targets:
            if self._targets_signed:
                self.targets.version += 1
            self._targets_signed = True
            self.targets.expires = self.now + timedelta(days=30)
            self.files[f"{self.targets.version}.targets.json"] = sign(
                Metadata(self.targets), self.signers["targets"]
            )
        if snapshot:
            self.snapshot_version += 1
            t_data = self.files[f"{self.targets.version}.targets.json"]
            snap = Snapshot(
                self.snapshot_version,
                SPEC_VERSION,
                self.now + timedelta(days=7),
                {"targets.json": meta(self.targets.version, t_data)},
            )
            self.files[f"{self.snapshot_version}.snapshot.json"] = sign(
                Metadata(snap), self.signers["snapshot"]
            )
        self.timestamp_version += 1
        s_data = self.files[f"{self.snapshot_version}.snapshot.json"]
        ts = Timestamp(
            self.timestamp_version,
            SPEC_VERSION,
            self.now + timedelta(days=1),
            meta(self.snapshot_version, s_data),
        )
        self.files["timestamp.json"] = sign(Metadata(ts), self.signers["timestamp"])

    def resign(
        self, name: str, mutate: Callable[[Any], None], signers: list[CryptoSigner] | None = None
    ) -> bytes:
        """Load a served file, change its signed part, sign it again (by its role's keys unless told)."""
        md: Metadata[Any] = Metadata.from_bytes(self.files[name])
        mutate(md.signed)
        data = sign(md, self.signers[md.signed.type] if signers is None else signers)
        self.files[name] = data
        return data

    def timestamp_for(self, snapshot_name: str, version: int | None = None) -> None:
        """Point a new timestamp at ``snapshot_name`` (pinning its current bytes)."""
        self.timestamp_version = version or self.timestamp_version + 1
        data = self.files[snapshot_name]
        snap_version = int(snapshot_name.split(".", maxsplit=1)[0])
        ts = Timestamp(
            self.timestamp_version, SPEC_VERSION, self.now + timedelta(days=1), meta(snap_version, data)
        )
        self.files["timestamp.json"] = sign(Metadata(ts), self.signers["timestamp"])

    # -- FetcherInterface ----------------------------------------------------------------------

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.fetches.append(url)
        if url in self.faults:
            raise self.faults[url]
        if url.startswith(METADATA_URL):
            name = url[len(METADATA_URL) :]
            if name not in self.files:
                raise tuf_errors.DownloadHTTPError(f"no {name}", 404)
            data = self.files[name]
        elif url.startswith(TARGETS_URL):
            sha256 = url.rpartition("/")[2].partition(".")[0]
            if sha256 not in self.blobs:
                raise tuf_errors.DownloadHTTPError(f"no target {url}", 404)
            data = self.blobs[sha256]
        else:
            raise tuf_errors.DownloadHTTPError(f"unknown url {url}", 404)
        if url in self.endless:
            return self._endless(data)
        return iter([data])

    @staticmethod
    def _endless(data: bytes) -> Iterator[bytes]:
        yield data
        while True:
            yield b" " * 4096

    # -- the director --------------------------------------------------------------------------

    def desired(
        self,
        device_id: str,
        fleet: str,
        *,
        generation: int,
        model_path: str | None = None,
        ref: common_pb2.ModelRef | None = None,
        firmware: common_pb2.FirmwareRef | None = None,
        counter: int | None = None,
        expires_in: timedelta = timedelta(days=7),
        sign_with: list[CryptoSigner] | None = None,
        **fields: Any,
    ) -> bytes:
        """A signed desired state as the hub's director makes it (the next counter unless told)."""
        if counter is None:
            counter = self.counters.get(device_id, 0) + 1
        self.counters[device_id] = max(self.counters.get(device_id, 0), counter)
        desired = desired_pb2.DesiredState(
            device_id=device_id,
            fleet=fleet,
            generation=generation,
            counter=counter,
            expires_at_ms=int((self.now + expires_in).timestamp() * 1000),
            **fields,
        )
        if model_path is not None:
            target = self.targets.targets[model_path]
            desired.model_target = model_path
            desired.model.CopyFrom(
                ref
                or common_pb2.ModelRef(
                    name=target.custom.get("name", "m"),
                    version=target.custom.get("version", "1"),
                    format="onnx",
                    sha256=target.hashes["sha256"],
                    length=target.length,
                )
            )
        if firmware is not None:
            desired.firmware.CopyFrom(firmware)
        return envelope(desired, self.director if sign_with is None else sign_with)

    # -- the artifact service (the agent's resumable Fetcher) ------------------------------------

    async def fetch_artifact(
        self, ref: common_pb2.ModelRef, dest_partial: Path, offset: int, *, endpoint: str = ""
    ) -> AsyncIterator[int]:
        """The agent's ``Fetcher.fetch`` (``ArtifactFetcher`` wraps it under that name)."""
        self.fetches.append(f"artifact:{ref.sha256}:{offset}")
        if ref.sha256 in self.stall_artifacts:
            raise DownloadStalledError(f"hub sim sent nothing for 30 s at byte {offset} of {ref.sha256}")
        data = self.swap_artifacts.get(ref.sha256, self.blobs.get(ref.sha256))
        if data is None:
            raise HubUnavailableError(f"hub sim has no {ref.sha256}")

        async def chunks() -> AsyncIterator[tuple[int, bytes]]:
            for at in range(offset, len(data), 1024):
                yield at, data[at : at + 1024]

        async for held in write_chunks_from(chunks(), ref, dest_partial, offset, 1 << 30):
            yield held


def envelope(desired: desired_pb2.DesiredState, signers: list[CryptoSigner]) -> bytes:
    payload = desired.SerializeToString(deterministic=True)
    out = desired_pb2.SignedDesiredState(payload=payload)
    for s in signers:
        sig = s.sign(payload)
        out.signatures.add(keyid=sig.keyid, sig=bytes.fromhex(sig.signature))
    return out.SerializeToString()


@dataclass
class ArtifactFetcher:
    """The simulator's artifact service as the agent's ``Fetcher`` (its ``fetch`` is TUF's name too)."""

    sim: RepoSim

    def fetch(
        self, ref: common_pb2.ModelRef, dest_partial: Path, offset: int, *, endpoint: str = ""
    ) -> AsyncIterator[int]:
        return self.sim.fetch_artifact(ref, dest_partial, offset, endpoint=endpoint)

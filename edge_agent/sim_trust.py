"""Light mode's signed-update repository: one TUF client per trusted root and hub, shared by the devices.

A device refreshes the repository metadata (root chain, timestamp, snapshot, targets: four
requests to the hub and their signature checks) before it trusts any artifact. Ten thousand
simulated devices in one Python process, taking one rollout, spent 40% of the process in
those refreshes, one device after another, while the rollout waited on them. In light mode
(:mod:`edge_agent.sim_light`) the devices that were provisioned with the same root and talk to
the same hub share one TUF client, in a folder of its own beside theirs, behind a
:class:`~edge_agent.trust.coalesced.CoalescedRepository`: every device still gets metadata
refreshed after it asked, and devices that ask together share that refresh.

What stays each device's own: its installed root, the director's signature and counter on
each instruction (its ``trust/state.json``), its signed commands, and the check of the bytes
it downloaded against the target the refreshed metadata lists. What the fleet shares: the
metadata cache, and with it the rollback and expiry checks on that metadata, which are the
same for every device of one repository. The hub sees one metadata request per refresh
instead of one per device (metadata requests carry the first device's id), which the bench
says beside its figures.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from edge_agent.config import AgentConfig, HubConfig
from edge_agent.fetcher import SyncChannels
from edge_agent.trust.attach import RepositoryFactory, own_repository
from edge_agent.trust.channel import Repository
from edge_agent.trust.coalesced import CoalescedRepository
from edge_agent.trust.config import TrustConfig
from edge_agent.trust.errors import NotProvisionedError

__all__ = ["LIGHT_TRUST_DIR", "SharedTrust"]

# Beside the devices' folders (sim-0001, ...) in the simulator's state root.
LIGHT_TRUST_DIR = ".light-trust"

_Key = tuple[str, HubConfig, TrustConfig]


class SharedTrust:
    """The repositories of one simulated fleet, by (root digest, hub, trust settings).

    ``folder`` holds one trust folder per shared repository, each a client that ``build`` makes (a
    device's own kind by default). :meth:`repository` has the signature
    :func:`~edge_agent.trust.attach.attach_trust` takes as ``repository``.
    """

    def __init__(self, folder: Path, build: RepositoryFactory = own_repository) -> None:
        self.folder = folder
        self._build = build
        self._lock = threading.Lock()
        self._shared: dict[_Key, CoalescedRepository] = {}

    def __len__(self) -> int:
        return len(self._shared)

    @property
    def refreshes(self) -> int:
        """Refreshes the shared repositories ran, all together."""
        return sum(r.refreshes for r in self._shared.values())

    def repository(
        self, device_trust: Path, config: AgentConfig, channels: SyncChannels, now: Callable[[], datetime]
    ) -> Repository:
        """The repository for a device whose root is installed in ``device_trust``."""
        try:
            root = (device_trust / "root.json").read_bytes()
        except FileNotFoundError:
            # Nothing to share: the device's own repository says so at its first check.
            return own_repository(device_trust, config, channels, now)
        digest = hashlib.sha256(root).hexdigest()
        key = (digest, config.hub, config.trust)
        with self._lock:
            found = self._shared.get(key)
            if found is None:
                # Named by the whole key: a later run on the same folders finds its own cache again.
                folder = self.folder / hashlib.sha256(repr(key).encode()).hexdigest()[:24]
                _install(folder, root)
                found = self._shared[key] = CoalescedRepository(self._build(folder, config, channels, now))
            return found


def _install(folder: Path, root: bytes) -> None:
    """The device's root, verified against its own keys, as the shared client's trust anchor."""
    from edge_agent.trust.repository import install_root  # python-tuf: loaded by the first device

    try:
        install_root(folder, root)
    except OSError as e:
        raise NotProvisionedError(f"cannot install the shared trusted root in {folder}: {e.strerror}") from e

"""The signed repository, built when the agent first checks something against it.

python-tuf, securesystemslib and the cryptography they use cost an agent about 10 MiB
resident (cryptography's compiled core alone is ~6 MiB), a third of what the agent adds
to the bare runtime it wraps. A device checks signed metadata only when an instruction
or an artifact arrives, or when the periodic repository check runs, so
:class:`LazyRepository` stands in for :class:`~edge_agent.trust.repository.TrustedRepository`
and imports that stack on the first call that needs it: a director signature to check
(:meth:`director_keys`), a metadata refresh (:meth:`refresh`), a target to look up
(:meth:`target`). Once loaded it stays loaded: Python cannot unload an extension module.

The first load runs on whichever thread asks (the event loop for a desired state, a
worker thread for a refresh) and takes a few hundred milliseconds once.

The status the agent publishes at every connect names the trusted root version;
:meth:`root_version` answers that without loading anything, from the file names of the
root chain python-tuf keeps (it writes a root there only after it verified it). The
loaded repository re-verifies that chain link by link before trusting any key in it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.config import AgentConfig
from edge_agent.fetcher import SyncChannels
from edge_agent.trust.director import DirectorKeys
from edge_agent.trust.targets import SignedTarget

if TYPE_CHECKING:
    from edge_agent.trust.repository import RefreshResult, TrustedRepository

__all__ = ["LazyRepository", "peek_root_version"]

log = logging.getLogger(__name__)


def peek_root_version(trust_dir: Path) -> int:
    """The newest root version held in ``trust_dir``, read from files without verifying; 0 when none.

    For reporting only: the installed root's version (checked against its own keys when it was
    installed), then each ``root_history/N.root.json`` that python-tuf wrote after verifying it.
    """
    try:
        data = json.loads((trust_dir / "root.json").read_bytes())
        version = data["signed"]["version"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return 0
    history = trust_dir / "metadata" / "root_history"
    while (history / f"{version + 1}.root.json").is_file():
        version += 1
    return version


class LazyRepository:
    """A :class:`~edge_agent.trust.channel.Repository` that builds the TUF client on first use."""

    def __init__(
        self,
        trust_dir: Path,
        *,
        config: AgentConfig,
        channels: SyncChannels,
        now: Callable[[], datetime],
    ) -> None:
        self.trust_dir = trust_dir
        self._config = config
        self._channels = channels
        self._now = now
        self._lock = threading.Lock()
        self._loaded: TrustedRepository | None = None

    @property
    def loaded(self) -> bool:
        """Whether the TUF client (and the stack under it) has been imported and built."""
        return self._loaded is not None

    def load(self) -> TrustedRepository:
        """The real repository, built (and its modules imported) on the first call."""
        with self._lock:
            if self._loaded is None:
                # Deferred on purpose: these imports are what this class exists to put off.
                from edge_agent.trust.repository import TrustedRepository
                from edge_agent.trust.transport import TufTransport

                c, t = self._config, self._config.trust
                transport = TufTransport(
                    channels=self._channels,
                    endpoint=c.hub.grpc_endpoint,
                    device_id=c.device_id,
                    tls=c.hub.grpc_tls,
                    ca_file=c.hub.ca_file,
                    cert_file=c.hub.cert_file,
                    key_file=c.hub.key_file,
                    http_base=t.http_url or None,
                    timeout_s=t.metadata_timeout_s,
                )
                self._loaded = TrustedRepository(self.trust_dir, transport, limits=t.limits(), now=self._now)
                log.debug("signed-update stack loaded for %s", self.trust_dir)
            return self._loaded

    def refresh(self) -> RefreshResult:
        return self.load().refresh()

    def target(self, path: str) -> SignedTarget | None:
        return self.load().target(path)

    def director_keys(self) -> DirectorKeys:
        return self.load().director_keys()

    def root_version(self) -> int:
        """The verified root's version once loaded; before that, what the files say (see the module doc)."""
        loaded = self._loaded
        if loaded is not None:
            return loaded.root_version()
        return peek_root_version(self.trust_dir)

"""The hub's update repository (TUF) and its keys.

``open_repository(settings, sessions)`` builds a :class:`TufRepository` from the hub's
settings; ``ensure_initialized`` creates the first root when the hub may do so itself.
"""

from __future__ import annotations

from cloud.clock import Clock, utcnow
from cloud.db import SessionFactory
from cloud.settings import Settings
from cloud.tuf.config import TufSettings
from cloud.tuf.errors import NotInitializedError
from cloud.tuf.keys import KeyDir, OnlineKeys, read_or_create_passphrase
from cloud.tuf.metadata import TargetSpec
from cloud.tuf.repository import TufRepository
from cloud.tuf.rotation import Rotation, RotationService

__all__ = [
    "Rotation",
    "RotationService",
    "TargetSpec",
    "TufRepository",
    "TufSettings",
    "ensure_initialized",
    "open_repository",
]


def open_repository(
    settings: Settings, sessions: SessionFactory, *, tuf: TufSettings | None = None, clock: Clock = utcnow
) -> TufRepository:
    tuf = tuf or TufSettings()
    keys_dir = tuf.resolved_keys_dir(settings.data_dir)
    if tuf.online_passphrase is not None:
        online_pass = tuf.online_passphrase.get_secret_value().encode()
    else:
        online_pass = read_or_create_passphrase(keys_dir / "online.passphrase")
    hub_root = None
    root_pass = keys_dir / "root.passphrase"
    if tuf.auto_init or root_pass.exists():
        hub_root = KeyDir(keys_dir / "root", read_or_create_passphrase(root_pass))
    return TufRepository(sessions, OnlineKeys(keys_dir, online_pass), tuf, hub_root=hub_root, clock=clock)


def ensure_initialized(repo: TufRepository) -> bool:
    """Create the first root with a development key when allowed; True when one was created."""
    if repo.initialized():
        return False
    if not repo.settings.auto_init or repo.hub_root is None:
        raise NotInitializedError(
            "the update repository has no root and auto-init is off: run `fleet keys init` against this hub"
        )
    RotationService(repo).init_development_root()
    return True

"""How many key rotations the API may propose in an hour.

Each proposal publishes (or prepares) a new root version that every device must walk through, one
version at a time; a script or a stuck button must not publish dozens in a minute. The count is read
from the rotations table, not kept in memory, so that it holds across replicas and restarts.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from cloud.errors import RateLimitedError
from cloud.models import TufRotation

WINDOW = timedelta(hours=1)
# The hub's own later-expiry refresh of a root it signs is not a caller's request, and the first root
# (version 1) creates the repository rather than rotating anything.
_NOT_COUNTED = ("root-refresh",)
_FIRST_ROOT = 1


def check_rotation_rate(session: Session, *, limit: int, now: datetime) -> None:
    """Raise RateLimitedError when ``limit`` rotations were proposed in the hour before ``now``."""
    since = now - WINDOW
    recent = session.exec(
        select(TufRotation.created_at)
        .where(
            col(TufRotation.created_at) > since,
            col(TufRotation.role).not_in(_NOT_COUNTED),
            col(TufRotation.root_version) > _FIRST_ROOT,
        )
        .order_by(col(TufRotation.created_at).desc())
        .limit(limit)
    ).all()
    if len(recent) < limit:
        return
    # A slot frees when the oldest of the last `limit` proposals leaves the window.
    frees_at = recent[-1] + WINDOW
    raise RateLimitedError(
        "key rotations",
        limit,
        int(WINDOW.total_seconds()),
        math.ceil((frees_at - now).total_seconds()),
    )

"""Targets as the signed repository describes them, and the rules every target name must pass.

A :class:`SignedTarget` is taken only from targets metadata that verified; the agent
never builds a file name from a target path (artifacts are stored by sha256), and it
refuses paths that could mean something else to a person or a file system: ``..``
segments, absolute paths, backslashes, control characters and any character outside
printable ASCII (a Cyrillic "o" look-alike in a model's name would read as that name).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edge_agent.errors import DigestMismatchError, LengthMismatchError, VerifyError
from edge_agent.trust.errors import HostileTargetError

__all__ = ["MAX_TARGET_PATH", "SignedTarget", "check_target_path", "verify_file"]

MAX_TARGET_PATH = 200
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_CHUNK = 1024 * 1024


def check_target_path(path: object) -> str:
    """Return ``path`` if it is a plain relative path of safe ASCII segments; raise otherwise."""
    if not isinstance(path, str) or not path:
        raise HostileTargetError(f"target path {path!r}: expected a non-empty string")
    shown = ascii(path)[:120]
    if len(path) > MAX_TARGET_PATH:
        raise HostileTargetError(f"target path {shown} is {len(path)} characters: at most {MAX_TARGET_PATH}")
    if not path.isascii() or not path.isprintable():
        raise HostileTargetError(f"target path {shown} has non-ASCII or control characters")
    if path.startswith("/") or "\\" in path:
        raise HostileTargetError(f"target path {shown} is absolute or has a backslash")
    for segment in path.split("/"):
        if segment in {"", ".", ".."} or not _SEGMENT.fullmatch(segment):
            raise HostileTargetError(
                f"target path {shown} has segment {segment!r}: expected letters, digits, '_', '.', '+' "
                "or '-', starting with a letter or digit"
            )
    return path


def _frozen(custom: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(custom or {}))


@dataclass(frozen=True, slots=True)
class SignedTarget:
    """One target from verified targets metadata: what its bytes must be."""

    path: str
    length: int
    sha256: str
    custom: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        check_target_path(self.path)
        object.__setattr__(self, "custom", _frozen(self.custom))

    @property
    def kind(self) -> str:
        value = self.custom.get("kind", "")
        return value if isinstance(value, str) else ""


def verify_file(path: Path, target: SignedTarget) -> None:
    """Raise :class:`VerifyError` unless the file holds exactly the target's bytes."""
    digest = hashlib.sha256()
    length = 0
    try:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                length += len(chunk)
                if length > target.length:
                    raise LengthMismatchError(
                        f"{target.path}: more than the signed {target.length} bytes (padded or endless data)"
                    )
                digest.update(chunk)
    except OSError as e:
        raise VerifyError(f"{target.path}: cannot read {path.name}: {e.strerror}") from e
    if length != target.length:
        raise LengthMismatchError(f"{target.path}: truncated: expected {target.length} bytes, got {length}")
    if digest.hexdigest() != target.sha256:
        raise DigestMismatchError(
            f"{target.path}: sha256 mismatch: expected {target.sha256}, got {digest.hexdigest()}"
        )

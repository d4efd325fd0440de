"""Checking a signed command (the cmd topic) against the director keys of the trusted root.

Commands travel like desired states: a ``SignedCommand`` carries the serialized ``Command``
and the director's signatures over exactly those bytes. The order of checks is the order of
trust: size, envelope, signatures (a threshold of distinct director keys), then the content
(this device, this fleet, not expired, a ``seq`` above the last accepted one). Nothing in the
command is read before its signatures verify.

The last accepted ``seq`` is saved (atomically) before the command is acted on, so that a
restart cannot reopen a replay:

    {state_dir}/trust/commands.json  {"version": 1, "seq": 12}

A damaged file is refused rather than reset, as the desired state's counter is.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

from google.protobuf.message import DecodeError

from edge_agent.trust.director import DirectorKeys, count_valid
from edge_agent.trust.errors import (
    CommandExpiredError,
    CommandRejectedError,
    CommandReplayError,
    CommandSignatureError,
    CommandWrongDeviceError,
    MalformedCommandError,
    TrustError,
    TrustStateError,
    UnsignedCommandError,
)
from edgefleet_proto.v1 import command_pb2
from model_tools.atomic import atomic_write

__all__ = [
    "DEFAULT_MAX_COMMAND_BYTES",
    "CommandChannel",
    "CommandSeqFile",
    "check_bare_command",
    "verify_signed_command",
]

# A signed command is a few hundred bytes; anything near this is not one.
DEFAULT_MAX_COMMAND_BYTES = 4096
_STATE_VERSION = 1


def _decode_command(data: bytes, what: str) -> command_pb2.Command:
    try:
        return command_pb2.Command.FromString(data)
    except DecodeError as e:
        raise MalformedCommandError(f"{what} is not a Command protobuf ({e})") from e


def _check_content(cmd: command_pb2.Command, *, device_id: str, fleet: str, now_ms: int) -> None:
    if cmd.device_id != device_id or (cmd.fleet and cmd.fleet != fleet):
        raise CommandWrongDeviceError(
            f"command seq={cmd.seq} is for device {cmd.device_id!r} in fleet {cmd.fleet!r}; "
            f"this is {device_id!r} in {fleet!r}"
        )
    if cmd.expires_at_ms and cmd.expires_at_ms < now_ms:
        raise CommandExpiredError(
            f"command seq={cmd.seq} expired at {cmd.expires_at_ms} ms; now is {now_ms} ms "
            "(a stale or replayed copy)"
        )


def verify_signed_command(
    payload: bytes,
    keys: DirectorKeys,
    *,
    device_id: str,
    fleet: str,
    last_seq: int,
    now_ms: int,
    max_bytes: int = DEFAULT_MAX_COMMAND_BYTES,
) -> command_pb2.Command:
    """The verified command; a :class:`CommandRejectedError` saying why otherwise. Pure."""
    if len(payload) > max_bytes:
        raise MalformedCommandError(f"command is {len(payload)} bytes: this device takes at most {max_bytes}")
    try:
        envelope = command_pb2.SignedCommand.FromString(payload)
    except DecodeError as e:
        raise UnsignedCommandError(
            f"command is not a signed envelope: expected a SignedCommand protobuf ({e})"
        ) from e
    if not envelope.signatures or not envelope.command:
        raise UnsignedCommandError("command carries no director signature: unsigned commands are refused")
    valid, unknown = count_valid(envelope.command, envelope.signatures, keys)
    if valid < keys.threshold:
        if unknown and len(unknown) == len(envelope.signatures):
            raise CommandSignatureError(
                f"command is signed by key(s) {', '.join(k[:16] for k in unknown)} that root "
                f"v{keys.root_version} does not name as director keys"
            )
        raise CommandSignatureError(
            f"command has {valid} valid director signature(s): root v{keys.root_version} "
            f"requires {keys.threshold}"
        )
    cmd = _decode_command(envelope.command, "signed payload")  # signed garbage: refused all the same
    # A signed command names its fleet; only the unsigned demo form may leave it out.
    if cmd.fleet != fleet:
        raise CommandWrongDeviceError(
            f"command seq={cmd.seq} is for device {cmd.device_id!r} in fleet {cmd.fleet!r}; "
            f"this is {device_id!r} in {fleet!r}"
        )
    if cmd.expires_at_ms <= 0:
        raise CommandExpiredError(f"command seq={cmd.seq} has no expiry: the director always sets one")
    _check_content(cmd, device_id=device_id, fleet=fleet, now_ms=now_ms)
    if cmd.seq <= last_seq:
        raise CommandReplayError(f"replayed command: seq {cmd.seq} is not above the last accepted {last_seq}")
    return cmd


def check_bare_command(
    payload: bytes, *, device_id: str, fleet: str, now_ms: int, max_bytes: int = DEFAULT_MAX_COMMAND_BYTES
) -> command_pb2.Command:
    """A bare Command, for an agent whose signed-update channel is switched off
    (``trust.require_signed = false``, the local demo): only device, fleet and expiry are checked."""
    if len(payload) > max_bytes:
        raise MalformedCommandError(f"command is {len(payload)} bytes: this device takes at most {max_bytes}")
    cmd = _decode_command(payload, "command")
    _check_content(cmd, device_id=device_id, fleet=fleet, now_ms=now_ms)
    return cmd


class CommandSeqFile:
    """The last accepted command's ``seq``, kept across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> int:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return 0
        except (OSError, UnicodeDecodeError) as e:
            raise TrustStateError(f"cannot read command state {self.path}: {e}") from e
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != _STATE_VERSION:
                raise ValueError(f"expected an object with version {_STATE_VERSION}")
            seq = data["seq"]
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
                raise ValueError(f"seq: expected a non-negative integer, got {seq!r}")
        except (ValueError, KeyError) as e:
            raise TrustStateError(
                f"command state {self.path} is damaged ({e}); refusing commands until it is repaired "
                "(re-provision the device)"
            ) from e
        return seq

    def save(self, seq: int) -> None:
        try:
            atomic_write(self.path, json.dumps({"version": _STATE_VERSION, "seq": seq}, sort_keys=True))
        except OSError as e:
            raise TrustStateError(f"cannot write command state {self.path}: {e.strerror}") from e


class CommandChannel:
    """Director checks for the cmd topic; the accepted seq is saved before a command is returned."""

    def __init__(
        self,
        director_keys: Callable[[], DirectorKeys],
        state: CommandSeqFile,
        *,
        device_id: str,
        fleet: str,
        wall_ms: Callable[[], int],
        max_bytes: int = DEFAULT_MAX_COMMAND_BYTES,
    ) -> None:
        self._keys = director_keys
        self._state = state
        self._device_id = device_id
        self._fleet = fleet
        self._wall_ms = wall_ms
        self._max_bytes = max_bytes
        self._seq: int | None = None
        self._lock = threading.Lock()

    @property
    def last_seq(self) -> int:
        if self._seq is None:
            self._seq = self._state.load()
        return self._seq

    def accept(self, payload: bytes) -> command_pb2.Command:
        """The verified command (its seq saved); a :class:`CommandRejectedError` otherwise."""
        with self._lock:
            try:
                cmd = verify_signed_command(
                    payload,
                    self._keys(),
                    device_id=self._device_id,
                    fleet=self._fleet,
                    last_seq=self.last_seq,
                    now_ms=self._wall_ms(),
                    max_bytes=self._max_bytes,
                )
                self._state.save(cmd.seq)
            except CommandRejectedError:
                raise
            except TrustError as e:  # no root installed, a damaged or unwritable state file
                raise CommandRejectedError(f"cannot check the director's signature: {e}") from e
            self._seq = cmd.seq
            return cmd

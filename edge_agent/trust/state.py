"""The trust state file: the last director instruction accepted, kept across restarts.

    {state_dir}/trust/state.json  {"version": 1, "director_counter": 12, "director_payload_sha256": "..."}

Written atomically (temp file, fsync, rename, fsync of the folder) before the
instruction is acted on, so that a crash cannot make the device forget a counter and
accept an older, replayed instruction afterwards. A damaged file is refused rather
than reset: starting from counter 0 would reopen every replay.
"""

from __future__ import annotations

import json
from pathlib import Path

from edge_agent.trust.director import DirectorMark
from edge_agent.trust.errors import TrustStateError
from model_tools.atomic import atomic_write

__all__ = ["TrustStateFile"]

STATE_VERSION = 1


class TrustStateFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> DirectorMark:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return DirectorMark()
        except (OSError, UnicodeDecodeError) as e:
            raise TrustStateError(f"cannot read trust state {self.path}: {e}") from e
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
                raise ValueError(f"expected an object with version {STATE_VERSION}")
            counter, digest = data["director_counter"], data["director_payload_sha256"]
            if not isinstance(counter, int) or isinstance(counter, bool) or counter < 0:
                raise ValueError(f"director_counter: expected a non-negative integer, got {counter!r}")
            if not isinstance(digest, str):
                raise ValueError(f"director_payload_sha256: expected a string, got {digest!r}")
        except (ValueError, KeyError) as e:
            raise TrustStateError(
                f"trust state {self.path} is damaged ({e}); refusing instructions until it is repaired "
                "(re-provision the device)"
            ) from e
        return DirectorMark(counter, digest)

    def save(self, mark: DirectorMark) -> None:
        body = json.dumps(
            {
                "version": STATE_VERSION,
                "director_counter": mark.counter,
                "director_payload_sha256": mark.payload_sha256,
            },
            sort_keys=True,
        )
        try:
            atomic_write(self.path, body)
        except OSError as e:
            raise TrustStateError(f"cannot write trust state {self.path}: {e.strerror}") from e

"""Find the command blocks a document marks for testing, and run them as a reader would.

A marked block is a fenced code block right after an HTML comment that names a walk:

    <!-- walkthrough -->                 run it; every command must succeed
    <!-- walkthrough: background -->     a long-running command, "in another terminal"

The comment may carry more words after the colon (``background``, ``skip``, ``key=value``);
they become the block's ``flags`` and ``options``. Only marked blocks are returned, so the
prose around them stays free to show fragments that are not meant to run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

__all__ = ["Background", "Block", "poll", "run_block", "shell_commands", "walk_blocks"]

T = TypeVar("T")

_MARKER = re.compile(r"^<!--\s*(?P<walk>[\w-]+)\s*(?::\s*(?P<words>.*?))?\s*-->\s*$")
_HEREDOC = re.compile(r"<<-?\s*(?P<q>['\"]?)(?P<word>\w+)(?P=q)")
_FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)\s*$")


@dataclass(frozen=True)
class Block:
    """One marked code block: its text, the language of the fence, and the marker's words."""

    walk: str
    line: int
    lang: str
    text: str
    flags: frozenset[str] = frozenset()
    options: Mapping[str, str] = field(default_factory=dict)

    @property
    def background(self) -> bool:
        return "background" in self.flags

    def where(self, doc: Path) -> str:
        return f"{doc.name}:{self.line}"


def walk_blocks(doc: Path, walk: str) -> list[Block]:
    """The blocks of ``doc`` marked ``<!-- walk ... -->``, in document order.

    A marker that is not followed (after blank lines only) by a fenced block is an error: a
    marked step that silently stops running is exactly the drift these tests are for.
    """
    lines = doc.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        marker = _MARKER.match(lines[i].strip())
        i += 1
        if marker is None or marker["walk"] != walk:
            continue
        flags: set[str] = set()
        options: dict[str, str] = {}
        for word in (marker["words"] or "").split():
            key, sep, value = word.partition("=")
            if sep:
                options[key] = value
            else:
                flags.add(word)
        while i < len(lines) and not lines[i].strip():
            i += 1
        fence = _FENCE.match(lines[i].strip()) if i < len(lines) else None
        if fence is None:
            raise ValueError(f"{doc.name}:{i}: the <!-- {walk} --> marker is not followed by a fenced block")
        start = i + 1
        end = start
        while end < len(lines) and lines[end].strip() != fence["fence"]:
            end += 1
        if end == len(lines):
            raise ValueError(f"{doc.name}:{start}: the fenced block never closes")
        text = "\n".join(lines[start:end]) + "\n"
        blocks.append(Block(walk, start + 1, fence["lang"], text, frozenset(flags), options))
        i = end + 1
    return blocks


def shell_commands(text: str) -> list[str]:
    """The commands of a shell block, in order: one per logical line (backslash continuations
    joined), a here-document kept whole with its command, comment-only lines dropped. Trailing
    comments stay: the shell ignores them."""
    commands: list[str] = []
    pending = ""
    lines = iter(text.splitlines())
    for raw in lines:
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command = (pending + line).strip()
        pending = ""
        heredoc = _HEREDOC.search(command)
        if heredoc is not None:
            body = []
            for body_line in lines:
                if body_line.strip() == heredoc["word"]:
                    break
                body.append(body_line)
            else:
                raise ValueError(f"here-document {heredoc['word']!r} never ends")
            command = "\n".join([command, *body, heredoc["word"]])
        commands.append(command)
    if pending:
        commands.append(pending.strip())
    return commands


def run_block(
    block: Block, *, cwd: Path, env: Mapping[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a foreground block with bash, stopping at the first command that fails."""
    return subprocess.run(
        ["bash", "-e", "-u", "-o", "pipefail", "-c", block.text],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Background:
    """A long-running block ("in another terminal"): its own process group, output to a file."""

    def __init__(self, block: Block, *, cwd: Path, env: Mapping[str, str], log: Path) -> None:
        self.block = block
        self.log = log
        self._out: IO[str] = log.open("w", encoding="utf-8")
        # A session of its own, so that stopping it reaches whatever it started (or exec'd into).
        self.proc = subprocess.Popen(
            ["bash", "-e", "-u", "-o", "pipefail", "-c", block.text],
            cwd=cwd,
            env=dict(env),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def output(self, tail: int = 4000) -> str:
        self._out.flush()
        return self.log.read_text(encoding="utf-8", errors="replace")[-tail:]

    def stop(self, grace_s: float = 20.0) -> int:
        """SIGTERM to the whole group (a clean stop), SIGKILL if it is still there after ``grace_s``."""
        try:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=grace_s)
        except ProcessLookupError:
            self.proc.wait(timeout=grace_s)
        finally:
            self._out.close()
        return self.proc.returncode


def poll(what: str, probe: Callable[[], T | None], *, deadline_s: float, every_s: float = 0.5) -> T:
    """Call ``probe`` until it returns something other than None, or fail naming ``what``.

    The interval paces calls to a remote process we cannot wait on directly; the deadline,
    not the interval, is what bounds the test.
    """
    end = time.monotonic() + deadline_s
    last: T | None = None
    while True:
        last = probe()
        if last is not None:
            return last
        if time.monotonic() >= end:
            raise TimeoutError(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(every_s)

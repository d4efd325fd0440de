"""Streaming multipart upload of a whole bundle: a manifest part and one part per file.

Each file part is written to the artifact store's temporary area while it is
hashed, and committed (content-addressed) when the part ends; nothing is
registered here. The caller registers the bundle and, on any failure, the files
this upload stored are removed again through ``discard``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio.to_thread
from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from cloud.artifacts import ArtifactInfo, ArtifactStore, ArtifactWriter
from cloud.errors import InvalidInputError, TooLargeError

MANIFEST_FIELD = "manifest"
FILE_FIELD = "file"
MAX_BUNDLE_FILES = 32
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class ReceivedBundle:
    manifest: bytes
    files: dict[str, ArtifactInfo]


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str = ""
    is_file: bool = False
    buffer: bytearray = field(default_factory=bytearray)


class _Reader:
    """Parser callbacks; disk work is queued as actions that the async loop runs off the event loop."""

    def __init__(self, store: ArtifactStore, max_file_bytes: int, max_manifest_bytes: int) -> None:
        self._store = store
        self._max_file = max_file_bytes
        self._max_manifest = max_manifest_bytes
        self._part = _Part()
        self._header_name = b""
        self._header_value = b""
        self.manifest: bytes | None = None
        self.writer: ArtifactWriter | None = None
        self.actions: list[tuple[str, ArtifactWriter, bytes, str]] = []
        self.names: set[str] = set()

    def on_part_begin(self) -> None:
        self._part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._part.headers[self._header_name.lower()] = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._part.headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise InvalidInputError("multipart part without a name: expected form-data; name=...")
        part = self._part
        part.name = options[b"name"].decode("utf-8", "replace")
        part.is_file = b"filename" in options
        if part.name == MANIFEST_FIELD:
            if self.manifest is not None:
                raise InvalidInputError("more than one manifest part: expected exactly one")
            return
        if part.name != FILE_FIELD or not part.is_file:
            raise InvalidInputError(
                f"unexpected form part {part.name!r}: "
                f"expected {MANIFEST_FIELD!r} and {FILE_FIELD!r} file parts"
            )
        part.filename = options[b"filename"].decode("utf-8", "replace")
        if not _FILE_NAME.match(part.filename):
            raise InvalidInputError(f"bundle file name {part.filename!r} must be a plain file name")
        if part.filename in self.names:
            raise InvalidInputError(f"bundle file {part.filename!r} is sent twice: expected each file once")
        if len(self.names) >= MAX_BUNDLE_FILES:
            raise InvalidInputError(f"too many bundle files: expected at most {MAX_BUNDLE_FILES}")
        self.names.add(part.filename)
        self.writer = self._store.writer(max_length=self._max_file)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part.name == MANIFEST_FIELD:
            self._part.buffer += data[start:end]
            if len(self._part.buffer) > self._max_manifest:
                raise InvalidInputError(f"manifest is larger than {self._max_manifest} bytes")
        elif self.writer is not None:
            self.actions.append(("write", self.writer, bytes(data[start:end]), ""))

    def on_part_end(self) -> None:
        if self._part.name == MANIFEST_FIELD:
            self.manifest = bytes(self._part.buffer)
        elif self.writer is not None:
            self.actions.append(("commit", self.writer, b"", self._part.filename))
            self.writer = None


async def receive_bundle_upload(
    request: Request,
    store: ArtifactStore,
    *,
    max_file_bytes: int,
    max_manifest_bytes: int,
    discard: Callable[[str], None],
) -> ReceivedBundle:
    """Read the multipart body; ``discard(sha256)`` removes a stored file again if the upload fails."""
    declared = request.headers.get("content-length")
    limit = MAX_BUNDLE_FILES * max_file_bytes + max_manifest_bytes + 64 * 1024
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLargeError(limit, int(declared))
    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in options:
        shown = ctype.decode("latin-1") or "none"
        raise InvalidInputError(
            f"expected a multipart/form-data body with a boundary, got content type {shown!r}"
        )
    reader = _Reader(store, max_file_bytes, max_manifest_bytes)
    parser = MultipartParser(
        options[b"boundary"],
        {
            "on_part_begin": reader.on_part_begin,
            "on_part_data": reader.on_part_data,
            "on_part_end": reader.on_part_end,
            "on_header_field": reader.on_header_field,
            "on_header_value": reader.on_header_value,
            "on_header_end": reader.on_header_end,
            "on_headers_finished": reader.on_headers_finished,
        },
    )
    files: dict[str, ArtifactInfo] = {}
    open_writers: list[ArtifactWriter] = []
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            await _apply(reader, files, open_writers)
        parser.finalize()
        await _apply(reader, files, open_writers)
        if reader.manifest is None:
            raise InvalidInputError(f"missing {MANIFEST_FIELD!r} part: expected the bundle's manifest.json")
        if reader.writer is not None:
            raise InvalidInputError("the body ended inside a file part")
    except BaseException as e:
        for writer in open_writers:
            writer.abort()
        if reader.writer is not None:
            reader.writer.abort()
        for info in files.values():
            await anyio.to_thread.run_sync(discard, info.sha256)
        if isinstance(e, MultipartParseError):
            raise InvalidInputError(f"malformed multipart body: {e}") from e
        raise
    return ReceivedBundle(manifest=reader.manifest, files=files)


async def _apply(reader: _Reader, files: dict[str, ArtifactInfo], open_writers: list[ArtifactWriter]) -> None:
    actions, reader.actions = reader.actions, []
    # Consecutive writes to one file go to disk as one write.
    merged: list[tuple[str, ArtifactWriter, bytes, str]] = []
    for action in actions:
        if merged and action[0] == "write" and merged[-1][0] == "write" and merged[-1][1] is action[1]:
            merged[-1] = ("write", action[1], merged[-1][2] + action[2], "")
        else:
            merged.append(action)
    for kind, writer, data, filename in merged:
        if writer not in open_writers:
            open_writers.append(writer)
        if kind == "write":
            await anyio.to_thread.run_sync(writer.write, data)
        else:
            files[filename] = await anyio.to_thread.run_sync(writer.commit)
            open_writers.remove(writer)

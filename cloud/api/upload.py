"""Streaming multipart upload straight into the artifact store.

FastAPI's form parsing would spool the whole file to a temporary file before the route
runs and cannot bound its length; this reads the request body as it arrives, writes the
file part to the store's temporary file while hashing it, and stops at the limit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import anyio.to_thread
from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from cloud.artifacts import ArtifactInfo, ArtifactStore, ArtifactWriter
from cloud.errors import InvalidInputError, TooLargeError

MAX_FIELD_BYTES = 1024
MAX_FIELDS = 16
# Room for the multipart framing and the small text fields around the file.
FORM_OVERHEAD_BYTES = 64 * 1024


@dataclass
class ReceivedUpload:
    fields: dict[str, str]
    artifact: ArtifactInfo
    filename: str


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    data: bytearray = field(default_factory=bytearray)
    is_file: bool = False


class _FormReader:
    """Parser callbacks: text fields kept in memory (small), file bytes queued for the writer."""

    def __init__(
        self,
        store: ArtifactStore,
        file_field: str,
        max_file_bytes: int,
        on_file_start: Callable[[Mapping[str, str]], None],
    ) -> None:
        self._store = store
        self._file_field = file_field
        self._max_file_bytes = max_file_bytes
        self._on_file_start = on_file_start
        self._part = _Part()
        self._header_name = b""
        self._header_value = b""
        self.fields: dict[str, str] = {}
        self.writer: ArtifactWriter | None = None
        self.filename = ""
        self.pending: list[bytes] = []

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
            raise InvalidInputError(
                "multipart part without a name: expected Content-Disposition: form-data; name=..."
            )
        self._part.name = options[b"name"].decode("utf-8", "replace")
        self._part.is_file = b"filename" in options
        if not self._part.is_file:
            if len(self.fields) >= MAX_FIELDS:
                raise InvalidInputError(f"too many form fields: expected at most {MAX_FIELDS}")
            return
        if self._part.name != self._file_field:
            raise InvalidInputError(
                f"unexpected file field {self._part.name!r}: expected {self._file_field!r}"
            )
        if self.writer is not None:
            raise InvalidInputError(f"more than one {self._file_field!r} part: expected exactly one file")
        # Fields sent before the file are checked now, so a bad name fails before the upload.
        self._on_file_start(self.fields)
        self.filename = options[b"filename"].decode("utf-8", "replace")
        self.writer = self._store.writer(max_length=self._max_file_bytes)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part.is_file:
            self.pending.append(data[start:end])
            return
        self._part.data += data[start:end]
        if len(self._part.data) > MAX_FIELD_BYTES:
            raise InvalidInputError(f"form field {self._part.name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if not self._part.is_file:
            self.fields[self._part.name] = self._part.data.decode("utf-8", "replace")


async def receive_upload(
    request: Request,
    store: ArtifactStore,
    *,
    max_file_bytes: int,
    file_field: str = "file",
    on_file_start: Callable[[Mapping[str, str]], None] = lambda _fields: None,
) -> ReceivedUpload:
    """Read a multipart/form-data body; the file part lands in the store, the rest in ``fields``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_file_bytes + FORM_OVERHEAD_BYTES:
        raise TooLargeError(max_file_bytes, int(declared))
    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in options:
        shown = ctype.decode("latin-1") or "none"
        raise InvalidInputError(
            f"expected a multipart/form-data body with a boundary, got content type {shown!r}"
        )
    reader = _FormReader(store, file_field, max_file_bytes, on_file_start)
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
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if reader.pending and reader.writer is not None:
                data = b"".join(reader.pending)
                reader.pending.clear()
                # Disk writes and hashing off the event loop.
                await anyio.to_thread.run_sync(reader.writer.write, data)
        parser.finalize()
        if reader.writer is None:
            raise InvalidInputError(f"missing file part: expected a form field {file_field!r} with a file")
        info = await anyio.to_thread.run_sync(reader.writer.commit)
    except MultipartParseError as e:
        raise InvalidInputError(f"malformed multipart body: {e}") from e
    finally:
        if reader.writer is not None:
            reader.writer.abort()  # no-op after a commit
    return ReceivedUpload(fields=reader.fields, artifact=info, filename=reader.filename)

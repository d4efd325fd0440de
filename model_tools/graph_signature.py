"""The signature of an ONNX graph, read from the file without loading its weights (light: stdlib only).

Two versions have the same signature when their graphs have the same nodes (operator, wiring,
attributes, in order) and the same inputs and outputs (names, element types, shapes). Weights are
not part of it: a retrained model keeps its signature, a new architecture does not. The agent uses it
to tell a retrained version (judged against the previous one) from an architecture change (judged
against its own profile and an absolute budget).

The file is walked as protobuf wire format: the graph's initializers, which hold nearly all the
bytes of a large model, are skipped with a seek, so the signature of a 200 MiB model costs a few
kilobytes of memory, where ``onnx.load`` would hold the whole model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO, Final

from model_tools.errors import ConfigError

__all__ = ["GraphSignatureError", "onnx_graph_signature"]

# ModelProto.graph; in GraphProto: node, input, output (see onnx/onnx.proto).
_MODEL_GRAPH: Final = 7
_GRAPH_HASHED: Final = {1: b"node", 11: b"input", 12: b"output"}
_LEN, _VARINT, _I64, _I32 = 2, 0, 1, 5
_CHUNK: Final = 1 << 16


class GraphSignatureError(ConfigError):
    """The file is not an ONNX model whose graph can be read."""


def _varint(f: BinaryIO, path: Path) -> int | None:
    """The next varint, or None at a clean end of file."""
    shift = result = 0
    while True:
        b = f.read(1)
        if not b:
            if shift == 0:
                return None
            raise GraphSignatureError(f"{path}: truncated protobuf varint")
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise GraphSignatureError(f"{path}: malformed protobuf varint")


def _skip(f: BinaryIO, wire: int, path: Path) -> None:
    if wire == _VARINT:
        _varint(f, path)
    elif wire == _I64:
        f.seek(8, 1)
    elif wire == _I32:
        f.seek(4, 1)
    elif wire == _LEN:
        length = _varint(f, path)
        f.seek(length or 0, 1)
    else:
        raise GraphSignatureError(f"{path}: unsupported protobuf wire type {wire}: not an ONNX model")


def _hash_range(f: BinaryIO, length: int, digest: hashlib._Hash, path: Path) -> None:
    left = length
    while left:
        block = f.read(min(left, _CHUNK))
        if not block:
            raise GraphSignatureError(f"{path}: truncated inside the graph")
        digest.update(block)
        left -= len(block)


def onnx_graph_signature(path: str | Path) -> str:
    """Hex sha256 over the graph's nodes, inputs and outputs, in file order; weights are skipped."""
    path = Path(path)
    digest = hashlib.sha256()
    found = False
    try:
        with path.open("rb") as f:
            while (key := _varint(f, path)) is not None:
                field, wire = key >> 3, key & 7
                if field != _MODEL_GRAPH or wire != _LEN:
                    _skip(f, wire, path)
                    continue
                found = True
                end = f.tell() + (_varint(f, path) or 0)
                while f.tell() < end:
                    inner = _varint(f, path)
                    if inner is None:
                        raise GraphSignatureError(f"{path}: truncated inside the graph")
                    g_field, g_wire = inner >> 3, inner & 7
                    tag = _GRAPH_HASHED.get(g_field)
                    if tag is None or g_wire != _LEN:
                        _skip(f, g_wire, path)
                        continue
                    length = _varint(f, path) or 0
                    # Each entry is framed (kind and length), so two graphs hash alike only if they match.
                    digest.update(tag + length.to_bytes(8, "little"))
                    _hash_range(f, length, digest, path)
    except OSError as e:
        raise GraphSignatureError(f"cannot read {path}: {e.strerror}") from e
    if not found:
        raise GraphSignatureError(f"{path}: no graph found: expected an ONNX ModelProto")
    return digest.hexdigest()

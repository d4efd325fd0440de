"""Tensors across the process boundary, and the checks a model's inputs must pass.

A ``Tensor`` message is raw little-endian bytes in C order plus a numpy dtype
name and a shape. Conversions validate all three and say what was expected and
what came, because these errors reach an application developer verbatim.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.errors import InputError
from edgefleet_proto.v1 import common_pb2, inference_pb2

__all__ = [
    "SUPPORTED_DTYPES",
    "InputCheck",
    "TensorSpec",
    "array_to_tensor",
    "check_inputs",
    "spec_to_proto",
    "tensor_to_array",
]

# Fixed-size numeric types only: strings and objects have no raw byte layout to send.
SUPPORTED_DTYPES = frozenset(
    {
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
    }
)

# Any dtype: the model, not the type checker, decides what an input may be.
Array = npt.NDArray[Any]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model input or output: name, numpy dtype name, shape with -1 for a dynamic dimension."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.dtype} {list(self.shape)}"


def spec_to_proto(spec: TensorSpec) -> inference_pb2.TensorSpec:
    return inference_pb2.TensorSpec(name=spec.name, dtype=spec.dtype, shape=list(spec.shape))


def tensor_to_array(tensor: common_pb2.Tensor, name: str = "") -> Array:
    """Decode a ``Tensor`` message; raise :class:`InputError` when its fields do not add up."""
    label = f"tensor {name!r}" if name else "tensor"
    if tensor.dtype not in SUPPORTED_DTYPES:
        raise InputError(
            f"{label}: unsupported dtype {tensor.dtype!r}; expected one of {sorted(SUPPORTED_DTYPES)}"
        )
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise InputError(f"{label}: shape {list(shape)} has a negative dimension")
    dtype = np.dtype(tensor.dtype).newbyteorder("<")
    needed = math.prod(shape) * dtype.itemsize
    if len(tensor.data) != needed:
        raise InputError(
            f"{label}: dtype {tensor.dtype} with shape {list(shape)} needs {needed} bytes, "
            f"got {len(tensor.data)}"
        )
    array: Array = np.frombuffer(tensor.data, dtype=dtype).reshape(shape)
    # Native byte order for the runtime; a no-op on little-endian machines.
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def array_to_tensor(array: npt.ArrayLike) -> common_pb2.Tensor:
    """Encode an array as a ``Tensor`` message (little-endian, C order)."""
    arr = np.asarray(array)
    if arr.dtype.name not in SUPPORTED_DTYPES:
        raise InputError(f"unsupported dtype {arr.dtype.name!r}; expected one of {sorted(SUPPORTED_DTYPES)}")
    canonical = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    return common_pb2.Tensor(dtype=arr.dtype.name, shape=list(canonical.shape), data=canonical.tobytes())


def _check_one(spec: TensorSpec, array: Array) -> None:
    if array.dtype.name != spec.dtype:
        raise InputError(f"input {spec.name!r}: expected dtype {spec.dtype}, got {array.dtype.name}")
    fits = len(array.shape) == len(spec.shape) and all(
        want < 0 or want == got for want, got in zip(spec.shape, array.shape, strict=True)
    )
    if not fits:
        raise InputError(f"input {spec.name!r}: expected shape {list(spec.shape)}, got {list(array.shape)}")


def check_inputs(specs: Sequence[TensorSpec], inputs: Mapping[str, Array]) -> dict[str, Array]:
    """Match ``inputs`` to ``specs`` by name and check dtype and shape.

    A single-input model also takes its one tensor under the empty name.
    Returns the inputs keyed by the model's names.
    """
    if len(specs) == 1 and set(inputs) == {""}:
        inputs = {specs[0].name: inputs[""]}
    wanted = {spec.name for spec in specs}
    missing = sorted(wanted - set(inputs))
    unknown = sorted(set(inputs) - wanted)
    if missing or unknown:
        expected = ", ".join(f"{s.name!r} ({s.describe()})" for s in specs)
        raise InputError(
            f"inputs do not match the model: expected {expected}; "
            f"missing {missing or 'none'}, unexpected {unknown or 'none'}"
        )
    checked: dict[str, Array] = {}
    for spec in specs:
        array = np.asarray(inputs[spec.name])
        _check_one(spec, array)
        checked[spec.name] = array
    return checked


class InputCheck:
    """:func:`check_inputs` for one model, prepared once: the serving path's common case costs
    a few comparisons, and anything unusual takes the full check for its precise error."""

    __slots__ = ("_dtype", "_fixed", "_name", "_rank", "_specs")

    def __init__(self, specs: Sequence[TensorSpec]) -> None:
        self._specs = tuple(specs)
        single = self._specs[0] if len(self._specs) == 1 else None
        self._name = self._dtype = None
        self._rank = -1
        self._fixed: tuple[tuple[int, int], ...] = ()
        if single is not None and single.dtype in SUPPORTED_DTYPES:
            self._name = single.name
            self._dtype = np.dtype(single.dtype)
            self._rank = len(single.shape)
            self._fixed = tuple((i, d) for i, d in enumerate(single.shape) if d >= 0)

    def __call__(self, inputs: Mapping[str, Any]) -> dict[str, Array]:
        if self._dtype is not None and len(inputs) == 1:
            ((name, array),) = inputs.items()
            if (
                name in (self._name, "")
                and type(array) is np.ndarray
                and array.dtype == self._dtype
                and array.ndim == self._rank
            ):
                shape = array.shape
                for i, d in self._fixed:
                    if shape[i] != d:
                        break
                else:
                    return {self._name: array}  # type: ignore[dict-item]
        return check_inputs(self._specs, inputs)

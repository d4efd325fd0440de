"""Tensor conversion and input checks: errors say what was expected and what came."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.errors import InputError
from edge_agent.tensors import TensorSpec, array_to_tensor, check_inputs, tensor_to_array
from edgefleet_proto.v1 import common_pb2

SPEC_X = TensorSpec("x", "float32", (-1, 4))


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "uint8", "bool", "float16"])
def test_arrays_round_trip_through_tensor_messages(dtype: str) -> None:
    array = (np.arange(12) % 3).astype(dtype).reshape(3, 4)
    tensor = array_to_tensor(array)
    assert tensor.dtype == dtype and list(tensor.shape) == [3, 4]
    back = tensor_to_array(tensor)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_non_contiguous_and_big_endian_arrays_are_sent_as_little_endian_c_order() -> None:
    array = np.arange(8, dtype=">i4").reshape(2, 4).T
    back = tensor_to_array(array_to_tensor(array))
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (common_pb2.Tensor(dtype="str", shape=[1], data=b"a"), "unsupported dtype 'str'"),
        (common_pb2.Tensor(dtype="float32", shape=[-1, 4], data=b""), "negative dimension"),
        (
            common_pb2.Tensor(dtype="float32", shape=[2, 4], data=b"\0" * 20),
            "dtype float32 with shape [2, 4] needs 32 bytes, got 20",
        ),
    ],
)
def test_inconsistent_tensors_are_refused(tensor: common_pb2.Tensor, message: str) -> None:
    with pytest.raises(InputError) as info:
        tensor_to_array(tensor, "x")
    assert message in str(info.value)


def test_a_single_input_model_accepts_the_empty_name() -> None:
    x = np.zeros((2, 4), np.float32)
    checked = check_inputs([SPEC_X], {"": x})
    assert list(checked) == ["x"]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"x": np.zeros((2, 4), np.float64)}, "input 'x': expected dtype float32, got float64"),
        ({"x": np.zeros((2, 3), np.float32)}, "input 'x': expected shape [-1, 4], got [2, 3]"),
        ({"x": np.zeros((4,), np.float32)}, "input 'x': expected shape [-1, 4], got [4]"),
        ({"z": np.zeros((2, 4), np.float32)}, "missing ['x'], unexpected ['z']"),
        ({}, "expected 'x' (float32 [-1, 4])"),
    ],
)
def test_mismatched_inputs_say_what_the_model_expects(inputs: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(InputError) as info:
        check_inputs([SPEC_X], inputs)
    assert message in str(info.value)


def test_the_prepared_input_check_agrees_with_the_full_one() -> None:
    from edge_agent.tensors import InputCheck

    specs = [TensorSpec("x", "float32", (-1, 4))]
    check = InputCheck(specs)
    x = np.ones((2, 4), np.float32)
    assert check({"x": x})["x"] is x  # no copy on the fast path
    assert check({"": x})["x"] is x
    for bad, message in [
        ({"x": np.ones((2, 4), np.float64)}, "expected dtype float32, got float64"),
        ({"x": np.ones((2, 5), np.float32)}, "expected shape [-1, 4], got [2, 5]"),
        ({"x": np.ones((2, 4, 1), np.float32)}, "expected shape [-1, 4], got [2, 4, 1]"),
        ({"y": x}, "missing ['x'], unexpected ['y']"),
        ({"x": [[1.0, 2.0, 3.0, 4.0]]}, "expected dtype float32, got float64"),  # not converted for you
    ]:
        with pytest.raises(InputError) as info:
            check(bad)
        assert message in str(info.value)

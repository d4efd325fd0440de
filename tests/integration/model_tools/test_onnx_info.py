"""describe_onnx on real files: well-formed models built with onnx.helper, and broken files."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from model_tools.errors import InvalidModelError
from model_tools.onnx_info import describe_onnx, numpy_dtype_name

pytestmark = pytest.mark.integration


def _write_model(path: Path, opset: int = 17) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    idx = helper.make_tensor_value_info("idx", TensorProto.INT64, [None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    shape = helper.make_tensor_value_info("shape", TensorProto.INT64, [2])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Shape", ["x"], ["shape"])],
        "g",
        [x, idx],
        [y, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests")
    model.ir_version = 8
    data = model.SerializeToString()
    path.write_bytes(data)
    return data


def test_describes_inputs_outputs_and_opset(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    _write_model(path, opset=17)
    schema = describe_onnx(path)
    assert [(s.name, s.dtype, s.shape) for s in schema.inputs] == [
        ("x", "float32", (-1, 3)),
        ("idx", "int64", (-1,)),
    ]
    assert [(s.name, s.dtype, s.shape) for s in schema.outputs] == [
        ("y", "float32", (-1, 3)),
        ("shape", "int64", (2,)),
    ]
    assert schema.opset == 17
    assert schema.ir_version == 8
    assert schema.producer == "tests"
    assert schema.input("x").shape == (-1, 3)
    with pytest.raises(KeyError, match="no output named 'z'"):
        schema.output("z")


@pytest.mark.parametrize(
    ("ort_type", "expected"),
    [
        ("tensor(float)", "float32"),
        ("tensor(double)", "float64"),
        ("tensor(float16)", "float16"),
        ("tensor(uint8)", "uint8"),
        ("tensor(bool)", "bool"),
        ("tensor(string)", "str"),
        ("seq(tensor(float))", "seq(tensor(float))"),
    ],
)
def test_numpy_dtype_names(ort_type: str, expected: str) -> None:
    assert numpy_dtype_name(ort_type) == expected


def _corrupt_files(tmp_path: Path) -> dict[str, Path]:
    good = _write_model(tmp_path / "good.onnx")
    files = {
        "empty": b"",
        "text": b"this is a README, not a model\n",
        "garbage": bytes(range(255, 0, -3)) * 20,
        "truncated": good[: len(good) // 2],
        "other-proto": onnx.helper.make_tensor("t", TensorProto.FLOAT, [2], [1.0, 2.0]).SerializeToString(),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.onnx"
        paths[name].write_bytes(data)
    paths["missing"] = tmp_path / "missing.onnx"
    return paths


@pytest.mark.parametrize("case", ["empty", "text", "garbage", "truncated", "other-proto", "missing"])
def test_broken_files_raise_invalid_model_error(tmp_path: Path, case: str) -> None:
    path = _corrupt_files(tmp_path)[case]
    with pytest.raises(InvalidModelError, match=str(path.name)):
        describe_onnx(path)

"""Large ONNX classifiers made on the fly, for the tests of real-size artifacts.

Nothing here is committed as a file: a 200 MiB model is written into the test's temporary folder.
The weights are random float32, written straight into the initializers' raw bytes so making one
costs the time to fill them once, not a protobuf copy per tensor. ``hidden`` sets the size (the
model holds ``(features + classes) * hidden`` floats); ``layers`` changes the architecture (one
hidden layer, or more of width ``hidden`` after a first narrow one), so two models can differ in
graph while keeping the same input and output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

MiB = 1024 * 1024

__all__ = ["MiB", "hidden_for", "make_large_onnx"]


def hidden_for(target_bytes: int, *, features: int = 64, classes: int = 10) -> int:
    """The hidden width that makes a one-hidden-layer model of about ``target_bytes``."""
    return max(1, target_bytes // (4 * (features + classes)))


def _weight(name: str, rows: int, cols: int, rng: np.random.Generator, scale: float) -> TensorProto:
    values = (rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(scale)).astype("<f4")
    tensor = TensorProto()
    tensor.name = name
    tensor.data_type = TensorProto.FLOAT
    tensor.dims.extend([rows, cols])
    tensor.raw_data = values.tobytes()
    return tensor


def make_large_onnx(
    path: Path,
    *,
    target_bytes: int,
    features: int = 64,
    classes: int = 10,
    layers: int = 1,
    seed: int = 0,
) -> Path:
    """Write an MLP classifier (``x`` [N, features] -> ``probs`` [N, classes]) of about ``target_bytes``.

    ``layers=1``: x -> MatMul(hidden) -> Relu -> MatMul(classes) -> Softmax.
    ``layers=2``: a different graph with the same input and output: a narrow first layer of 32 units,
    then the wide one, so the weights still come to about ``target_bytes``.
    """
    if layers not in (1, 2):
        raise ValueError(f"layers must be 1 or 2, got {layers}")
    rng = np.random.default_rng(seed)
    # The wide layer takes the narrow one's 32 units when there is one: the size stays about target_bytes.
    hidden = hidden_for(target_bytes, features=32 if layers == 2 else features, classes=classes)
    nodes = []
    inits = []
    width_in, current = features, "x"
    if layers == 2:
        inits.append(_weight("w0", features, 32, rng, 1.0 / np.sqrt(features)))
        nodes += [helper.make_node("MatMul", ["x", "w0"], ["h0"]), helper.make_node("Relu", ["h0"], ["a0"])]
        width_in, current = 32, "a0"
    inits.append(_weight("w1", width_in, hidden, rng, 1.0 / np.sqrt(width_in)))
    inits.append(_weight("w2", hidden, classes, rng, 1.0 / np.sqrt(hidden)))
    nodes += [
        helper.make_node("MatMul", [current, "w1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["a1"]),
        helper.make_node("MatMul", ["a1", "w2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        f"large_mlp_{layers}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = Path(path)
    # Serialized once into the file; a model over 2 GiB would need external data, far above these tests.
    path.write_bytes(model.SerializeToString())
    del model, inits
    onnx.checker.check_model(str(path))
    return path

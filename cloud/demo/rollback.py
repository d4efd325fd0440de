"""The demo's rollback step: a bad version goes out, and every device that tries it rolls back on its own.

The bad version has the demo model's interface with its weights zeroed and a bias on one
class: whatever the digit, it says "3" (garbage outputs that are finite numbers, so only
judging the answers catches them). It is pushed, assigned to the devices that take traffic
and run ONNX, and the demo sends them test digits. Each device judges the new version
during its trial: its predicted-class distribution diverges from the previous version's
on the same inputs, so the device swaps
the previous version back in at once, keeps answering, and reports ROLLED_BACK with the
reason and the figures. The step waits until every device that tried it did so, and shows
what the hub recorded (``GET /api/v1/rollbacks``, ``fleet rollbacks ls``), and that the hub
will not offer that version to those devices again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
from rich.console import Console
from rich.table import Table

from cloud.client.hub import HubClient, HubError
from edgefleet_proto.v1 import common_pb2, inference_pb2, inference_pb2_grpc

__all__ = ["BAD_CLASS", "make_constant_model", "run_rollback_step"]

T = TypeVar("T")

# The class the bad version always answers.
BAD_CLASS = 3
# Requests per device at most: a device needs min_requests (20) and a check (every 8th) to judge.
MAX_REQUESTS = 200


class RollbackStepError(RuntimeError):
    """The rollback step did not see what it expected; the message says what and where."""


def make_constant_model(
    inputs: Sequence[Mapping[str, Any]],
    outputs: Sequence[Mapping[str, Any]],
    dst: Path,
    *,
    answer: int = BAD_CLASS,
    like: Path | None = None,
) -> None:
    """Write an ONNX model with the interface the hub recorded for a classifier, whose weights are
    zero and whose bias picks class ``answer``: it loads, takes the same inputs, and answers garbage.

    ``like``: the good version's file. The bad one is then that graph with its weights zeroed, a
    retrain gone wrong, which a device judges against the previous version's answers. Without it the
    bad one is a graph of its own, which a device judges as a new architecture (against a data profile).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if like is not None:
        dst.write_bytes(_zeroed_like(onnx.load(str(like)), answer))
        return

    if len(inputs) != 1 or len(outputs) != 1:
        raise RollbackStepError(
            f"expected a one-input, one-output classifier, got {len(inputs)} in, {len(outputs)} out"
        )
    x, y = inputs[0], outputs[0]
    if x["dtype"] != "float32" or len(x["shape"]) < 2 or any(d <= 0 for d in x["shape"][1:]):
        raise RollbackStepError(f"expected a float32 input [batch, ...] with fixed features, got {x}")
    classes = int(y["shape"][-1])
    if classes <= answer:
        raise RollbackStepError(f"expected logits [batch, classes > {answer}], got {y}")
    features = int(np.prod(x["shape"][1:]))
    bias = np.zeros(classes, np.float32)
    bias[answer] = 10.0
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", [x["name"]], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "W"], ["zeroed"]),
            helper.make_node("Add", ["zeroed", "b"], [y["name"]]),
        ],
        "constant_answer",
        [helper.make_tensor_value_info(x["name"], TensorProto.FLOAT, ["batch", *x["shape"][1:]])],
        [helper.make_tensor_value_info(y["name"], TensorProto.FLOAT, ["batch", classes])],
        initializer=[
            numpy_helper.from_array(np.zeros((features, classes), np.float32), "W"),
            numpy_helper.from_array(bias, "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    dst.write_bytes(model.SerializeToString())


def _zeroed_like(model: Any, answer: int) -> bytes:
    """``model`` (a classifier's ModelProto) with every float weight zeroed and its output bias set to pick
    ``answer``: the same graph, so only its answers differ."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    for init in graph.initializer:
        values = numpy_helper.to_array(init)
        if np.issubdtype(values.dtype, np.floating):
            init.CopyFrom(numpy_helper.from_array(np.zeros_like(values), init.name))
    classes = graph.output[0].type.tensor_type.shape.dim[-1].dim_value
    producers = {out: node for node in graph.node for out in node.output}
    name: str | None = graph.output[0].name
    while name in producers:
        node = producers[name]
        biases = [i for i in node.input if i in weights and list(weights[i].dims)[-1:] == [classes]]
        biases = [b for b in biases if len(weights[b].dims) == 1 or all(d == 1 for d in weights[b].dims[:-1])]
        if biases:
            bias = numpy_helper.to_array(weights[biases[-1]]).copy()
            bias.reshape(-1)[answer] = 10.0
            weights[biases[-1]].CopyFrom(numpy_helper.from_array(bias, biases[-1]))
            onnx.checker.check_model(model)
            return bytes(model.SerializeToString())
        name = next((i for i in node.input if i not in weights), None)
    raise RollbackStepError(f"found no output bias of {classes} classes to set in the model's graph")


def _wait(what: str, probe: Callable[[], T | None], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() >= deadline:
            raise RollbackStepError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)  # a pause between polls of the hub's API, not a wait for an event


class _Device:
    """One device's local API over one channel."""

    def __init__(self, socket_path: str) -> None:
        self._channel = grpc.insecure_channel(f"unix:{socket_path}")
        self._stub = inference_pb2_grpc.InferenceServiceStub(self._channel)

    def predict(self, x: np.ndarray) -> tuple[int, str]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        tensor = common_pb2.Tensor(dtype="float32", shape=list(x.shape), data=x.tobytes())
        reply = self._stub.Predict(inference_pb2.PredictRequest(inputs={"": tensor}), timeout=10)
        out = next(iter(reply.outputs.values()))
        logits = np.frombuffer(out.data, dtype=np.dtype(out.dtype)).reshape(tuple(out.shape))
        return int(logits.argmax(axis=-1)[0]), reply.model.version

    def close(self) -> None:
        self._channel.close()


def _events(client: HubClient, device_id: str, kind: str, version: str) -> list[dict[str, Any]]:
    return [
        e
        for e in client.device_events(device_id, limit=100)
        if e["kind"] == kind and e["model_version"] == version
    ]


def run_rollback_step(
    *,
    client: HubClient,
    name: str,
    good_version: str,
    sockets: Mapping[str, str],
    samples: np.ndarray,
    workdir: Path,
    out: Console,
    timeout: float = 60.0,
    only: Collection[str] | None = None,
    offer: Callable[[str, list[str]], str] | None = None,
) -> dict[str, Any]:
    """Push and assign the bad version to the ONNX devices in ``sockets``, drive traffic, check that
    every one rolled back on its own; returns a summary. ``good_version`` is the one serving now.

    ``only``: take only these devices (a rollout's canary); ``offer(bad_version, devices)``: how the
    bad version reaches them (default: an assignment), returning the line to print.
    """
    good = next((m for m in client.list_models(name) if m["version"] == good_version), None)
    if good is None:
        raise RollbackStepError(f"model {name}:{good_version} is not registered")
    bad_version = f"{good_version[:56]}-bad"
    bad_path = workdir / f"{name}-{bad_version}.onnx"
    make_constant_model(good["inputs"], good["outputs"], bad_path)
    client.push_model(bad_path, name=name, version=bad_version)
    out.print(f"[bold]bad[/]      {name}:{bad_version}: weights zeroed, always answers {BAD_CLASS}")

    onnx_devices = {
        d["id"]
        for d in client.list_devices()
        if any(str(r).startswith("onnxruntime/") for r in d.get("capabilities", {}).get("runtimes", []))
    }
    targets = sorted(d for d in sockets if d in onnx_devices and (only is None or d in only))
    if not targets:
        raise RollbackStepError(f"none of the devices with a local API ({sorted(sockets)}) runs ONNX")
    if offer is None:
        client.assign(model=name, version=bad_version, devices=targets)
        out.print(f"[bold]assign[/]   {name}:{bad_version} -> {', '.join(targets)} (they take traffic)")
    else:
        out.print(offer(bad_version, targets))
    _wait(
        "every device to start the trial of the bad version",
        lambda: all(_events(client, d, "trial_started", bad_version) for d in targets),
        timeout,
    )
    t0 = time.monotonic()
    answered: dict[str, list[str]] = {}
    failed = 0
    for device_id in targets:
        device = _Device(sockets[device_id])
        versions: list[str] = []
        try:
            for i in range(MAX_REQUESTS):
                try:
                    _cls, version = device.predict(samples[i % len(samples)][None, ...])
                except grpc.RpcError:
                    failed += 1
                    continue
                versions.append(version)
                # The previous version answers again as soon as the device rolled back.
                if version == good_version and bad_version in versions:
                    break
        finally:
            device.close()
        answered[device_id] = versions

    def all_rolled_back() -> list[dict[str, Any]] | None:
        rows = client.list_rollbacks(model=name, version=bad_version)
        return rows if {r["device_id"] for r in rows} >= set(targets) else None

    rows = _wait("a ROLLED_BACK from every device that tried the bad version", all_rolled_back, timeout)
    took = time.monotonic() - t0
    table = Table(
        "device",
        "gate",
        "requests on trial",
        "JS divergence",
        "swap back ms",
        title="rollbacks the hub recorded",
    )
    for r in sorted(rows, key=lambda r: r["device_id"]):
        d = r["details"]
        table.add_row(
            r["device_id"],
            r["gate"],
            d.get("requests", "?"),
            d.get("js_divergence", "?"),
            d.get("swap_ms", "?"),
        )
    out.print(table)
    out.print(f"[bold]reason[/]   {rows[0]['reason']}")
    still_bad = [d for d, v in answered.items() if not v or v[-1] != good_version]
    if still_bad or failed:
        raise RollbackStepError(
            f"devices still answering with the bad version at the end: {still_bad or 'none'}; "
            f"failed requests: {failed}"
        )
    refused = _refused_again(client, name, bad_version, targets)
    out.print(f"[bold]refuse[/]   assigning it to them again: {refused}")
    out.print(
        f"[bold green]rollback[/] {len(rows)}/{len(targets)} devices rolled {name}:{bad_version} back on "
        f"their own in {took:.1f} s of traffic, with 0 failed requests; `fleet rollbacks ls` shows the same"
    )
    return {
        "bad_version": f"{name}:{bad_version}",
        "devices": len(targets),
        "rolled_back": len({r["device_id"] for r in rows}),
        "gates": sorted({r["gate"] for r in rows}),
        "failed_requests": failed,
        "requests_until_rollback": {d: len(v) for d, v in answered.items()},
    }


def _refused_again(client: HubClient, name: str, version: str, devices: Sequence[str]) -> str:
    try:
        client.assign(model=name, version=version, devices=list(devices))
    except HubError as e:
        if e.status == 409:
            # "hub answered 409 to POST ...: the hub does not offer X again to ...: <why, per device>"
            detail = str(e).split(": ", 1)[-1]
            return "409, " + detail.split(": ", 1)[0]
        raise
    raise RollbackStepError(f"the hub assigned {name}:{version} again to devices that rolled it back")

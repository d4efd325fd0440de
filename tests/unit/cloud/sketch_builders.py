"""Builders of sketch and telemetry windows as an agent sends them, for the telemetry pipeline's tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from datasketches import kll_floats_sketch  # type: ignore[import-untyped]

from cloud.clock import to_ms
from edgefleet_proto.v1 import sketch_pb2, telemetry_pb2
from tests.unit.cloud.helpers import T0

FEATURES = ("mean", "std")
WINDOW_S = 10


def kll(values: Sequence[float] | np.ndarray, k: int = 200) -> bytes:
    sketch = kll_floats_sketch(k)
    sketch.update(np.ascontiguousarray(values, dtype=np.float32))
    return bytes(sketch.serialize())


def window_ms(seq: int, *, offset_s: int = 0) -> tuple[int, int]:
    """Window ``seq`` of a device: WINDOW_S seconds, the first ending at T0 + offset_s."""
    end = to_ms(T0) + (offset_s + seq * WINDOW_S) * 1000
    return end - WINDOW_S * 1000, end


def sketch_window(
    seq: int,
    values: Sequence[float],
    *,
    offset_s: int = 0,
    model_version: str = "1",
    predicted: Sequence[int] = (),
    names: Sequence[str] = FEATURES,
) -> sketch_pb2.SketchWindow:
    """A window that saw ``values`` for every feature (the second feature doubled) and ``predicted``."""
    start, end = window_ms(seq, offset_s=offset_s)
    window = sketch_pb2.SketchWindow(
        seq=seq,
        window_start_ms=start,
        window_end_ms=end,
        model_name="tiny",
        model_version=model_version,
        samples=len(values),
        reduction="image_summary",
        class_counts=np.bincount(np.asarray(predicted, dtype=np.int64)).tolist() if predicted else [],
        confidence_kll=kll(values) if len(values) else b"",
    )
    for index, name in enumerate(names):
        column = [v * (index + 1) for v in values]
        window.features.add(
            name=name,
            kll_floats=kll(column),
            count=len(column),
            min=min(column) if column else 0.0,
            max=max(column) if column else 0.0,
        )
    return window


def sketch_batch(device_id: str, *windows: sketch_pb2.SketchWindow) -> sketch_pb2.SketchBatch:
    return sketch_pb2.SketchBatch(device_id=device_id, windows=windows)


def telemetry_window(
    seq: int,
    *,
    offset_s: int = 0,
    model_version: str = "1",
    requests: int = 10,
    errors: int = 1,
    p95_ms: float = 3.0,
    cpu_percent: float | None = None,
    rss_bytes: int = 0,
) -> telemetry_pb2.TelemetryWindow:
    start, end = window_ms(seq, offset_s=offset_s)
    window = telemetry_pb2.TelemetryWindow(
        seq=seq,
        window_start_ms=start,
        window_end_ms=end,
        model_name="tiny",
        model_version=model_version,
        requests=requests,
        errors=errors,
        latency=telemetry_pb2.LatencySummary(
            p50_ms=1.0, p95_ms=p95_ms, p99_ms=p95_ms, mean_ms=1.0, max_ms=p95_ms
        ),
    )
    if cpu_percent is not None:
        window.resources.CopyFrom(
            telemetry_pb2.ResourceUsage(
                cpu_percent=cpu_percent, rss_bytes=rss_bytes, peak_rss_bytes=rss_bytes * 2
            )
        )
    return window


def telemetry_batch(device_id: str, *windows: telemetry_pb2.TelemetryWindow) -> telemetry_pb2.TelemetryBatch:
    return telemetry_pb2.TelemetryBatch(device_id=device_id, windows=windows)

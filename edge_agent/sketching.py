"""Drift sketches per telemetry window: what the device saw (input features) and answered (classes).

Two halves, split by who pays for them:

- The request path, :meth:`SketchRecorder.record`, copies the request's first output
  row, and its input row when that row can still enter the window's feature sample,
  into preallocated ring slots (:class:`RowBuffer`), and returns. It never calls
  datasketches, takes no lock in the common case (slots are handed out by an atomic
  counter) and costs about a microsecond. A full buffer is handed over whole and a
  fresh one started.
- Bulk work runs on the event loop, off the request path: :meth:`SketchRecorder.drain`
  (scheduled once :data:`WAKE_ROWS` rows of full buffers wait, and at each window
  close) counts top-1 classes and sketches the top-1 probability of every row, and
  reduces the input rows to features with :func:`model_tools.profile.feature_columns`,
  the very function the bundle's baseline profile was built with, into a uniform
  sample of the window (:class:`~edge_agent.window_sketch.BottomK`, at most
  ``sample_rows``); :meth:`SketchRecorder.flush`, after the window closes, feeds each
  feature's sampled column to its KLL sketch in one ``update(array)`` and publishes
  the window.

Which reduction applies comes from the serving version's data profile (its ``reduction``
and ``image_shape``), unless the config overrides it; without a profile, 2-D inputs
(N, F) give one feature per column and (N, C, ...) inputs one per channel. Memory is
bounded: buffers hold at most ``buffer_rows`` rows and :data:`MAX_BUFFER_BYTES`; when
the loop falls behind by more than :data:`MAX_PENDING_BYTES` of full buffers (a caller
that predicts in a tight loop on the event loop's thread without yielding), the oldest
buffer is dropped and its rows counted in :attr:`SketchRecorder.dropped_rows`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.logs import Log
from edge_agent.tensors import Array
from edge_agent.window_sketch import (
    SAMPLE_ROWS,
    FeatureSpec,
    SpecSource,
    WindowSketch,
    default_spec,
    to_proto,
)
from edgefleet_proto.v1 import common_pb2, sketch_pb2, telemetry_pb2
from model_tools.errors import ConfigError as ReductionError
from model_tools.profile import FeatureColumns, feature_columns

__all__ = ["MAX_BUFFER_BYTES", "MAX_PENDING_BYTES", "WAKE_ROWS", "OutputSlot", "RowBuffer", "SketchRecorder"]

log = logging.getLogger(__name__)

# One buffer of input rows holds at most this much (a large image is then one row per buffer).
MAX_BUFFER_BYTES = 1 << 20
# Full buffers waiting for the event loop, at most (at least two buffers).
MAX_PENDING_BYTES = 4 << 20
# The event loop is woken for bulk work once this many rows wait (or a window closes): each wake
# costs thread switches and a fixed number of numpy calls, so fewer, larger batches cost less.
WAKE_ROWS = 4096
# A uniform key per row decides whether it enters the feature sample (thread-safe, ~40 ns).
_uniform = random.random


class RowBuffer:
    """Preallocated slots, each the bytes of one row (or of one batch) of a fixed dtype and row shape.

    Copying a small row with ``tobytes()`` into a list slot costs a fraction of a numpy
    slice assignment (measured on the serving path, where numpy's assignment machinery
    runs cold after the runtime); the bytes are joined into one array in bulk.
    Slots are written once and never reused, so a reference to one stays valid.
    """

    __slots__ = ("dtype", "row_shape", "slots")

    def __init__(self, size: int, dtype: np.dtype[Any], row_shape: tuple[int, ...]) -> None:
        self.slots: list[bytes] = [b""] * size
        self.dtype = dtype
        self.row_shape = row_shape

    @classmethod
    def of(cls, rows: Array) -> RowBuffer:
        """One slot holding a copy of ``rows`` (N, ...)."""
        buffer = cls(1, rows.dtype, tuple(rows.shape[1:]))
        buffer.slots[0] = rows.tobytes()
        return buffer

    def rows(self, count: int | None = None) -> Array:
        """The rows of the first ``count`` slots as one (N, ...) array (slots never written are skipped)."""
        return self.join(self.slots[:count])

    def join(self, slots: list[bytes]) -> Array:
        """``slots`` (of this buffer) as one (N, ...) array."""
        return np.frombuffer(b"".join(slots), self.dtype).reshape(-1, *self.row_shape)

    def row(self, index: int) -> Array:
        """The row(s) of one slot, (N, ...)."""
        return np.frombuffer(self.slots[index], self.dtype).reshape(-1, *self.row_shape)


# Where a prediction's first output landed: (buffer, slot, rows). Feedback keeps it and reads the
# predicted class back later.
OutputSlot = tuple[RowBuffer, int, int]
# The slot of a prediction whose outputs were not kept: no class scores to label.
_NO_SCORES: OutputSlot = (RowBuffer(1, np.dtype(np.float32), (0,)), 0, 1)


@dataclass(slots=True)
class _Chunk:
    """Rows recorded for one model: inputs (None when inputs are not sketched) and output scores."""

    model: common_pb2.ModelRef
    inputs: RowBuffer | None  # a slot left empty: the row did not enter the feature sample
    outputs: RowBuffer
    count: int  # slots used
    keys: list[float] | None  # the sample key of each input slot; None (a batch): drawn in bulk
    rows: int  # predictions (a batch's slot holds many)


@dataclass(slots=True)
class _Sealed:
    """A closed window waiting for its bulk work."""

    meta: telemetry_pb2.TelemetryWindow
    acc: WindowSketch
    chunks: list[_Chunk]
    labels: dict[str, Counter[tuple[int, int]]]


class _Open:
    """The buffers that take one-row predictions of one model now (replaced whole, never changed)."""

    __slots__ = ("cursor", "inputs", "keys", "model", "out_bytes", "outputs", "size", "x1")

    def __init__(
        self,
        *,
        model: common_pb2.ModelRef | None,
        x1: tuple[int, ...],
        size: int,
        inputs: RowBuffer | None,
        outputs: RowBuffer,
        out_bytes: int,
    ) -> None:
        self.model = model
        self.x1 = x1  # the shape of a one-row input
        self.size = size
        self.inputs = inputs
        self.outputs = outputs
        self.out_bytes = out_bytes  # the size of a one-row output
        self.keys: list[float] | None = [0.0] * size if inputs is not None else None
        # next() on a count is atomic: each request owns the slot it drew, without a lock.
        self.cursor: Iterator[int] = itertools.count()


_CLOSED = _Open(model=None, x1=(), size=0, inputs=None, outputs=_NO_SCORES[0], out_bytes=-1)


class SketchRecorder:
    """Records predictions cheaply, sketches them in bulk, and publishes one SketchWindow per window.

    ``publish`` receives each finished :class:`~edgefleet_proto.v1.sketch_pb2.SketchWindow`.
    With ``sketch_inputs`` false only outputs are kept (for label feedback) and a window
    reports only the labels it received.
    """

    def __init__(
        self,
        *,
        specs: SpecSource,
        publish: Callable[[sketch_pb2.SketchWindow], None],
        k: int = 200,
        buffer_rows: int = 256,
        sketch_inputs: bool = True,
        sample_rows: int = SAMPLE_ROWS,
        max_pending: int | None = None,
        logger: Log = log,
    ) -> None:
        if buffer_rows < 1 or (max_pending is not None and max_pending < 1):
            raise ValueError(f"buffer_rows and max_pending must be >= 1, got {buffer_rows}, {max_pending}")
        self._specs = specs
        self._publish = publish
        self._k = k
        self._sample_rows = sample_rows
        self._buffer_rows = buffer_rows
        self._sketch_inputs = sketch_inputs
        # Full buffers that may wait for the loop: fixed, or by MAX_PENDING_BYTES for the open buffers.
        self._fixed_pending = max_pending
        self._max_pending = max_pending or 2
        self._log = logger
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_scheduled = False
        self._open = _CLOSED
        self._pending: list[_Chunk] = []
        self._pending_rows = 0
        self._acc = WindowSketch(k, sample_rows)
        # Rows whose key is at or above this cannot enter the open window's feature sample.
        self._threshold = 1.0
        self._sealed: list[_Sealed] = []
        self._labels: dict[str, Counter[tuple[int, int]]] = {}
        self._warned: set[tuple[str, FeatureSpec]] = set()
        self._warned_record = False
        self._rng = np.random.default_rng()
        self.dropped_rows = 0
        self.published = 0
        self.bind_loop()

    # -- the request path --------------------------------------------------------------------------

    def record(self, model: common_pb2.ModelRef, x: Array, y: Array) -> OutputSlot:
        """Copy input rows ``x`` and output rows ``y`` of one request; where the outputs landed."""
        buf = self._open  # read once: a hand-over replaces it whole
        if model is buf.model and x.shape == buf.x1:
            i = next(buf.cursor)
            if i < buf.size:
                scores = y.tobytes()
                if len(scores) == buf.out_bytes:
                    buf.outputs.slots[i] = scores
                    if buf.keys is not None:
                        key = _uniform()
                        if key < self._threshold:
                            buf.keys[i] = key  # before the row: a row in a slot always has its key
                            buf.inputs.slots[i] = x.tobytes()  # type: ignore[union-attr]
                    return buf.outputs, i, 1
        return self._record_slow(model, x, y)

    def _record_slow(self, model: common_pb2.ModelRef, x: Array, y: Array) -> OutputSlot:
        with self._lock:
            try:
                return self._record_locked(model, np.asarray(x), np.asarray(y))
            except (ValueError, TypeError) as e:
                # Sketching must never fail a prediction: an input it cannot copy is left out.
                if not self._warned_record:
                    self._warned_record = True
                    self._log.warning(
                        "%s:%s: a prediction left out of the drift sketches: %s", model.name, model.version, e
                    )
                return _NO_SCORES

    def _record_locked(self, model: common_pb2.ModelRef, x: Array, y: Array) -> OutputSlot:
        # A model without a batch dimension answers one row per request.
        batched = x.ndim >= 2
        rows_in = x if batched else x.reshape(1, -1)
        n = rows_in.shape[0]
        if n == 0:
            return _NO_SCORES
        # Scores per row when the output has a row per input row; otherwise nothing to count.
        aligned = (y.ndim >= 1 and y.shape[0] == n) if batched else True
        rows_out = y.reshape(n, -1) if aligned and y.size % n == 0 else np.empty((n, 0), np.float32)
        if n != 1:
            # Batches go as a chunk of their own (a copy: the caller owns x).
            outputs = RowBuffer.of(rows_out)
            inputs = RowBuffer.of(rows_in) if self._sketch_inputs else None
            self._queue(_Chunk(model, inputs, outputs, 1, None, n))
            return outputs, 0, n
        buf = self._open
        fits = (
            buf.model is not None
            and (model is buf.model or model.sha256 == buf.model.sha256)
            and x.shape == buf.x1
            and rows_out.nbytes == buf.out_bytes
        )
        i = next(buf.cursor) if fits else buf.size
        if i >= buf.size:
            self._hand_over()
            buf = self._start(model, x.shape, rows_in, rows_out)
            i = next(buf.cursor)
        buf.outputs.slots[i] = rows_out.tobytes()
        if buf.inputs is not None and buf.keys is not None:
            key = _uniform()
            if key < self._threshold:
                buf.keys[i] = key
                buf.inputs.slots[i] = rows_in.tobytes()
        return buf.outputs, i, 1

    def _start(
        self, model: common_pb2.ModelRef, x1: tuple[int, ...], rows_in: Array, rows_out: Array
    ) -> _Open:
        """New buffers for one-row requests of ``model`` whose input has shape ``x1``."""
        row_shape = tuple(rows_in.shape[1:])
        row_bytes = rows_in.nbytes if self._sketch_inputs else 0
        size = max(1, min(self._buffer_rows, MAX_BUFFER_BYTES // max(row_bytes + rows_out.nbytes, 1)))
        inputs = RowBuffer(size, rows_in.dtype, row_shape) if self._sketch_inputs else None
        outputs = RowBuffer(size, rows_out.dtype, tuple(rows_out.shape[1:]))
        self._open = buf = _Open(
            model=model,
            x1=x1,
            size=size,
            inputs=inputs,
            outputs=outputs,
            out_bytes=rows_out.nbytes,
        )
        per_buffer = size * (row_bytes + rows_out.nbytes)
        self._max_pending = self._fixed_pending or max(2, MAX_PENDING_BYTES // max(per_buffer, 1))
        return buf

    def _hand_over(self) -> None:
        """Queue the open buffers' rows for bulk work (under the lock); the next record starts new ones."""
        chunk = self._detach()
        if chunk is not None:
            self._queue(chunk)

    def _detach(self) -> _Chunk | None:
        buf, self._open = self._open, _CLOSED
        if buf.model is None:
            return None
        # Slots drawn so far; one drawn but not yet written by a racing request stays empty and is skipped.
        used = min(next(buf.cursor), buf.size)
        return _Chunk(buf.model, buf.inputs, buf.outputs, used, buf.keys, used) if used else None

    def _queue(self, chunk: _Chunk) -> None:
        if not self._sketch_inputs:
            return  # outputs are kept only for feedback, which holds its own references
        self._pending.append(chunk)
        self._pending_rows += chunk.rows
        if len(self._pending) > self._max_pending:
            # The loop is not keeping up: drop the oldest rows, count them, keep memory bounded.
            lost = self._pending.pop(0)
            if not self.dropped_rows:
                self._log.warning("drift sketches fall behind: dropping the oldest rows (counted)")
            self.dropped_rows += lost.rows
            self._pending_rows -= lost.rows
        if self._pending_rows >= WAKE_ROWS or 2 * len(self._pending) > self._max_pending:
            self._wake()

    def _wake(self) -> None:
        """Schedule one flush on the event loop (called under the lock)."""
        loop = self._loop
        if loop is None or self._drain_scheduled:
            return
        # Set before scheduling: the loop's thread may run the flush before call_soon_threadsafe returns.
        self._drain_scheduled = True
        try:
            loop.call_soon_threadsafe(self._scheduled)
        except RuntimeError:  # the loop is closed: the next flush picks the rows up
            self._drain_scheduled = False

    # -- labels and window close (any thread, cheap) -----------------------------------------------

    def count_label(self, model_version: str, actual: int, predicted: int) -> None:
        """Count one labelled prediction into the open window."""
        with self._lock:
            self._labels.setdefault(model_version, Counter())[(actual, predicted)] += 1

    @property
    def has_labels(self) -> bool:
        return bool(self._labels)

    def seal(self, window: telemetry_pb2.TelemetryWindow) -> None:
        """Close the open sketch window together with telemetry ``window`` (same seq, times, model).

        Cheap enough for a swap inside a request: the rows move, the sketching waits for
        :meth:`flush`, which is scheduled on the event loop.
        """
        meta = telemetry_pb2.TelemetryWindow(
            seq=window.seq,
            window_start_ms=window.window_start_ms,
            window_end_ms=window.window_end_ms,
            model_name=window.model_name,
            model_version=window.model_version,
        )
        with self._lock:
            chunk = self._detach()
            if chunk is not None and self._sketch_inputs:
                self._pending.append(chunk)
            self._sealed.append(_Sealed(meta, self._acc, self._pending, self._labels))
            self._acc = WindowSketch(self._k, self._sample_rows)
            self._threshold = 1.0  # every row of the new window may enter its sample
            self._pending = []
            self._pending_rows = 0
            self._labels = {}
            self._wake()

    # -- bulk work (the event loop) ----------------------------------------------------------------

    def bind_loop(self) -> None:
        """Schedule bulk work on the running event loop, if any (the constructor and the first
        :meth:`flush` call this); without one, bulk work waits for :meth:`flush`."""
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    def _scheduled(self) -> None:
        with self._lock:
            self._drain_scheduled = False
        self.flush()

    def drain(self) -> None:
        """Sketch the open window's full buffers now."""
        with self._lock:
            chunks, acc = self._pending, self._acc
            self._pending, self._pending_rows = [], 0
        self._add(acc, chunks)

    def flush(self) -> int:
        """Sketch what is waiting and publish every closed window that has something to say.

        Returns how many SketchWindows were published.
        """
        if self._loop is None:
            self.bind_loop()
        self.drain()
        with self._lock:
            sealed, self._sealed = self._sealed, []
        published = 0
        for item in sealed:
            self._add(item.acc, item.chunks)
            if item.acc.samples or item.labels:
                self._publish(to_proto(item.meta, item.acc, item.labels))
                published += 1
        self.published += published
        return published

    def _add(self, acc: WindowSketch, chunks: list[_Chunk]) -> None:
        """Sketch ``chunks`` into ``acc``: one batch of numpy calls per model and row layout."""
        if not self._sketch_inputs:
            return
        groups: dict[tuple[object, ...], list[_Chunk]] = {}
        for chunk in chunks:
            if chunk.inputs is not None:
                layout = (chunk.model.sha256, chunk.inputs.dtype, chunk.inputs.row_shape, chunk.outputs.dtype)
                groups.setdefault((*layout, chunk.outputs.row_shape), []).append(chunk)
        for group in groups.values():
            try:
                self._add_group(acc, group)
            except Exception:
                # Sketches are observations: rows that cannot be sketched are logged and counted as
                # dropped, and never stop the telemetry loop that called this.
                model = group[0].model
                self._log.exception("%s:%s: rows left out of the drift sketches", model.name, model.version)
                self.dropped_rows += sum(chunk.rows for chunk in group)
        with self._lock:
            if acc is self._acc:  # a closed window's sample says nothing about the open one
                self._threshold = acc.threshold

    def _add_group(self, acc: WindowSketch, group: list[_Chunk]) -> None:
        first = group[0]
        assert first.inputs is not None
        row_bytes = first.inputs.dtype.itemsize * int(np.prod(first.inputs.row_shape))
        scores: list[bytes] = []
        rows: list[bytes] = []
        keys: list[Array] = []
        for chunk in group:
            assert chunk.inputs is not None
            # The input slots are copied first: a request writes its key before its row, so every
            # row copied has its key too (a racing request may still be writing one).
            slots = chunk.inputs.slots[: chunk.count]
            scores.extend(chunk.outputs.slots[: chunk.count])
            if chunk.keys is None:  # a batch: keys for its rows are drawn here
                rows.extend(slots)
                keys.append(self._rng.random((sum(len(s) for s in slots) // max(row_bytes, 1),)))
                continue
            picked = [(key, row) for key, row in zip(chunk.keys[: chunk.count], slots, strict=True) if row]
            rows.extend(row for _, row in picked)
            keys.append(np.array([key for key, _ in picked], np.float64))
        outputs = first.outputs.join(scores)
        if outputs.ndim == 2 and outputs.shape[1] >= 2:
            acc.add_outputs(outputs)
        inputs = first.inputs.join(rows)  # the rows that may enter the feature sample
        if inputs.shape[0]:
            columns, acc.reduction = self._reduce(first.model, inputs)
            acc.add_features(np.concatenate(keys), columns)
        acc.samples += outputs.shape[0]

    def _reduce(self, model: common_pb2.ModelRef, inputs: Array) -> tuple[FeatureColumns, str]:
        row_shape = tuple(inputs.shape[1:])
        spec = self._specs(model, row_shape)
        try:
            return feature_columns(
                inputs, image_shape=spec.image_shape, reduction=spec.reduction
            ), spec.reduction
        except ReductionError as e:
            # A profile or override that does not fit these inputs: sketch what can be sketched.
            fallback = default_spec(row_shape)
            if (model.sha256, spec) not in self._warned:
                self._warned.add((model.sha256, spec))
                self._log.warning(
                    "%s:%s: cannot reduce inputs with %s (%s); sketching %s instead",
                    model.name,
                    model.version,
                    spec,
                    e,
                    fallback.reduction,
                )
            return feature_columns(inputs, reduction=fallback.reduction), fallback.reduction

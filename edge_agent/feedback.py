"""Label feedback: an app tells the agent the true class of an earlier prediction, by its id.

Every prediction gets an id (``{prefix}{n}``: a random prefix per agent run, then a
counter), and the store keeps what a label is checked against: the model that answered,
where its output scores landed, and when. The store is a fixed ring of
``capacity`` entries, so the oldest prediction is forgotten first and memory never
grows; remembering one costs a tuple and a list store, no lock, on the request path.
A label is refused with a specific :class:`~edge_agent.errors.FeedbackError`: an id
that is unknown, forgotten or older than ``ttl_s``; a second label for one prediction;
a label that is not one of the model's classes.
"""

from __future__ import annotations

import itertools
import numbers
import secrets
import threading
from dataclasses import dataclass

import numpy as np

from edge_agent.clock import Clock
from edge_agent.errors import DuplicateLabelError, LabelError, UnknownPredictionError
from edge_agent.sketching import OutputSlot
from edgefleet_proto.v1 import common_pb2

__all__ = ["FeedbackResult", "FeedbackStore"]

# (serial, model, output slot, monotonic time of the prediction, label or None)
_Entry = tuple[int, common_pb2.ModelRef, OutputSlot, float, int | None]


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    """What a label said about its prediction."""

    model: common_pb2.ModelRef
    correct: bool
    predicted: int
    label: int


class FeedbackStore:
    """The last ``capacity`` predictions, each open to one label for ``ttl_s`` seconds."""

    def __init__(self, *, capacity: int, ttl_s: float, clock: Clock, prefix: str | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._clock = clock
        # A new prefix per run: an id from before a restart is unknown, never someone else's.
        self._prefix = prefix if prefix is not None else secrets.token_hex(4) + "-"
        self._serials = itertools.count(1)
        # Grows to `capacity` with use (a simulator runs a thousand agents, most of them quiet).
        self._entries: list[_Entry | None] = []
        self._lock = threading.Lock()

    def remember(self, model: common_pb2.ModelRef, slot: OutputSlot, now: float) -> str:
        """Keep one prediction (``now``: the clock's monotonic time); return its id."""
        # next() on a count is atomic, so each serial owns its ring position without a lock.
        n = next(self._serials)
        position = (n - 1) % self.capacity
        entries = self._entries
        if position < len(entries):
            entries[position] = (n, model, slot, now, None)
        else:
            with self._lock:  # only while the ring grows: appends must land in order
                entries.extend([None] * (position + 1 - len(entries)))
                entries[position] = (n, model, slot, now, None)
        return self._prefix + str(n)

    def label(self, prediction_id: str, label: int) -> FeedbackResult:
        """Record the true class of a prediction; raise a FeedbackError saying why not."""
        raw: object = label  # numpy integers are welcome; floats and bools are not class ids
        if isinstance(raw, bool) or not isinstance(raw, numbers.Integral):
            raise LabelError(f"expected an integer class id as the label, got {type(raw).__name__} {raw!r}")
        actual = int(raw)
        with self._lock:
            position, entry = self._find(prediction_id)
            n, model, (buffer, index, rows), at, previous = entry
            if previous is not None:
                raise DuplicateLabelError(
                    f"prediction {prediction_id} already has label {previous}: "
                    "expected one label per prediction"
                )
            scores = buffer.row(index)
            classes = scores.shape[1] if scores.ndim == 2 and scores.shape[0] == rows else 0
            what = f"{model.name}:{model.version}"
            if rows != 1:
                raise LabelError(
                    f"prediction {prediction_id} answered {rows} rows: expected a one-row prediction, "
                    "since a label names the class of one input"
                )
            if classes < 2:
                raise LabelError(f"prediction {prediction_id} by {what} has no class scores to label")
            if not 0 <= actual < classes:
                raise LabelError(
                    f"label {actual} is not a class of {what}: expected a class id in 0..{classes - 1}"
                )
            predicted = int(np.argmax(scores[0]))
            self._entries[position] = (n, model, (buffer, index, rows), at, actual)
        return FeedbackResult(model=model, correct=predicted == actual, predicted=predicted, label=actual)

    def _find(self, prediction_id: str) -> tuple[int, _Entry]:
        serial = prediction_id.removeprefix(self._prefix)
        n = int(serial) if serial != prediction_id and serial.isascii() and serial.isdigit() else 0
        position = (n - 1) % self.capacity
        entry = self._entries[position] if n > 0 and position < len(self._entries) else None
        if entry is None or entry[0] != n:
            raise UnknownPredictionError(
                f"unknown prediction id {prediction_id!r}: expected an id that Predict returned on this "
                f"device since it started, among its last {self.capacity} predictions"
            )
        age = self._clock.monotonic() - entry[3]
        if age > self.ttl_s:
            raise UnknownPredictionError(
                f"prediction {prediction_id} expired: labels are taken for {self.ttl_s:g} s after a "
                f"prediction, this one is {age:.0f} s old"
            )
        return position, entry

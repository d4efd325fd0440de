"""Judging a challenger against the champion on the same samples, and the decision in a sentence.

Both models are run as the ONNX files devices receive (the champion's registered artifact, the
challenger's fp32 baseline), on the base data set's held-out split plus the labelled uploads'
held-out share. The challenger is promoted when its accuracy over both beats the champion's or
comes within ``tolerance`` of it (a retrained model on more data that is as good is still the
fresher one); otherwise the champion stays and the figures say by how much it won.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

__all__ = ["DEFAULT_TOLERANCE", "Decision", "EvaluationSet", "decide", "score"]

# Accuracy points (as a fraction) a challenger may trail the champion by and still be promoted.
DEFAULT_TOLERANCE: Final = 0.005

Runner = Callable[[np.ndarray], np.ndarray]


class Decision(enum.StrEnum):
    PROMOTE = "promote"
    KEEP_CHAMPION = "keep_champion"


@dataclass(frozen=True)
class EvaluationSet:
    """The base held-out split and the labelled held-out rows, scored together and apart."""

    holdout_x: np.ndarray
    holdout_y: np.ndarray
    labelled_x: np.ndarray
    labelled_y: np.ndarray


def _accuracy(run: Runner, x: np.ndarray, y: np.ndarray, batch: int = 256) -> tuple[int, int]:
    right = 0
    for start in range(0, x.shape[0], batch):
        logits = run(np.ascontiguousarray(x[start : start + batch], dtype=np.float32))
        right += int(np.sum(np.asarray(logits).argmax(axis=1) == y[start : start + batch]))
    return right, int(x.shape[0])


def score(run: Runner, data: EvaluationSet) -> dict[str, Any]:
    """Accuracy on the held-out split, on the labelled held-out rows (when any), and over both."""
    right_h, n_h = _accuracy(run, data.holdout_x, data.holdout_y)
    right_l, n_l = _accuracy(run, data.labelled_x, data.labelled_y)
    total = n_h + n_l
    figures: dict[str, Any] = {
        "accuracy": (right_h + right_l) / total if total else 0.0,
        "holdout_accuracy": right_h / n_h if n_h else None,
        "holdout_samples": n_h,
        "labelled_accuracy": right_l / n_l if n_l else None,
        "labelled_samples": n_l,
    }
    return figures


def decide(
    champion: Mapping[str, Any], challenger: Mapping[str, Any], *, tolerance: float = DEFAULT_TOLERANCE
) -> tuple[Decision, str]:
    """Promote or keep the champion, with the reason and its figures in one sentence."""
    ours, theirs = float(challenger["accuracy"]), float(champion["accuracy"])
    samples = f"{champion['holdout_samples']} held-out"
    if champion.get("labelled_samples"):
        samples += f" and {champion['labelled_samples']} labelled"
    compared = f"the challenger scores {ours:.4f} against the champion's {theirs:.4f} on {samples} samples"
    gap = ours - theirs
    if gap > 0:
        return Decision.PROMOTE, f"{compared}: it beats the champion by {gap:.4f}"
    if gap >= -tolerance:
        return Decision.PROMOTE, f"{compared}: it matches the champion within the {tolerance:g} tolerance"
    return (
        Decision.KEEP_CHAMPION,
        f"{compared}: it trails by {-gap:.4f}, more than the {tolerance:g} tolerance; the champion stays",
    )

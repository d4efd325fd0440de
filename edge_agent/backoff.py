"""Capped exponential back-off with jitter.

A thousand devices that lose the broker at the same instant must not all come
back at the same instant: each delay is drawn from the upper half of its
exponential step ("equal jitter"), so delays stay near the schedule while the
fleet spreads out.
"""

from __future__ import annotations

import math
import random

from edge_agent.errors import ConfigError

__all__ = ["Backoff"]


class Backoff:
    """Delays of ``initial_s * multiplier**n`` capped at ``max_s``, each jittered into [d/2, d]."""

    def __init__(
        self,
        *,
        initial_s: float = 1.0,
        max_s: float = 120.0,
        multiplier: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if initial_s <= 0:
            raise ConfigError(f"back-off initial_s must be > 0, got {initial_s}")
        if max_s < initial_s:
            raise ConfigError(f"back-off max_s must be >= initial_s ({initial_s}), got {max_s}")
        if multiplier < 1:
            raise ConfigError(f"back-off multiplier must be >= 1, got {multiplier}")
        self._initial = initial_s
        self._max = max_s
        self._multiplier = multiplier
        self._rng = rng if rng is not None else random.Random()
        self._attempt = 0
        self._steps_to_cap = (
            0 if multiplier == 1 else math.ceil(math.log(max_s / initial_s) / math.log(multiplier))
        )

    @property
    def attempt(self) -> int:
        """How many delays were handed out since the last :meth:`reset`."""
        return self._attempt

    def ceiling(self) -> float:
        """The un-jittered delay the next call to :meth:`next_delay` draws below."""
        # Stop the exponent where the cap is reached: a long outage must not overflow the float.
        steps = min(self._attempt, self._steps_to_cap)
        return min(self._max, self._initial * self._multiplier**steps)

    def next_delay(self) -> float:
        """Seconds to wait before the next try; grows with each call until :meth:`reset`."""
        top = self.ceiling()
        self._attempt += 1
        return top / 2 + self._rng.uniform(0.0, top / 2)

    def reset(self) -> None:
        """Call after a success: the next failure starts again from ``initial_s``."""
        self._attempt = 0

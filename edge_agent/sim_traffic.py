"""Synthetic inference traffic for a simulated fleet: every device asks its own model, in-process.

``--traffic-rate 2 --traffic-data digits.npz`` makes each device call
:meth:`Agent.predict` twice a second on rows of the data file, so that telemetry
windows close with real requests and the hub's ingest carries load. Rows are
picked at random per device; ``--shift`` moves the rows some devices see:

    --shift region=north:0.5         add 0.5 standard deviations (of each feature in the file)
    --shift region=north:scale=1.3   multiply every feature by 1.3
    --shift ring=canary,region=eu:-1 several labels: a device must have them all ("*": every device)

Several shifts that match one device apply in the order given. The shifts can be switched
off and on while the fleet runs (:meth:`TrafficRunner.set_shift`; the fleet does it on SIGUSR1),
and ``--shift-paused`` starts with them off: a fleet runs unshifted while a new version rolls
out, then one cohort's inputs move. When the file has
labels ``y``, a share of the answers (``--feedback-rate``) gets its true label back
through :meth:`Agent.feedback`, which gives the hub accuracy to score.

Scheduling: device slots lie on a fixed grid (``start + phase + k/rate``, each slot
jittered within its own period), so the count over any span stays within one of
``rate x span`` however late the loop wakes. One task serves the whole fleet from a
heap of due times and wakes at most once per ``resolution_s``, so 1,000 devices at
1 request/s cost 1,000 predictions a second and no more than 100 wake-ups.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import random
import zipfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edge_agent.errors import AgentError, ConfigError, NoModelError
from edge_agent.serving import LoadedModel
from edge_agent.sim_labels import _check_part
from edge_agent.tensors import SUPPORTED_DTYPES, Array, TensorSpec

__all__ = [
    "DEFAULT_FEEDBACK_RATE",
    "RateSchedule",
    "ShapeMismatchError",
    "ShiftKind",
    "ShiftRule",
    "TrafficData",
    "TrafficPlan",
    "TrafficRunner",
    "TrafficStats",
    "TrafficTarget",
    "fit_rows",
    "parse_shift",
]

log = logging.getLogger(__name__)

DEFAULT_FEEDBACK_RATE = 0.5
_SHIFT_FORMAT = "SELECTOR:AMOUNT, e.g. region=north:0.5 or region=north:scale=1.3"
# Past this many seconds behind, slots are dropped (and counted), not sent in one burst.
_MAX_BEHIND_S = 1.0
# Hand the loop back to the agents after this many requests in one wake-up.
_YIELD_EVERY = 256


class ShapeMismatchError(AgentError):
    """The traffic data's rows do not fit the model a device serves."""


# -- shifts --------------------------------------------------------------------------------------


class ShiftKind(Enum):
    OFFSET = "offset"  # add amount x the feature's standard deviation
    SCALE = "scale"  # multiply by amount


@dataclass(frozen=True)
class ShiftRule:
    """A change to the rows that devices whose labels match ``selector`` see (empty: every device)."""

    selector: tuple[tuple[str, str], ...]
    kind: ShiftKind
    amount: float

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.selector)

    def describe(self) -> str:
        where = ",".join(f"{k}={v}" for k, v in self.selector) or "*"
        how = f"{self.amount:+g} std" if self.kind is ShiftKind.OFFSET else f"x{self.amount:g}"
        return f"{where}:{how}"


def parse_shift(text: str) -> ShiftRule:
    """``"region=north:0.5"``, ``"region=north:scale=1.3"``, ``"*:offset=-1"`` -> a ShiftRule.

    Selector items follow ``--label``'s conventions (``KEY=VALUE``, none of ``,:=`` or spaces inside).
    """
    option = "--shift"
    selector_text, sep, amount_text = text.rpartition(":")
    if not sep or not selector_text.strip():
        raise ConfigError(f"{option} {text!r}: expected {_SHIFT_FORMAT}")
    kind_text, eq, number = amount_text.partition("=")
    if not eq:
        kind_text, number = ShiftKind.OFFSET.value, amount_text
    try:
        kind = ShiftKind(kind_text.strip())
    except ValueError:
        kinds = [k.value for k in ShiftKind]
        raise ConfigError(
            f"{option} {text!r}: unknown shift {kind_text.strip()!r}: expected one of {kinds}"
        ) from None
    try:
        amount = float(number)
    except ValueError:
        amount = math.nan
    if not math.isfinite(amount):
        raise ConfigError(f"{option} {text!r}: the amount {number.strip()!r} is not a finite number")
    selector: list[tuple[str, str]] = []
    if selector_text.strip() != "*":
        for raw in selector_text.split(","):
            key, has_eq, value = raw.partition("=")
            if not has_eq:
                raise ConfigError(f"{option} {text!r}: the selector item {raw.strip()!r} is not KEY=VALUE")
            key = _check_part("key", key, raw.strip(), option)
            value = _check_part("value", value, raw.strip(), option)
            if any(k == key for k, _ in selector):
                raise ConfigError(f"{option} {text!r}: the selector names {key!r} twice")
            selector.append((key, value))
    return ShiftRule(tuple(selector), kind, amount)


# -- data ----------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TrafficData:
    """Rows ``x`` (N, ...) float32 and, when the file has them, labels ``y`` (N,) int64; read-only."""

    x: Array
    y: Array | None
    source: str = ""

    def __post_init__(self) -> None:
        where = f"traffic data {self.source}".strip()
        if self.x.ndim < 2 or len(self.x) == 0:
            raise ConfigError(f"{where}: expected x of shape (N, ...) with N >= 1, got {list(self.x.shape)}")
        if self.y is not None and self.y.shape != (len(self.x),):
            raise ConfigError(
                f"{where}: expected y of shape [{len(self.x)}] (a label per row of x), "
                f"got {list(self.y.shape)}"
            )

    @classmethod
    def load(cls, path: Path) -> TrafficData:
        """Read an ``.npz`` with arrays ``x`` and optional ``y``; ConfigError saying what is wrong."""
        where = f"--traffic-data {path}"
        if not path.is_file():
            raise ConfigError(f"{where}: no such file (expected an .npz with arrays x and optional y)")
        try:
            archive = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ConfigError(f"{where}: cannot read it as an .npz archive: {e}") from e
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ConfigError(f"{where}: expected an .npz archive with arrays x and y, got a single array")
        with archive:
            if "x" not in archive.files:
                raise ConfigError(f"{where}: expected an array named x, found {sorted(archive.files)}")
            try:
                x, y = archive["x"], archive["y"] if "y" in archive.files else None
            except (OSError, ValueError, zipfile.BadZipFile) as e:
                raise ConfigError(f"{where}: cannot read its arrays: {e}") from e
        if x.dtype.kind not in "fiub":
            raise ConfigError(f"{where}: expected x to hold numbers (float32), got dtype {x.dtype}")
        if y is not None:
            if y.dtype.kind not in "iub":
                raise ConfigError(f"{where}: expected y to hold whole class ids, got dtype {y.dtype}")
            if y.size and int(y.min()) < 0:
                raise ConfigError(f"{where}: expected class ids >= 0 in y, found {int(y.min())}")
            y = _frozen(y.astype(np.int64))
        return cls(_frozen(x.astype(np.float32)), y, str(path))

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def shifted(self, rules: Sequence[ShiftRule]) -> Array:
        """``x`` with ``rules`` applied in order; offsets count in each feature's std over the file."""
        if not rules:
            return self.x
        out = self.x.copy()
        std = self.x.std(axis=0)
        for rule in rules:
            if rule.kind is ShiftKind.OFFSET:
                out += np.float32(rule.amount) * std
            else:
                out *= np.float32(rule.amount)
        return _frozen(out)


def _frozen(a: npt.NDArray[np.generic]) -> Array:
    out = np.ascontiguousarray(a)
    out.setflags(write=False)
    return out


def fit_rows(row_shape: tuple[int, ...], loaded: LoadedModel) -> tuple[TensorSpec, tuple[int, ...]]:
    """The model's input and the shape one request takes; ShapeMismatchError when rows cannot fit.

    A leading dynamic dimension is the batch (one row per request); other dynamic dimensions take
    the row's own when the ranks agree. A row whose size matches is reshaped (64 values -> 1x8x8).
    """
    ref, specs = loaded.ref, list(loaded.runtime.inputs)
    model = f"model {ref.name}:{ref.version}"
    if len(specs) != 1:
        names = [s.name for s in specs]
        raise ShapeMismatchError(f"{model} takes {len(specs)} inputs {names}: traffic feeds one input")
    spec = specs[0]
    if spec.dtype not in SUPPORTED_DTYPES:
        raise ShapeMismatchError(f"{model} input {spec.name!r} has dtype {spec.dtype}: traffic sends numbers")
    shape = list(spec.shape)
    if shape and shape[0] < 0:
        shape[0] = 1
    rest = shape[1:]
    if any(d < 0 for d in rest) and len(rest) == len(row_shape):
        rest = [r if d < 0 else d for d, r in zip(rest, row_shape, strict=True)]
        shape = [shape[0], *rest]
    if any(d < 0 for d in shape) or math.prod(shape) != math.prod(row_shape):
        raise ShapeMismatchError(
            f"the traffic data's rows have shape {list(row_shape)} ({math.prod(row_shape)} values), but "
            f"{model} takes input {spec.name!r} of shape {list(spec.shape)}"
        )
    return spec, tuple(shape)


# -- scheduling ----------------------------------------------------------------------------------


class RateSchedule:
    """When one device sends: slot k at ``origin + (k + jitter x u_k) / rate`` with u_k in [0, 1).

    The grid is absolute, so lateness never accumulates; jitter below 1 keeps slots in order.
    """

    def __init__(
        self, rate: float, start: float, *, rng: random.Random, jitter: float = 0.5, max_behind_s: float = 1.0
    ) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a number of requests per second > 0, got {rate}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be a share of one period in [0, 1), got {jitter}")
        self._period = 1.0 / rate
        self._rng = rng
        self._jitter = jitter
        self._max_behind_s = max_behind_s
        # A random phase, so that a thousand devices started together do not send together.
        self._origin = start + rng.random() * self._period
        self._k = 0
        self.skipped = 0
        self.next_at = self._slot()

    def _slot(self) -> float:
        return self._origin + (self._k + self._jitter * self._rng.random()) * self._period

    def take_due(self, now: float) -> int:
        """How many slots fell due by ``now`` (each taken once); those older than max_behind_s are
        dropped into :attr:`skipped` instead, so a stalled loop does not answer with a burst."""
        if now - self.next_at > self._max_behind_s:
            first_kept = math.ceil((now - self._max_behind_s - self._origin) / self._period)
            if first_kept > self._k:
                self.skipped += first_kept - self._k
                self._k = first_kept
                self.next_at = self._slot()
        due = 0
        while self.next_at <= now:
            due += 1
            self._k += 1
            self.next_at = self._slot()
        return due


# -- the fleet's traffic -------------------------------------------------------------------------


class _Answer(Protocol):
    @property
    def id(self) -> str: ...


class TrafficTarget(Protocol):
    """What traffic needs of a device (:class:`edge_agent.agent.Agent`)."""

    @property
    def device_id(self) -> str: ...

    @property
    def active_model(self) -> LoadedModel | None: ...

    def predict(self, inputs: Mapping[str, npt.ArrayLike]) -> _Answer: ...

    def feedback(self, prediction_id: str, label: int) -> object: ...


@dataclass(frozen=True)
class TrafficPlan:
    """What every device sends: ``rate`` requests/s each, rows of ``data``, shifted by ``shifts``
    (held back at first when ``shift_paused``, until switched on)."""

    rate: float
    data: TrafficData
    shifts: tuple[ShiftRule, ...] = ()
    shift_paused: bool = False
    feedback_rate: float = DEFAULT_FEEDBACK_RATE
    jitter: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ConfigError(f"traffic rate: expected requests per second > 0, got {self.rate}")
        if not 0 <= self.feedback_rate <= 1:
            raise ConfigError(f"feedback rate: expected a share from 0 to 1, got {self.feedback_rate}")
        if not 0 <= self.jitter < 1:
            raise ConfigError(f"traffic jitter: expected a share of one period in [0, 1), got {self.jitter}")


@dataclass
class TrafficStats:
    sent: int = 0
    failed: int = 0
    no_model: int = 0  # of ``failed``: no model served yet
    labelled: int = 0
    feedback_failed: int = 0
    skipped: int = 0
    stopped: dict[str, int] = field(default_factory=dict)  # devices stopped, by reason

    def summary(self, devices: int, seconds: float) -> str:
        line = (
            f"traffic: {self.sent} requests sent, {self.failed} failed ({self.no_model} before a model "
            f"served), {self.labelled} labelled, by {_count(devices, 'device')} in {seconds:.1f} s"
        )
        if self.feedback_failed:
            line += f"; {self.feedback_failed} labels refused"
        if self.skipped:
            line += f"; {self.skipped} requests skipped while the loop was behind"
        for reason, count in self.stopped.items():
            line += f"; {_count(count, 'device')} stopped: {reason}"
        return line


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclass(eq=False)
class _Device:
    index: int
    target: Callable[[], TrafficTarget]
    variant: tuple[int, ...]  # which shifts apply, by index
    rng: random.Random
    schedule: RateSchedule | None = None
    fitted_for: LoadedModel | None = None
    fitted_variant: tuple[int, ...] = ()
    requests: Array | None = None  # requests[i] is row i, shifted by ``fitted_variant``, for ``fitted_for``
    stopped: bool = False


class TrafficRunner:
    """Sends ``plan``'s traffic to every device until cancelled; :attr:`stats` counts what happened.

    ``targets[i]()`` is device i as it is now (the simulator replaces an agent that restarts).
    ``now`` and ``sleep`` default to the running loop's clock and :func:`asyncio.sleep`.
    """

    def __init__(
        self,
        plan: TrafficPlan,
        targets: Sequence[Callable[[], TrafficTarget]],
        labels: Sequence[Mapping[str, str]],
        *,
        now: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        resolution_s: float = 0.01,
    ) -> None:
        if len(targets) != len(labels):
            raise ValueError(f"{len(targets)} targets but {len(labels)} label sets")
        self.plan = plan
        self.stats = TrafficStats()
        self._now = now
        self._sleep = sleep
        self._resolution_s = resolution_s
        self._devices = [
            _Device(
                index=i,
                target=target,
                variant=tuple(r for r, rule in enumerate(plan.shifts) if rule.matches(labels[i])),
                # Per device and seed, so that a run repeats its choices of rows, jitter and feedback.
                rng=random.Random(f"{plan.seed}:{i}"),
            )
            for i, target in enumerate(targets)
        ]
        self._shifted: dict[tuple[int, ...], Array] = {}
        self._requests: dict[tuple[tuple[int, ...], tuple[int, ...], str], Array] = {}
        self._started: float | None = None
        self._elapsed = 0.0
        self._shift_on = not plan.shift_paused

    @property
    def shift_on(self) -> bool:
        """Whether the plan's shifts apply now."""
        return self._shift_on

    def set_shift(self, on: bool) -> int:
        """Apply the plan's shifts from the next request on (True), or send every device the file's own
        rows (False); returns how many devices see shifted rows now."""
        self._shift_on = on
        return self.shifted_devices()

    def toggle_shift(self) -> int:
        """Switch the shifts off when on and on when off; returns how many devices see shifted rows now."""
        return self.set_shift(not self._shift_on)

    def shifted_devices(self) -> int:
        """Devices that see shifted rows now (0 while the shifts are off)."""
        return sum(1 for d in self._devices if d.variant) if self._shift_on else 0

    def unmatched_shifts(self) -> list[ShiftRule]:
        """Shifts that select none of the devices (a typo in a selector, most likely)."""
        used = {r for d in self._devices for r in d.variant}
        return [rule for r, rule in enumerate(self.plan.shifts) if r not in used]

    def summary(self) -> str:
        self.stats.skipped = sum(d.schedule.skipped for d in self._devices if d.schedule is not None)
        return self.stats.summary(len(self._devices), self._elapsed)

    async def run(self) -> None:
        """Send until cancelled (or until every device has stopped its traffic)."""
        now = self._now or asyncio.get_running_loop().time
        start = self._started = now()
        heap: list[tuple[float, int]] = []
        for d in self._devices:
            d.schedule = RateSchedule(self.plan.rate, start, rng=d.rng, jitter=self.plan.jitter)
            heap.append((d.schedule.next_at, d.index))
        heapq.heapify(heap)
        try:
            while heap:
                # Everything due within one resolution goes now: fewer wake-ups, same count per span.
                horizon = now() + self._resolution_s
                sent = 0
                while heap and heap[0][0] <= horizon:
                    _, index = heapq.heappop(heap)
                    device = self._devices[index]
                    assert device.schedule is not None
                    for _ in range(device.schedule.take_due(horizon)):
                        self._send(device)
                        sent += 1
                        if device.stopped:
                            break
                    if not device.stopped:
                        heapq.heappush(heap, (device.schedule.next_at, index))
                    if sent >= _YIELD_EVERY:
                        sent = 0
                        await self._sleep(0)
                if heap:
                    await self._sleep(max(0.0, heap[0][0] - now()))
        finally:
            self._elapsed = now() - start

    def _send(self, device: _Device) -> None:
        target = device.target()
        loaded = target.active_model
        variant = device.variant if self._shift_on else ()
        if device.requests is None or loaded is not device.fitted_for or variant != device.fitted_variant:
            try:
                device.requests = self._requests_for(variant, loaded)
            except ShapeMismatchError as e:
                self._stop(device, target.device_id, str(e))
                return
            device.fitted_for, device.fitted_variant = loaded, variant
        data = self.plan.data
        i = device.rng.randrange(len(data.x))
        self.stats.sent += 1
        try:
            answer = target.predict({"": device.requests[i]})
        except NoModelError:
            self.stats.failed += 1
            self.stats.no_model += 1
            return
        except AgentError as e:  # a bad input or a runtime failure: the device's telemetry counts it too
            self.stats.failed += 1
            log.debug("%s: traffic request failed: %s", target.device_id, e)
            return
        if data.y is not None and device.rng.random() < self.plan.feedback_rate:
            try:
                target.feedback(answer.id, int(data.y[i]))
            except AgentError as e:
                self.stats.feedback_failed += 1
                log.debug("%s: label refused: %s", target.device_id, e)
            else:
                self.stats.labelled += 1

    def _requests_for(self, variant: tuple[int, ...], loaded: LoadedModel | None) -> Array:
        """Every row, shifted for ``variant`` and shaped as one request to ``loaded``; shared by all
        devices alike (with no model yet: the rows as they are, with a batch dimension of one)."""
        data = self.plan.data
        if loaded is None:
            shape, dtype = (1, *data.row_shape), "float32"
        else:
            spec, shape = fit_rows(data.row_shape, loaded)
            dtype = spec.dtype
        key = (variant, shape, dtype)
        found = self._requests.get(key)
        if found is None:
            shifted = self._shifted.get(variant)
            if shifted is None:
                shifted = self._shifted[variant] = data.shifted([self.plan.shifts[r] for r in variant])
            as_requests = shifted.reshape(len(shifted), *shape).astype(dtype, copy=False)
            found = self._requests[key] = _frozen(as_requests)
        return found

    def _stop(self, device: _Device, device_id: str, reason: str) -> None:
        device.stopped = True
        if reason not in self.stats.stopped:
            # Said once: a fleet on one model would repeat it for every device.
            log.error("%s: traffic stopped: %s", device_id, reason)
        self.stats.stopped[reason] = self.stats.stopped.get(reason, 0) + 1

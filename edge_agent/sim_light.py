"""The light simulation mode: many simulated devices on one machine, sharing what is sound to share.

A real device loads its own onnxruntime session; ten thousand simulated devices doing
so would hold ten thousand copies of the same weights (and onnxruntime's per-session
arenas). In light mode (``edgefleet-agent simulate --light``) the devices of one process
share one session per artifact, keyed by the artifact's sha256, and one signed-update metadata
client, and each device keeps everything else of its own: its state file, serving slot, update
machine, telemetry, sketches, director counter and MQTT connection. What light mode changes, and
why it is sound:

- **onnxruntime sessions**, shared by sha256 (:class:`SharedRuntimes`). The key is the
  store's address of a file the agent has verified (``.../sha256/<hex>``); a path that
  is not such an address loads a session of its own. ``InferenceSession.run`` is
  thread-safe and keeps no state between calls, so sharing changes no answer. Other
  runtimes (LiteRT's interpreter holds its tensors between calls) are never shared.
- **the outbox** is in memory, not an SQLite file per device: three open files per
  device would exceed the open-file limit at 10,000 devices. Messages still wait for the
  broker's PUBACK; only a crash of the simulator loses them, which a simulation accepts.
- **the state file** is written atomically but not fsynced: a device fsyncs it before every step
  of an update, and ten thousand devices on one disk spent most of the event loop in those fsyncs
  while a rollout's downloads waited. A crash of the process still finds the old or the new state;
  only a power cut of the simulating machine may lose the last one.
- **the MQTT keepalive** is the shipped broker's longest (120 s, set in :mod:`edge_agent.sim`):
  ten thousand devices on one event loop, busy with a rollout, can go longer than 1.5 x 30 s
  without a turn to ping, and the broker would drop them all. A publish waits as long for its
  acknowledgement (``mqtt.ack_timeout_s``), for the same reason. A real device has its own CPU.
- **the signed-update repository** (TUF metadata), one client per trusted root and hub, refreshed
  for devices that ask together at once (:mod:`edge_agent.sim_trust`): a device still gets
  metadata refreshed after it asked, checks the director's signature and counter on its
  instructions itself, and checks its own downloaded bytes against the target the metadata lists.
  Refreshing it once per device was 40% of a 10,000-device rollout in one process.

Each MQTT client is driven by the one asyncio loop (aiomqtt registers the socket with the
loop's selector), so the fleet runs no thread per device in either mode.
"""

from __future__ import annotations

import functools
import re
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

from edge_agent.runtime import ModelRuntime, RuntimeOptions, RuntimeRegistry

__all__ = ["LIGHT_NOTE", "SHARED_FORMATS", "SessionCache", "SharedRuntimes", "open_files_per_device"]

# What the help and the bench say about the mode.
LIGHT_NOTE = (
    "light: one onnxruntime session per artifact (by sha256) shared by the devices; one TUF metadata "
    "client per trusted root and hub, refreshes shared by devices asking together; outbox in memory; "
    "state files not fsynced; keepalive and acknowledgement timeout 120 s"
)
# Formats whose loaded runtime is safe to share between devices (stateless, thread-safe run).
SHARED_FORMATS = frozenset({"onnx"})

_ADDRESS = re.compile(r"^[0-9a-f]{64}$")


def open_files_per_device(light: bool) -> int:
    """Open files one simulated device may hold: its broker socket, and in full mode its queue
    database (three files with SQLite's journal) and perhaps a local API socket."""
    return 2 if light else 8


def artifact_address(path: Path) -> str | None:
    """The sha256 that ``path`` is stored under (``.../sha256/<hex>``), or None for any other path."""
    if path.parent.name == "sha256" and _ADDRESS.fullmatch(path.name):
        return path.name
    return None


@dataclass(frozen=True, slots=True)
class _Key:
    fmt: str
    sha256: str
    options: RuntimeOptions


class SessionCache:
    """Loaded runtimes by (format, sha256, options), held while some device holds them.

    Weak values: once no device serves (or keeps as its rollback target) a version, its
    session is freed like a device's own would be. ``loads`` counts real loads (the tests and
    the bench read it).
    """

    def __init__(self) -> None:
        self._loaded: weakref.WeakValueDictionary[_Key, ModelRuntime] = weakref.WeakValueDictionary()
        # Loads run in worker threads; one lock makes a thousand devices that ask for the same
        # artifact at once wait for one load instead of running a thousand.
        self._lock = threading.Lock()
        self.loads = 0
        # By id(), with the registry itself kept beside its names so that its id stays its own.
        self._names: dict[int, tuple[RuntimeRegistry, tuple[str, ...]]] = {}

    def runtime_names(self, registry: RuntimeRegistry) -> tuple[str, ...]:
        """``registry.runtime_names()``, asked once per registry and kept."""
        names = self._names.get(id(registry))
        if names is None:
            names = self._names[id(registry)] = (registry, tuple(registry.runtime_names()))
        return names[1]

    def __len__(self) -> int:
        return len(self._loaded)

    def load(self, registry: RuntimeRegistry, fmt: str, path: Path, options: RuntimeOptions) -> ModelRuntime:
        sha256 = artifact_address(path)
        if fmt not in SHARED_FORMATS or sha256 is None:
            return registry.load(fmt, path, options)
        key = _Key(fmt, sha256, options)
        with self._lock:
            found = self._loaded.get(key)
            if found is None:
                found = registry.load(fmt, path, options)
                self._loaded[key] = found
                self.loads += 1
            return found


class SharedRuntimes(RuntimeRegistry):
    """A device's runtime registry (``base``: the runtimes it has) that loads through ``cache``."""

    def __init__(self, base: RuntimeRegistry, cache: SessionCache) -> None:
        super().__init__({fmt: functools.partial(self._load_one, fmt) for fmt in base.formats})
        self._base = base
        self._cache = cache
        # Asking the installed packages for their versions parses their metadata: once per base.
        self._names = cache.runtime_names(base)

    def _load_one(self, fmt: str, path: Path, options: RuntimeOptions) -> ModelRuntime:
        return self._cache.load(self._base, fmt, path, options)

    def runtime_names(self) -> list[str]:
        return list(self._names)

"""Over-the-air update costs: verifying one update, and firmware deltas.

    python bench/ota.py [--artifact-mib 8] [--image-mib 4] [--repeat 5]

1. Verification per update: the hub's real repository (python-tuf metadata in SQLite,
   director signing) and the agent's real signed-update channel, in one process with the
   network replaced by direct calls. One update = the director's signature checked at
   intake + a TUF refresh (root, timestamp, snapshot, targets) + the target matched +
   the artifact's length and sha256. Beside it: a bare sha256 of the same file.
2. Deltas: a firmware-like image with 1% of its bytes changed in scattered 16-byte runs;
   the patch from bsdiff4 and from zstd with the old image as dictionary, against the
   full image's size, and the time to apply each beside a bare sha256 of the image.

The last line of output is one JSON object (see ../shared/DESIGN.md, "Benchmarks").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "proto"))

from tuf.api.exceptions import DownloadHTTPError  # noqa: E402
from tuf.ngclient.fetcher import FetcherInterface  # noqa: E402

from cloud.db import create_all, create_db_engine, session_factory  # noqa: E402
from cloud.errors import NotFoundError  # noqa: E402
from cloud.services.director import Director  # noqa: E402
from cloud.settings import Settings  # noqa: E402
from cloud.tuf import TargetSpec, TufRepository, TufSettings, ensure_initialized, open_repository  # noqa: E402
from edge_agent.trust.channel import SignedUpdateChannel  # noqa: E402
from edge_agent.trust.repository import TrustedRepository, install_root  # noqa: E402
from edge_agent.trust.state import TrustStateFile  # noqa: E402
from edgefleet_proto.v1 import common_pb2, desired_pb2  # noqa: E402
from firmware_images.delta import apply_delta, make_delta  # noqa: E402

MiB = 1024 * 1024


class InProcess(FetcherInterface):
    """The hub's /tuf/metadata files, handed over without a network."""

    def __init__(self, repo: TufRepository) -> None:
        self.repo = repo

    def _fetch(self, url: str) -> Iterator[bytes]:
        try:
            return iter([self.repo.metadata_file(url.rpartition("/")[2])])
        except NotFoundError as e:
            raise DownloadHTTPError(str(e), 404) from e


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` runs."""
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bench_verify(work: Path, artifact_bytes: int, repeat: int) -> dict[str, float]:
    engine = create_db_engine(f"sqlite:///{work / 'hub.db'}")
    create_all(engine)
    sessions = session_factory(engine)
    repo = open_repository(Settings(data_dir=work / "hub"), sessions, tuf=TufSettings())
    ensure_initialized(repo)
    data = os.urandom(artifact_bytes)
    sha = hashlib.sha256(data).hexdigest()
    artifact = work / "artifact.bin"
    artifact.write_bytes(data)
    # A realistic targets file: the artifact among a few hundred others.
    specs = [
        TargetSpec(f"models/m/{i}/{i:064x}.onnx", f"{i:064x}", 1000 + i, {"kind": "model"})
        for i in range(300)
    ]
    specs.append(TargetSpec(f"models/m/bench/{sha}.onnx", sha, len(data), {"kind": "model"}))
    repo.update_targets(specs)
    director = Director(repo)
    device = work / "device"
    install_root(device / "trust", repo.root_bytes())
    channel = SignedUpdateChannel(
        TrustedRepository(device / "trust", InProcess(repo)),
        TrustStateFile(device / "trust" / "state.json"),
        device_id="bench-1",
        fleet="bench",
        wall_ms=lambda: int(datetime.now(UTC).timestamp() * 1000),
    )
    ref = common_pb2.ModelRef(name="m", version="bench", format="onnx", sha256=sha, length=len(data))
    generation = [0]

    def one_update() -> None:
        generation[0] += 1
        desired = desired_pb2.DesiredState(
            device_id="bench-1", fleet="bench", generation=generation[0], model=ref
        )
        with sessions() as session:
            envelope = director.seal(session, desired, force=True)
            session.commit()
        t0 = time.perf_counter()
        verified = channel.decode(envelope)
        channel.verify(artifact, ref, verified)
        spent.append(time.perf_counter() - t0)

    spent: list[float] = []
    one_update()  # the first refresh also caches root: not what a running device pays per update
    spent.clear()
    for _ in range(repeat):
        one_update()
    verify_s = statistics.median(spent)
    sha_s = timed(lambda: sha256_file(artifact), repeat)
    engine.dispose()
    return {
        "artifact_mib": artifact_bytes / MiB,
        "verify_ms": verify_s * 1000,
        "sha256_ms": sha_s * 1000,
        "verify_overhead_ms": (verify_s - sha_s) * 1000,
        "verify_over_sha256": verify_s / sha_s,
    }


def changed_image(size: int, seed: int = 7) -> tuple[bytes, bytes]:
    """A firmware-like image (code-like noise between padding) and a copy with 1% of its bytes changed."""
    import random

    rng = random.Random(seed)
    image = bytearray()
    while len(image) < size:
        if rng.random() < 0.5:
            image += rng.randbytes(256)
        else:
            image += bytes([rng.randrange(8)]) * rng.randrange(16, 256)
    old = bytes(image[:size])
    new = bytearray(old)
    for _ in range(size // 100 // 16):
        at = rng.randrange(size - 16)
        new[at : at + 16] = rng.randbytes(16)
    return old, bytes(new)


def bench_delta(image_bytes: int, repeat: int) -> dict[str, Any]:
    old, new = changed_image(image_bytes)
    digest = hashlib.sha256(new).hexdigest()
    out: dict[str, Any] = {"image_mib": image_bytes / MiB, "full_bytes": len(new)}
    out["full_sha256_ms"] = timed(lambda: hashlib.sha256(new).hexdigest(), repeat) * 1000
    for algorithm in ("bsdiff4", "zstd-dict"):
        t0 = time.perf_counter()
        _, patch = make_delta(old, new, algorithm)
        build_s = time.perf_counter() - t0

        def apply(patch: bytes = patch, algorithm: str = algorithm) -> bytes:
            return apply_delta(old, patch, algorithm, expected_sha256=digest, expected_length=len(new))

        key = algorithm.replace("-", "_")
        out[f"{key}_bytes"] = len(patch)
        out[f"{key}_ratio"] = len(patch) / len(new)
        out[f"{key}_build_s"] = build_s
        out[f"{key}_apply_ms"] = timed(apply, repeat) * 1000
    chosen, patch = make_delta(old, new, "auto")
    out["chosen"] = chosen
    out["chosen_ratio"] = len(patch) / len(new)
    return out


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def versions() -> dict[str, str]:
    out = {}
    for name in ("tuf", "securesystemslib", "cryptography", "bsdiff4", "zstandard"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact-mib", type=float, default=8.0, help="artifact size for verification")
    parser.add_argument("--image-mib", type=float, default=4.0, help="firmware image size for deltas")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ef-bench-ota-") as tmp:
        verify = bench_verify(Path(tmp), int(args.artifact_mib * MiB), args.repeat)
    delta = bench_delta(int(args.image_mib * MiB), args.repeat)
    for key, value in {**verify, **delta}.items():
        print(f"{key:>24}: {value:.4g}" if isinstance(value, float) else f"{key:>24}: {value}")
    targets = {
        "delta_bytes_over_full": {
            "value": round(delta["chosen_ratio"], 4),
            "goal": 0.10,
            "unit": "ratio (delta bytes / full image bytes, 1% changed)",
            "met": delta["chosen_ratio"] <= 0.10,
        },
    }
    result = {
        "machine": machine(),
        "versions": versions(),
        "results": {
            "verification": {**verify, "units": "ms per update; artifact in MiB"},
            "delta": {**delta, "units": "bytes; ratio; s to build; ms to apply"},
        },
        "targets": targets,
    }
    print(json.dumps(result, default=float))
    return 0 if all(t["met"] for t in targets.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Regenerate the Python code for the .proto contracts under proto/.

Usage: python scripts/gen_proto.py [--out DIR]

The generated modules are committed; tests/unit/test_proto_fresh.py regenerates
them into a temporary folder and fails when the committed copies are stale.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE = "edgefleet_proto"


def proto_sources() -> list[Path]:
    return sorted((PROTO_ROOT / PACKAGE).rglob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Generate *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every source into ``out``."""
    sources = proto_sources()
    if not sources:
        raise SystemExit(f"no .proto files under {PROTO_ROOT / PACKAGE}")
    grpc_include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{grpc_include}",
        f"--python_out={out}",
        f"--mypy_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out={out}",
        *(str(p.relative_to(PROTO_ROOT)) for p in sources),
    ]
    # protoc finds its plugins (protoc-gen-mypy, from mypy-protobuf) on PATH: use this interpreter's.
    bindir = str(Path(sys.executable).parent)
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = bindir + os.pathsep + old_path
    try:
        rc = protoc.main(args)
    finally:
        os.environ["PATH"] = old_path
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    return sorted(p for p in (out / PACKAGE).rglob("*") if p.suffix in {".py", ".pyi"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROTO_ROOT, help="output root (default: proto/)")
    ns = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
        for path in generated:
            rel = path.relative_to(tmp)
            dest = ns.out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
    print(f"generated {len(generated)} files under {ns.out / PACKAGE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The committed generated code matches what scripts/gen_proto.py produces from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "proto" / "edgefleet_proto" / "v1"


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    # protoc runs in its own process: an in-process protoc shares the interpreter with the whole suite.
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    fresh = {p.relative_to(tmp_path): p for p in (tmp_path / "edgefleet_proto").rglob("*_pb2*")}
    assert fresh, "the generator produced nothing"
    committed = {p.relative_to(ROOT / "proto"): p for p in GENERATED.glob("*_pb2*")}
    stale = sorted(
        str(rel)
        for rel, p in fresh.items()
        if rel not in committed or committed[rel].read_bytes() != p.read_bytes()
    )
    extra = sorted(str(rel) for rel in committed.keys() - fresh.keys())
    assert not stale, f"generated code is stale, run `make proto`: {stale}"
    assert not extra, f"generated files without a .proto source: {extra}"


def test_every_proto_has_generated_module() -> None:
    protos = sorted(GENERATED.glob("*.proto"))
    assert len(protos) >= 9
    for proto in protos:
        assert proto.with_name(proto.stem + "_pb2.py").exists(), proto.name

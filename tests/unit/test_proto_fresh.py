"""The committed generated code matches what scripts/gen_proto.py produces from proto/."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load_generator():  # scripts/ is not a package; load the module from its file
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_proto"] = module
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    gen = _load_generator()
    generated = gen.generate(tmp_path)
    assert generated, "the generator produced nothing"
    stale = []
    for path in generated:
        rel = path.relative_to(tmp_path)
        committed = ROOT / "proto" / rel
        if not committed.exists() or committed.read_bytes() != path.read_bytes():
            stale.append(str(rel))
    extra = {
        str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto" / "edgefleet_proto" / "v1").glob("*_pb2*")
    } - {str(p.relative_to(tmp_path)) for p in generated}
    assert not stale, f"generated code is stale, run `python scripts/gen_proto.py`: {stale}"
    assert not extra, f"generated files without a .proto source: {sorted(extra)}"


def test_every_proto_has_generated_module() -> None:
    protos = sorted((ROOT / "proto" / "edgefleet_proto" / "v1").glob("*.proto"))
    assert len(protos) >= 8
    for proto in protos:
        assert proto.with_name(proto.stem + "_pb2.py").exists(), proto.name

"""Registry service: what it accepts, what it refuses, and that a refusal leaves nothing behind."""

from __future__ import annotations

import io

import pytest
from sqlmodel import select

from cloud.artifacts import ArtifactStore
from cloud.db import SessionFactory
from cloud.errors import (
    ConflictError,
    InvalidArtifactError,
    InvalidInputError,
    NotFoundError,
    UnsupportedFormatError,
)
from cloud.models import ModelVersion
from cloud.services import registry
from tests.unit.cloud.helpers import T0, FrozenClock, tiny_onnx


def _objects(store: ArtifactStore) -> list[str]:
    return sorted(p.name for p in (store.root / "sha256").rglob("*") if p.is_file())


class TestRegistry:
    def test_register_extracts_schema(
        self, sessions: SessionFactory, store: ArtifactStore, clock: FrozenClock
    ) -> None:
        data = tiny_onnx()
        with sessions() as s:
            mv = registry.register_model(s, store, "digits", "1.0.0", io.BytesIO(data), clock=clock)
        assert mv.id is not None
        assert (mv.name, mv.version, mv.format, mv.length) == ("digits", "1.0.0", "onnx", len(data))
        assert mv.inputs == [{"name": "x", "dtype": "float32", "shape": [-1, 4]}]
        assert mv.outputs == [{"name": "y", "dtype": "float32", "shape": [-1, 2]}]
        assert mv.created_at == T0
        assert store.exists(mv.sha256)
        with sessions() as s:
            assert registry.get_model(s, "digits", "1.0.0").sha256 == mv.sha256
            assert registry.is_registered_artifact(s, mv.sha256)
            assert [m.version for m in registry.list_models(s, "digits")] == ["1.0.0"]

    def test_duplicate_is_a_conflict_and_keeps_the_first(
        self, sessions: SessionFactory, store: ArtifactStore
    ) -> None:
        with sessions() as s:
            first = registry.register_model(s, store, "digits", "1", io.BytesIO(tiny_onnx()))
            with pytest.raises(ConflictError, match="digits version 1 is already registered"):
                registry.register_model(s, store, "digits", "1", io.BytesIO(tiny_onnx(2.0)))
        assert _objects(store) == [first.sha256]

    def test_same_bytes_under_two_versions_share_one_artifact(
        self, sessions: SessionFactory, store: ArtifactStore
    ) -> None:
        with sessions() as s:
            a = registry.register_model(s, store, "digits", "1", io.BytesIO(tiny_onnx()))
            b = registry.register_model(s, store, "digits", "1-copy", io.BytesIO(tiny_onnx()))
        assert a.sha256 == b.sha256 and _objects(store) == [a.sha256]

    def test_corrupt_file_is_refused_and_removed(
        self, sessions: SessionFactory, store: ArtifactStore
    ) -> None:
        truncated = tiny_onnx()[:40]
        with sessions() as s, pytest.raises(InvalidArtifactError, match="not a loadable ONNX model"):
            registry.register_model(s, store, "digits", "1", io.BytesIO(truncated))
        with sessions() as s:
            assert s.exec(select(ModelVersion)).all() == []
        assert _objects(store) == []

    def test_failed_registration_keeps_bytes_another_version_uses(
        self, sessions: SessionFactory, store: ArtifactStore
    ) -> None:
        with sessions() as s:
            kept = registry.register_model(s, store, "digits", "1", io.BytesIO(tiny_onnx())).sha256
            info = store.put_bytes(tiny_onnx())
            with pytest.raises(ConflictError):
                registry.register_stored(s, store, "digits", "1", info)
        assert info.sha256 == kept and store.exists(kept)

    def test_unknown_format(self, sessions: SessionFactory, store: ArtifactStore) -> None:
        with sessions() as s, pytest.raises(UnsupportedFormatError, match="expected one of onnx"):
            registry.register_model(s, store, "digits", "1", io.BytesIO(tiny_onnx()), fmt="tflite")
        assert _objects(store) == []

    @pytest.mark.parametrize(
        ("name", "version", "message"),
        [
            ("Digits", "1", "invalid model name"),
            ("-digits", "1", "invalid model name"),
            ("d" * 65, "1", "invalid model name"),
            ("digits", "1/2", "invalid model version"),
            ("digits", "", "invalid model version"),
            ("digits", "v" * 65, "invalid model version"),
        ],
    )
    def test_bad_names(
        self, sessions: SessionFactory, store: ArtifactStore, name: str, version: str, message: str
    ) -> None:
        with sessions() as s, pytest.raises(InvalidInputError, match=message):
            registry.register_model(s, store, name, version, io.BytesIO(tiny_onnx()))
        assert _objects(store) == []

    def test_unknown_version(self, sessions: SessionFactory) -> None:
        with sessions() as s, pytest.raises(NotFoundError, match="model digits version 9 is not registered"):
            registry.get_model(s, "digits", "9")

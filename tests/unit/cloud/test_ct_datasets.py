"""Labelled uploads: what a file must hold, how it is stored and recorded, and its held-out share."""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import select

from cloud.artifacts import ArtifactInfo, ArtifactStore
from cloud.db import SessionFactory
from cloud.errors import NotFoundError
from cloud.settings import Settings
from cloud.training.continuous import datasets
from cloud.training.continuous.datasets import InvalidLabelledDataError, read_labelled
from cloud.training.continuous.tables import LabelledDataset
from tests.unit.cloud.ct_helpers import FLEET, npz_bytes, register, weak_champion
from tests.unit.cloud.helpers import T0, FrozenClock, tiny_onnx

RNG = np.random.default_rng(0)
X = RNG.random((20, 64)).astype(np.float32)
Y = np.arange(20) % 10


def _zip_of(**members: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


BAD = {
    "not a zip": (b"x,y\n1,2\n", "is not an .npz file: expected a zip of x.npy and y.npy"),
    "other arrays": (
        npz_bytes(X, Y, z=Y), "expected exactly the arrays x and y, got ['x.npy', 'y.npy', 'z.npy']",
    ),
    "a pickled object array": (
        npz_bytes(np.array([{"a": 1}] * 2, dtype=object), Y[:2]),
        "cannot read the arrays (Object arrays cannot be loaded when allow_pickle=False)",
    ),
    "flat images": (npz_bytes(X.reshape(20, 8, 8), Y), "expected x of shape (N, 64), got (20, 8, 8)"),
    "integer pixels": (npz_bytes((X * 16).astype(np.int64), Y), "expected floating-point x, got int64"),
    "one label short": (npz_bytes(X, Y[:19]), "expected y of shape (20,), one label per row of x, got (19,)"),
    "text labels": (npz_bytes(X, Y.astype(str)), "expected integer labels y, got <U"),
    "no rows": (npz_bytes(X[:0], Y[:0]), "expected 1 to 1000000 samples, got 0"),
    "a NaN": (
        npz_bytes(np.where(np.arange(64) == 3, np.nan, X).astype(np.float32), Y),
        "expected finite values in x, got NaN or infinity in 20 row(s), first row 0",
    ),
    "raw pixels": (npz_bytes(X * 16, Y), "expected x scaled to [0, 1] as the model takes it (pixel / 16)"),
    "a label out of range": (
        npz_bytes(X, np.where(Y == 3, 12, Y)), "expected labels in [0, 9], got values such as [12]",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_a_bad_file_is_refused_with_what_was_expected(case: str, tmp_path: Path) -> None:
    data, said = BAD[case]
    path = tmp_path / "bad.npz"
    path.write_bytes(data)
    with pytest.raises(InvalidLabelledDataError) as caught:
        read_labelled(path, source="bad.npz")
    assert said in str(caught.value)
    assert str(caught.value).startswith("bad.npz")


def test_a_zip_bomb_is_refused_before_it_is_unpacked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "_MAX_INFLATED", 1000)
    path = tmp_path / "big.npz"
    path.write_bytes(npz_bytes(X, Y))
    with pytest.raises(InvalidLabelledDataError, match=r"unpacks to \d+ bytes: expected at most 1000"):
        read_labelled(path, source="big.npz")


def test_a_good_file_reads_as_float32_and_int64(tmp_path: Path) -> None:
    path = tmp_path / "good.npz"
    path.write_bytes(npz_bytes(X.astype(np.float64), Y.astype(np.int16)))
    x, y = read_labelled(path)
    assert (x.dtype, y.dtype, x.shape) == (np.dtype(np.float32), np.dtype(np.int64), (20, 64))
    np.testing.assert_array_equal(y, Y)


class TestRecording:
    def _stored(self, store: ArtifactStore, data: bytes) -> ArtifactInfo:
        return store.put_bytes(data)

    def test_an_upload_is_recorded_once_by_its_hash(
        self, sessions: SessionFactory, settings: Settings, clock: FrozenClock
    ) -> None:
        store = datasets.labelled_store(settings)
        assert store.root == settings.data_dir / "datasets" / "labelled"
        info = self._stored(store, npz_bytes(X, Y))
        with sessions() as s:
            row, created = datasets.add_labelled(s, store, info, fleet=FLEET, uploaded_by="op", clock=clock)
            again, created_again = datasets.add_labelled(s, store, info, fleet=FLEET, clock=clock)
        assert (created, created_again) == (True, False)
        assert (row.sha256, row.samples, row.uploaded_by, again.id) == (info.sha256, 20, "op", row.id)
        assert row.class_counts == {str(c): 2 for c in range(10)}
        with sessions() as s:
            assert datasets.uploaded_since(s, FLEET, "digits-mlp", None) == 20
            assert datasets.uploaded_since(s, FLEET, "digits-mlp", T0) == 0

    def test_a_refused_file_is_not_kept(
        self, sessions: SessionFactory, settings: Settings, clock: FrozenClock
    ) -> None:
        store = datasets.labelled_store(settings)
        info = self._stored(store, npz_bytes(X * 16, Y))
        with sessions() as s, pytest.raises(InvalidLabelledDataError, match="expected x scaled to"):
            datasets.add_labelled(s, store, info, fleet=FLEET, clock=clock)
        assert not store.exists(info.sha256)
        with sessions() as s:
            assert s.exec(select(LabelledDataset)).all() == []

    def test_a_model_named_must_be_registered_and_take_digits(
        self, sessions: SessionFactory, settings: Settings, store: ArtifactStore, clock: FrozenClock
    ) -> None:
        labelled = datasets.labelled_store(settings)
        info = self._stored(labelled, npz_bytes(X, Y))
        with sessions() as s:
            with pytest.raises(NotFoundError, match="model digits-mlp is not registered"):
                datasets.add_labelled(s, labelled, info, fleet=FLEET, model_name="digits-mlp", clock=clock)
            register(s, store, tiny_onnx(), name="tiny", clock=clock)
            info = self._stored(labelled, npz_bytes(X, Y))
            with pytest.raises(InvalidLabelledDataError, match=r"model tiny takes input of shape \[-1, 4\]"):
                datasets.add_labelled(s, labelled, info, fleet=FLEET, model_name="tiny", clock=clock)
            register(s, store, weak_champion(), clock=clock)
            info = self._stored(labelled, npz_bytes(X, Y))
            row, _ = datasets.add_labelled(
                s, labelled, info, fleet=FLEET, model_name="digits-mlp", clock=clock
            )
            assert row.model_name == "digits-mlp"

    def test_a_damaged_file_is_found_when_read_back(
        self, sessions: SessionFactory, settings: Settings, clock: FrozenClock
    ) -> None:
        store = datasets.labelled_store(settings)
        info = self._stored(store, npz_bytes(X, Y))
        with sessions() as s:
            row, _ = datasets.add_labelled(s, store, info, fleet=FLEET, clock=clock)
        (loaded,) = datasets.load_labelled(store, [row])
        assert loaded.samples == 20
        store.path(info.sha256).write_bytes(b"garbage")
        with pytest.raises(
            InvalidLabelledDataError, match=f"was damaged on disk: its file no longer hashes to {info.sha256}"
        ):
            datasets.load_labelled(store, [row])


def test_the_held_out_share_is_the_same_on_every_read() -> None:
    samples = datasets.LabelledSamples("ab" * 32, X, Y, T0)
    train, held = datasets.split_holdout(samples)
    assert int(held.sum()) == 4 and not (train & held).any() and (train | held).all()
    again_train, again_held = datasets.split_holdout(
        datasets.LabelledSamples("ab" * 32, X, Y, T0 + timedelta(1))
    )
    np.testing.assert_array_equal(held, again_held)
    np.testing.assert_array_equal(train, again_train)

"""The hub's repository: what it publishes, how a stock TUF client sees it, re-signing before expiry."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from tuf.api.exceptions import DownloadHTTPError
from tuf.api.metadata import Metadata, Root
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from cloud.errors import NotFoundError
from cloud.tuf import TargetSpec, TufRepository
from cloud.tuf.metadata import director_role
from cloud.tuf.rotation import RotationService
from tests.unit.cloud.helpers import FrozenClock

DATA = b"an artifact" * 10
SHA = hashlib.sha256(DATA).hexdigest()


class RepoFetcher(FetcherInterface):
    """A stock ngclient reads the repository through this (what the HTTP routes serve)."""

    def __init__(self, repo: TufRepository) -> None:
        self.repo = repo

    def _fetch(self, url: str) -> Iterator[bytes]:
        name = url.rpartition("/")[2]
        if "/targets/" in url:
            return iter([DATA])
        try:
            return iter([self.repo.metadata_file(name)])
        except NotFoundError as e:
            raise DownloadHTTPError(str(e), 404) from e


def client(repo: TufRepository, folder: Path) -> Updater:
    folder.mkdir(exist_ok=True)
    return Updater(
        str(folder),
        "http://hub/tuf/metadata/",
        str(folder),
        "http://hub/tuf/targets/",
        RepoFetcher(repo),
        bootstrap=repo.root_bytes(1),
    )


def test_a_new_repository_has_every_role_and_a_director(repo: TufRepository) -> None:
    roles = {s.role: s for s in repo.status()}
    assert set(roles) == {"root", "targets", "snapshot", "timestamp", "director"}
    assert all(s.version == 1 for s in roles.values())
    root: Metadata[Root] = Metadata.from_bytes(repo.root_bytes())
    assert root.signed.consistent_snapshot
    keyids, threshold = director_role(root.signed)
    assert len(keyids) == 1 and threshold == 1
    assert keyids[0] in root.signed.keys


def test_expiry_per_role_follows_the_settings(repo: TufRepository, clock: FrozenClock) -> None:
    roles = {s.role: s.expires for s in repo.status()}
    now = clock().replace(microsecond=0)
    assert roles["timestamp"] - now == timedelta(days=1)
    assert roles["snapshot"] - now == timedelta(days=7)
    assert roles["targets"] - now == timedelta(days=30)
    assert roles["root"] - now == timedelta(days=365)


def test_targets_carry_length_hashes_and_custom_fields_and_verify_in_a_stock_client(
    repo: TufRepository, tmp_path: Path
) -> None:
    custom = {"kind": "model", "name": "m", "version": "1", "hardware": []}
    assert repo.update_targets([TargetSpec("models/m/1/x.onnx", SHA, len(DATA), custom)])
    assert not repo.update_targets([TargetSpec("models/m/1/x.onnx", SHA, len(DATA), custom)]), "no change"
    updater = client(repo, tmp_path / "c")
    updater.refresh()
    info = updater.get_targetinfo("models/m/1/x.onnx")
    assert info is not None
    assert (info.length, info.hashes, info.custom) == (len(DATA), {"sha256": SHA}, custom)
    assert Path(updater.download_target(info)).read_bytes() == DATA


def test_metadata_names(repo: TufRepository) -> None:
    assert repo.metadata_file("1.root.json") == repo.root_bytes()
    assert b'"_type":"timestamp"' in repo.metadata_file("timestamp.json")
    assert b'"_type":"targets"' in repo.metadata_file("1.targets.json")
    for bad in ("../hub.db", "2.root.json", "root", "x.targets.json"):
        with pytest.raises(NotFoundError):
            repo.metadata_file(bad)


def test_refresh_resigns_only_what_is_close_to_expiry(repo: TufRepository, clock: FrozenClock) -> None:
    assert repo.refresh() == []
    clock.advance(13 * 3600)  # timestamp (1 day) is past half its life; the others are not
    assert repo.refresh() == ["timestamp"]
    versions = {s.role: s.version for s in repo.status()}
    assert versions["timestamp"] == 2 and versions["snapshot"] == 1
    clock.advance(4 * 86400)
    assert repo.refresh() == ["snapshot", "timestamp"]
    clock.advance(12 * 86400)
    assert repo.refresh() == ["targets", "snapshot", "timestamp"]


def test_root_near_expiry_is_resigned_when_the_hub_holds_the_development_root(
    repo: TufRepository, clock: FrozenClock
) -> None:
    rotation = RotationService(repo)
    assert not repo.root_expiring() and not rotation.refresh_root_if_expiring()
    clock.advance(200 * 86400)
    assert repo.root_expiring()
    # The store alone never makes a root version: that is the rotation workflow's job.
    repo.refresh()
    assert {s.role: s.version for s in repo.status()}["root"] == 1
    assert rotation.refresh_root_if_expiring()
    assert {s.role: s.version for s in repo.status()}["root"] == 2
    assert not repo.root_expiring()


def test_an_expiring_offline_root_is_only_reported(
    repo: TufRepository, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    repo.hub_root = None  # root keys moved offline
    clock.advance(200 * 86400)
    assert not RotationService(repo).refresh_root_if_expiring()
    assert {s.role: s.version for s in repo.status()}["root"] == 1
    assert "sign a new root version with the offline root keys" in caplog.text


def test_the_store_knows_nothing_of_the_rotation_workflow() -> None:
    """rotation.py is a workflow over the store: the store never imports it, and it uses public names."""
    import ast

    import cloud.tuf.repository as store_module
    import cloud.tuf.rotation as rotation_module

    store = ast.parse(Path(store_module.__file__).read_text(encoding="utf-8"))
    imported = {
        node.module for node in ast.walk(store) if isinstance(node, ast.ImportFrom) and node.module
    } | {alias.name for node in ast.walk(store) if isinstance(node, ast.Import) for alias in node.names}
    assert not {m for m in imported if m.startswith("cloud.tuf.rotation")}

    rotation = ast.parse(Path(rotation_module.__file__).read_text(encoding="utf-8"))
    private_uses = sorted(
        f"{node.value.attr}.{node.attr}"
        for node in ast.walk(rotation)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "repo"
        and node.attr.startswith("_")
    )
    from_store = [
        alias.name
        for node in ast.walk(rotation)
        if isinstance(node, ast.ImportFrom) and node.module == "cloud.tuf.repository"
        for alias in node.names
    ]
    assert private_uses == []
    assert [name for name in from_store if name.startswith("_")] == []

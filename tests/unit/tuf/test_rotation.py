"""Key rotations: new root versions signed by both thresholds; online keys replaced and destroyed."""

from __future__ import annotations

from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root

from cloud.tuf import RotationService, TufRepository
from cloud.tuf.errors import RepositoryStateError, RotationError, SignatureThresholdError
from cloud.tuf.keys import KeyDir
from cloud.tuf.metadata import director_role
from cloud.tuf.offline import generate_root_keys, sign_root_json

PASS = b"custodian passphrase"


def root_of(repo: TufRepository) -> Root:
    md: Metadata[Root] = Metadata.from_bytes(repo.root_bytes())
    return md.signed


@pytest.mark.parametrize("role", ["targets", "snapshot", "timestamp"])
def test_rotating_an_online_role_publishes_root_and_resigns_the_role(repo: TufRepository, role: str) -> None:
    before = root_of(repo)
    old_keyid = before.roles[role].keyids[0]
    versions = {s.role: s.version for s in repo.status()}
    rotation = RotationService(repo).propose(role)
    assert rotation.state == "published", rotation.missing
    after = root_of(repo)
    assert after.version == before.version + 1
    assert after.roles[role].keyids != [old_keyid]
    assert old_keyid not in after.keys
    assert not repo.online.role(role).has(old_keyid), "the retired key was not destroyed"
    now = {s.role: s.version for s in repo.status()}
    chain = {"targets": ["targets", "snapshot", "timestamp"], "snapshot": ["snapshot", "timestamp"]}.get(
        role, [role]
    )
    for r in chain:
        assert now[r] == versions[r] + 1, r


def test_rotating_the_director_changes_the_key_in_root(repo: TufRepository) -> None:
    old = director_role(root_of(repo))[0]
    heard: list[str] = []
    RotationService(repo, listeners=[heard.append]).propose("director")
    new = director_role(root_of(repo))[0]
    assert new != old and heard == ["director"]
    assert [s.public_key.keyid for s in repo.director_signers()] == new


def test_moving_root_to_offline_keys_needs_a_threshold_of_them(repo: TufRepository, tmp_path: Path) -> None:
    offline = tmp_path / "usb"
    keys = generate_root_keys(offline, 3, PASS)
    service = RotationService(repo)
    rotation = service.propose("root", root_keys=keys, threshold=2)
    assert rotation.state == "pending"
    assert rotation.missing == {"previous root": 0, "new root": 2}, "the hub signed with its development key"
    folder = KeyDir(offline, PASS)
    one = sign_root_json(rotation.root_json, [folder], [keys[0].keyid])
    rotation = service.add_signatures(rotation.id, one)
    assert rotation.state == "pending" and rotation.missing["new root"] == 1
    two = sign_root_json(rotation.root_json, [folder], [keys[1].keyid])
    rotation = service.add_signatures(rotation.id, two)
    assert rotation.state == "published"
    root = root_of(repo)
    assert root.roles["root"].threshold == 2 and set(root.roles["root"].keyids) == {k.keyid for k in keys}
    assert repo.hub_root is not None and repo.hub_root.keyids() == [], "the development root key lives on"

    # From now on the hub cannot rotate anything alone.
    pending = service.propose("timestamp")
    assert pending.state == "pending" and pending.missing["previous root"] == 2


def test_a_bad_signature_is_refused(repo: TufRepository, tmp_path: Path) -> None:
    keys = generate_root_keys(tmp_path / "usb", 1, PASS)
    service = RotationService(repo)
    rotation = service.propose("root", root_keys=keys, threshold=1)
    with pytest.raises(SignatureThresholdError, match="does not verify"):
        service.add_signatures(rotation.id, {keys[0].keyid: "00" * 64})
    with pytest.raises(SignatureThresholdError, match="is not a root key"):
        service.add_signatures(rotation.id, {"ab" * 32: "00" * 64})


def test_a_newer_proposal_supersedes_an_older_one(repo: TufRepository, tmp_path: Path) -> None:
    keys = generate_root_keys(tmp_path / "usb", 1, PASS)
    service = RotationService(repo)
    first = service.propose("root", root_keys=keys, threshold=1)
    service.propose("root", root_keys=keys, threshold=1)
    signatures = sign_root_json(first.root_json, [KeyDir(tmp_path / "usb", PASS)], [keys[0].keyid])
    with pytest.raises(RepositoryStateError, match="superseded"):
        service.add_signatures(first.id, signatures)


@pytest.mark.parametrize(
    ("role", "kwargs", "message"),
    [
        ("nobody", {}, "cannot rotate"),
        ("root", {}, "needs the new root keys"),
        ("root", {"threshold": 3}, "impossible"),
    ],
)
def test_impossible_rotations_are_refused(
    repo: TufRepository, tmp_path: Path, role: str, kwargs: dict[str, object], message: str
) -> None:
    if role == "root" and "threshold" in kwargs:
        kwargs = {**kwargs, "root_keys": generate_root_keys(tmp_path / "usb", 1, PASS)}
    with pytest.raises(RotationError, match=message):
        RotationService(repo).propose(role, **kwargs)  # type: ignore[arg-type]

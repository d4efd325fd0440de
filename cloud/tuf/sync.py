"""Every registered artifact becomes a TUF target: the registry and firmware tables, mirrored.

Rather than hooking every registration path, :func:`sync_targets` compares what the
database registers with what the targets metadata lists and publishes the difference as
one new targets version. The hub runs it at start, after registrations, before signing
a desired state whose artifact is not listed yet, and on every scheduler tick.

Target paths carry the content hash, so two artifacts never share a path and a path
never changes meaning:

    models/<name>/<version>/<sha256>.<format>                  (every variant of a version)
    profiles/<name>/<version>/<sha256>.pb                      (a bundle's baseline data profile)
    firmware/<name>/<hardware>/<version>/<sha256>.efw          (full image)
    firmware/<name>/<hardware>/<base>-<version>/<sha256>.efwd  (delta from base)
"""

from __future__ import annotations

import logging

from sqlmodel import Session, select

from cloud.models import Bundle, FirmwareImage, ModelVariant, ModelVersion
from cloud.tuf.metadata import TargetSpec
from cloud.tuf.repository import TufRepository

__all__ = [
    "firmware_target_path",
    "model_target_spec",
    "profile_target_spec",
    "sync_targets",
    "variant_target_spec",
    "wanted_targets",
]

log = logging.getLogger(__name__)

# Kinds this module manages; targets of other kinds (added by other tools) are left alone.
MANAGED_KINDS = frozenset({"model", "profile", "firmware", "firmware-delta"})


def model_target_spec(row: ModelVersion) -> TargetSpec:
    return TargetSpec(
        path=f"models/{row.name}/{row.version}/{row.sha256}.{row.format}",
        sha256=row.sha256,
        length=row.length,
        custom={
            "kind": "model",
            "name": row.name,
            "version": row.version,
            "format": row.format,
            "hardware": [],
        },
    )


def variant_target_spec(model: ModelVersion, variant: ModelVariant) -> TargetSpec:
    return TargetSpec(
        path=f"models/{model.name}/{model.version}/{variant.sha256}.{variant.format}",
        sha256=variant.sha256,
        length=variant.length,
        custom={
            "kind": "model",
            "name": model.name,
            "version": model.version,
            "format": variant.format,
            "variant": variant.variant,
            "precision": variant.precision,
            "hardware": [],
        },
    )


def profile_target_spec(model: ModelVersion, bundle: Bundle) -> TargetSpec:
    return TargetSpec(
        path=f"profiles/{model.name}/{model.version}/{bundle.profile_sha256}.pb",
        sha256=bundle.profile_sha256,
        length=bundle.profile_length,
        custom={
            "kind": "profile",
            "name": model.name,
            "version": model.version,
            "media_type": bundle.profile_media_type,
        },
    )


def firmware_target_path(
    name: str, hardware_id: str, version: str, sha256: str, *, base_version: str = ""
) -> str:
    if base_version:
        return f"firmware/{name}/{hardware_id}/{base_version}-{version}/{sha256}.efwd"
    return f"firmware/{name}/{hardware_id}/{version}/{sha256}.efw"


def wanted_targets(session: Session) -> dict[str, TargetSpec]:
    """The model targets the registry holds, by path (firmware targets are added with their manifest)."""
    wanted: dict[str, TargetSpec] = {}
    models = {m.id: m for m in session.exec(select(ModelVersion))}
    for model in models.values():
        spec = model_target_spec(model)
        wanted[spec.path] = spec
    for variant in session.exec(select(ModelVariant)):
        owner = models.get(variant.model_version_id)
        if owner is not None:
            spec = variant_target_spec(owner, variant)
            # A variant with the version's own bytes is the same target: keep the richer description.
            wanted[spec.path] = spec
    for bundle in session.exec(select(Bundle)):
        owner = models.get(bundle.model_version_id)
        if owner is not None and bundle.profile_sha256:
            spec = profile_target_spec(owner, bundle)
            wanted[spec.path] = spec
    return wanted


def sync_targets(repo: TufRepository) -> bool:
    """Publish a new targets version when the registry and the targets metadata differ."""
    if not repo.initialized():
        return False
    listed = repo.targets()
    with repo.sessions() as session:
        wanted = wanted_targets(session)
        firmware_paths = {fw.target_path for fw in session.exec(select(FirmwareImage))}
    add = [spec for path, spec in wanted.items() if listed.get(path) != spec]
    remove = [
        path
        for path, spec in listed.items()
        if spec.custom.get("kind") in MANAGED_KINDS and path not in wanted and path not in firmware_paths
    ]
    if not add and not remove:
        return False
    log.info("syncing targets: %d to add or update, %d to remove", len(add), len(remove))
    return repo.update_targets(add=add, remove=remove)

"""Register a version bundle (manifest, variants, profile) all at once, or not at all.

Every file must be exactly what the manifest pins (length and sha256), every
ONNX variant must load in onnxruntime with the manifest's input, every TFLite
variant must be a TFLite file that LiteRT loads, and the profile must parse as
a DataProfile of this model and version. Only then are the version, its
bundle, its variants and its experiment written, in one transaction. When any
step fails, nothing is registered and the files this call stored are deleted
again (unless another version already uses the same bytes).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cloud.api.schemas.fleet import ArtifactRefPublic, BundlePublic, RejectedVariantPublic, VariantPublic
from cloud.artifacts import ArtifactInfo, ArtifactStore, without_path
from cloud.clock import Clock, utcnow
from cloud.errors import ConflictError, InvalidArtifactError, InvalidInputError
from cloud.models import Bundle, Experiment, ModelVariant, ModelVersion
from cloud.services import registry
from cloud.services.experiments import parse_experiment, upsert_experiment
from cloud.services.onnx_schema import DEFAULT_LIMITS, ValidationLimits, onnx_io_schema
from model_tools.bundle import MANIFEST_NAME, BundleManifest, VariantEntry, verify_bundle
from model_tools.errors import BundleError, InvalidModelError, ProfileError
from model_tools.profile import parse_profile

__all__ = ["MAX_MANIFEST_BYTES", "get_bundle", "register_bundle", "register_bundle_dir"]

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 1024 * 1024
# A data profile is sketches and histograms (kilobytes); it is parsed in memory, so a larger file is
# refused before it is read rather than held whole by the hub.
MAX_PROFILE_BYTES = 16 * 1024 * 1024


def register_bundle(
    session: Session,
    store: ArtifactStore,
    manifest_data: bytes,
    files: Mapping[str, ArtifactInfo],
    *,
    clock: Clock = utcnow,
    limits: ValidationLimits = DEFAULT_LIMITS,
) -> ModelVersion:
    """Register a bundle whose files are already in ``store`` (``files``: bundle file name -> stored info)."""
    try:
        manifest = _parse(manifest_data)
        registry.check_new_version(session, manifest.name, manifest.version, "onnx")
        # The lineage first: a run id that names another record is refused before any file is read.
        experiment = _experiment(session, manifest, clock)
        _check_files(manifest, files)
        baseline_schema = _check_variants(store, manifest, limits)
        _check_profile(store, manifest)
        row = _insert(session, manifest, baseline_schema, experiment, clock)
        try:
            session.commit()
        except IntegrityError as e:
            raise ConflictError(
                f"model {manifest.name} version {manifest.version} is already registered"
            ) from e
    except BaseException:
        session.rollback()
        for info in files.values():
            if not registry.is_registered_artifact(session, info.sha256):
                store.delete(info.sha256)
        raise
    session.refresh(row)
    log.info(
        "registered bundle %s %s: %s",
        manifest.name,
        manifest.version,
        ", ".join(f"{v.name} ({v.length} bytes)" for v in manifest.variants),
    )
    return row


def register_bundle_dir(
    session: Session, store: ArtifactStore, directory: str | os.PathLike[str], *, clock: Clock = utcnow
) -> ModelVersion:
    """Register the bundle in a local folder (checked against its manifest first)."""
    folder = Path(directory)
    try:
        manifest = verify_bundle(folder)
    except BundleError as e:
        raise InvalidArtifactError(str(e)) from e
    stored: dict[str, ArtifactInfo] = {}
    try:
        for name, (sha256, length) in sorted(manifest.files.items()):
            with (folder / name).open("rb") as f:
                stored[name] = store.put_stream(f, expected_sha256=sha256, expected_length=length)
    except BaseException:
        for info in stored.values():
            if not registry.is_registered_artifact(session, info.sha256):
                store.delete(info.sha256)
        raise
    return register_bundle(session, store, (folder / MANIFEST_NAME).read_bytes(), stored, clock=clock)


def get_bundle(session: Session, name: str, version: str) -> BundlePublic:
    """A version's variants and, when it was registered as a bundle, its profile, lineage and rejects."""
    model = registry.get_model(session, name, version)
    assert model.id is not None
    variants = _variants(session, model.id)
    bundle = session.get(Bundle, model.id)
    manifest: dict[str, Any] = bundle.manifest if bundle is not None else {}
    run_id = None
    if bundle is not None and bundle.experiment_id is not None:
        experiment = session.get(Experiment, bundle.experiment_id)
        run_id = experiment.run_id if experiment is not None else None
    return BundlePublic(
        name=model.name,
        version=model.version,
        experiment_run_id=run_id,
        variants=[VariantPublic.model_validate(v) for v in variants],
        rejected=[
            RejectedVariantPublic(
                name=r["name"], format=r["format"], precision=r["precision"], reasons=list(r["reasons"])
            )
            for r in manifest.get("rejected", [])
        ],
        profile=(
            ArtifactRefPublic(
                sha256=bundle.profile_sha256,
                length=bundle.profile_length,
                media_type=bundle.profile_media_type,
            )
            if bundle is not None
            else None
        ),
        lineage=dict(manifest.get("lineage", {})),
        metrics=dict(manifest.get("metrics", {})),
        created_at=model.created_at,
    )


def _variants(session: Session, model_version_id: int) -> list[ModelVariant]:
    return list(
        session.exec(
            select(ModelVariant)
            .where(ModelVariant.model_version_id == model_version_id)
            .order_by(col(ModelVariant.id))
        ).all()
    )


def _parse(data: bytes) -> BundleManifest:
    if len(data) > MAX_MANIFEST_BYTES:
        raise InvalidInputError(f"manifest is {len(data)} bytes: expected at most {MAX_MANIFEST_BYTES}")
    try:
        return BundleManifest.from_json(data)
    except BundleError as e:
        raise InvalidInputError(f"invalid bundle manifest: {e}") from e


def _check_files(manifest: BundleManifest, files: Mapping[str, ArtifactInfo]) -> None:
    pinned = manifest.files
    missing = sorted(set(pinned) - set(files))
    extra = sorted(set(files) - set(pinned))
    if missing or extra:
        raise InvalidArtifactError(
            f"bundle files do not match the manifest: missing {missing}, not in the manifest {extra}"
        )
    for name, (sha256, length) in sorted(pinned.items()):
        got = files[name]
        if (got.sha256, got.length) != (sha256, length):
            raise InvalidArtifactError(
                f"bundle file {name} does not match its manifest: expected sha256 {sha256} ({length} bytes), "
                f"got {got.sha256} ({got.length} bytes)"
            )


def _check_variants(
    store: ArtifactStore, manifest: BundleManifest, limits: ValidationLimits
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    expected = manifest.inputs[0]
    baseline: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None
    for variant in manifest.variants:
        path = store.path(variant.sha256)
        if variant.format == "onnx":
            try:
                inputs, outputs = onnx_io_schema(path, limits)
            except InvalidArtifactError as e:
                raise InvalidArtifactError(f"variant {variant.name}: {e}") from e
            got = [(i["name"], i["dtype"]) for i in inputs]
            if got != [(expected.name, expected.dtype)]:
                raise InvalidArtifactError(
                    f"variant {variant.name} takes {got}: expected [({expected.name!r}, {expected.dtype!r})] "
                    "as the manifest says"
                )
            if variant.name == manifest.baseline:
                baseline = (inputs, outputs)
        else:
            _check_tflite(variant, path)
    assert baseline is not None  # the manifest guarantees an fp32 ONNX baseline
    return baseline


def _check_tflite(variant: VariantEntry, path: Path) -> None:
    from model_tools.litert import LiteRTSession, LiteRTUnavailableError, is_tflite_file

    if not is_tflite_file(path):
        raise InvalidArtifactError(
            f"variant {variant.name} is not a TFLite file: expected the 'TFL3' identifier"
        )
    try:
        LiteRTSession(path)
    except LiteRTUnavailableError:
        # The identifier was checked; without LiteRT on the hub a deeper check is not possible.
        log.warning(
            "LiteRT is not installed on the hub: variant %s checked by file identifier only", variant.name
        )
    except InvalidModelError as e:
        said = without_path(str(e), path, f"artifact {path.name}")
        raise InvalidArtifactError(f"variant {variant.name}: {said}") from e


def _check_profile(store: ArtifactStore, manifest: BundleManifest) -> None:
    length = store.stat(manifest.profile.sha256).length
    if length > MAX_PROFILE_BYTES:
        raise InvalidArtifactError(
            f"bundle profile {manifest.profile.file} is {length} bytes: expected at most {MAX_PROFILE_BYTES}"
        )
    try:
        with store.open(manifest.profile.sha256) as f:
            profile = parse_profile(f.read())
    except ProfileError as e:
        raise InvalidArtifactError(f"bundle profile {manifest.profile.file}: {e}") from e
    if (profile.model_name, profile.model_version) != (manifest.name, manifest.version):
        raise InvalidArtifactError(
            f"bundle profile describes {profile.model_name} {profile.model_version}: "
            f"expected {manifest.name} {manifest.version}"
        )
    if len(profile.class_distribution) != len(manifest.classes):
        raise InvalidArtifactError(
            f"bundle profile has {len(profile.class_distribution)} classes: expected {len(manifest.classes)}"
        )


def _experiment(session: Session, manifest: BundleManifest, clock: Clock) -> Experiment | None:
    data = manifest.lineage.get("experiment")
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise InvalidInputError("invalid bundle manifest: lineage.experiment must be an object")
    try:
        record = parse_experiment(data)
    except InvalidInputError as e:
        raise InvalidInputError(f"invalid bundle manifest: lineage.{e}") from e
    if record.name != manifest.name:
        raise InvalidInputError(
            f"invalid bundle manifest: lineage.experiment trained {record.name!r}, expected {manifest.name!r}"
        )
    return upsert_experiment(session, record, clock=clock)


def _insert(
    session: Session,
    manifest: BundleManifest,
    schema: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    experiment: Experiment | None,
    clock: Clock,
) -> ModelVersion:
    now = clock()
    base = manifest.variant(manifest.baseline)
    row = ModelVersion(
        name=manifest.name,
        version=manifest.version,
        format=base.format,
        sha256=base.sha256,
        length=base.length,
        inputs=schema[0],
        outputs=schema[1],
        created_at=now,
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    session.add(
        Bundle(
            model_version_id=row.id,
            experiment_id=experiment.id if experiment is not None else None,
            manifest=manifest.to_dict(),
            profile_sha256=manifest.profile.sha256,
            profile_length=manifest.profile.length,
            profile_media_type=manifest.profile.media_type,
            created_at=now,
        )
    )
    for v in manifest.variants:
        session.add(
            ModelVariant(
                model_version_id=row.id,
                variant=v.name,
                format=v.format,
                precision=v.precision,
                sha256=v.sha256,
                length=v.length,
                runtimes=[r.to_dict() for r in v.runtimes],
                metrics=v.metrics,
                derived_from=v.derived_from,
                is_baseline=v.name == manifest.baseline,
                created_at=now,
            )
        )
    return row

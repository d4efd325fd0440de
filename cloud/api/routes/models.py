"""Model versions: upload (streamed into the artifact store), list, read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Query, Request, status
from sqlmodel import col

from cloud.api.deps import ContextDep, OperatorDep, SessionDep, ViewerDep
from cloud.api.schemas.fleet import ExperimentPublic, ModelVersionPublic, ModelVersionsPublic, VariantPublic
from cloud.api.schemas.lineage import ModelLineagePublic, TrainingRunRefPublic
from cloud.api.upload import receive_upload
from cloud.artifacts import ArtifactInfo
from cloud.context import HubContext
from cloud.errors import InvalidInputError
from cloud.models import ModelVersion
from cloud.services import lineage, lookup, registry
from cloud.services.onnx_schema import ValidationLimits
from cloud.services.pagination import DEFAULT_LIMIT, MAX_LIMIT
from cloud.services.signing import publish_registered
from cloud.validation import MODEL_NAME_PATTERN, VERSION_PATTERN, check_model_name, check_version

router = APIRouter(prefix="/models", tags=["models"])

_FIELDS = ("name", "version", "format")
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "name", "version"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "the model artifact"},
                        "name": {"type": "string", "pattern": MODEL_NAME_PATTERN},
                        "version": {"type": "string", "pattern": VERSION_PATTERN},
                        "format": {
                            "type": "string",
                            "enum": list(registry.SUPPORTED_FORMATS),
                            "default": "onnx",
                        },
                    },
                }
            }
        },
    }
}


def _check_fields(fields: Mapping[str, str], *, complete: bool) -> None:
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise InvalidInputError(f"unexpected form fields {unknown}: expected {list(_FIELDS)} and 'file'")
    if complete:
        missing = [f for f in ("name", "version") if f not in fields]
        if missing:
            raise InvalidInputError(f"missing form fields {missing}: expected name and version with the file")
    if "name" in fields:
        check_model_name(fields["name"])
    if "version" in fields:
        check_version(fields["version"])
    if "format" in fields:
        registry.check_format(fields["format"])


def _register(ctx: HubContext, fields: Mapping[str, str], info: ArtifactInfo) -> ModelVersion:
    with ctx.sessions() as session:
        row = registry.register_stored(
            session,
            ctx.store,
            fields["name"],
            fields["version"],
            info,
            fmt=fields.get("format", "onnx"),
            clock=ctx.clock,
            limits=ValidationLimits.from_settings(ctx.settings),
        )
    publish_registered(ctx.signing)  # the new version is a signed target when the answer comes
    return row


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_UPLOAD_BODY,
    responses={
        400: {"description": "not a loadable ONNX model, or an unsupported format"},
        409: {"description": "this name and version are already registered"},
        413: {"description": "larger than the hub's max_upload_bytes"},
        422: {"description": "bad name, version or form"},
    },
)
async def upload_model(request: Request, ctx: ContextDep, _token: OperatorDep) -> ModelVersionPublic:
    """Register a model version: a multipart form with ``file``, ``name``, ``version``, ``format``."""
    upload = await receive_upload(
        request,
        ctx.store,
        max_file_bytes=ctx.settings.max_upload_bytes,
        on_file_start=lambda fields: _check_fields(fields, complete=False),
    )
    try:
        _check_fields(upload.fields, complete=True)
    except InvalidInputError:
        await anyio.to_thread.run_sync(_discard, ctx, upload.artifact.sha256)
        raise
    row = await anyio.to_thread.run_sync(_register, ctx, upload.fields, upload.artifact)
    return ModelVersionPublic.model_validate(row)


def _discard(ctx: HubContext, sha256: str) -> None:
    with ctx.sessions() as session:
        if not registry.is_registered_artifact(session, sha256):
            ctx.store.delete(sha256)


@router.get("")
def list_models(
    session: SessionDep,
    _token: ViewerDep,
    name: Annotated[str | None, Query(description="only versions of this model")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many")] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="the next_cursor of the previous page")] = None,
) -> ModelVersionsPublic:
    """Model versions by name, oldest first, a page at a time (follow ``next_cursor``)."""
    page = registry.page_models(session, name, limit=limit, cursor=cursor)
    rows = [ModelVersionPublic.model_validate(r) for r in page.items]
    return ModelVersionsPublic(data=rows, count=len(rows), next_cursor=page.next_cursor)


@router.get("/{name}/{version}", responses={409: {"description": "the version prefix is ambiguous"}})
def get_model(name: str, version: str, session: SessionDep, _token: ViewerDep) -> ModelVersionPublic:
    """One version, named in full or by a unique prefix of its version."""
    return ModelVersionPublic.model_validate(resolve_version(session, name, version))


@router.get(
    "/{name}/{version}/lineage",
    responses={
        404: {"description": "no such version"},
        409: {"description": "the version prefix is ambiguous"},
    },
)
def get_lineage(name: str, version: str, session: SessionDep, _token: ViewerDep) -> ModelLineagePublic:
    """Where the version came from (data set hash, code revision, parent), its metrics and variants."""
    found = lineage.lineage_of(session, resolve_version(session, name, version))
    model, experiment, run = found.model, found.experiment, found.training_run
    assert model.id is not None
    return ModelLineagePublic(
        name=model.name,
        version=model.version,
        sha256=model.sha256,
        format=model.format,
        created_at=model.created_at,
        dataset_hash=experiment.dataset_hash if experiment else (run.dataset_hash or None) if run else None,
        code_revision=experiment.code_revision if experiment else None,
        parent_version=run.champion_version if run else None,
        children=found.children,
        experiment=ExperimentPublic.model_validate(experiment) if experiment else None,
        training_run=TrainingRunRefPublic.model_validate(run, from_attributes=True) if run else None,
        metrics=found.metrics,
        variants=[VariantPublic.model_validate(v) for v in found.variants],
        lineage=found.manifest_lineage,
    )


def resolve_version(session: SessionDep, name: str, version: str) -> ModelVersion:
    """The version of model ``name`` that ``version`` names in full or as a unique prefix."""
    return lookup.resolve(
        session,
        ModelVersion,
        ModelVersion.version,
        version,
        what=f"model {name} version",
        where=[col(ModelVersion.name) == name],
        not_found=f"model {name} version {version} is not registered",
    )

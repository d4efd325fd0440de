"""Bundles: register a version with all its variants and profile at once; read a version's variants."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Request, status

from cloud.api.bundle_upload import FILE_FIELD, MANIFEST_FIELD, ReceivedBundle, receive_bundle_upload
from cloud.api.deps import ContextDep, OperatorDep, SessionDep, ViewerDep
from cloud.api.routes.models import resolve_version
from cloud.api.schemas.fleet import BundlePublic
from cloud.context import HubContext
from cloud.services import bundles, registry
from cloud.services.onnx_schema import ValidationLimits
from cloud.services.signing import publish_registered

router = APIRouter(tags=["bundles"])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [MANIFEST_FIELD, FILE_FIELD],
                    "properties": {
                        MANIFEST_FIELD: {
                            "type": "string",
                            "format": "binary",
                            "description": "manifest.json",
                        },
                        FILE_FIELD: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "every file the manifest pins, named as in the manifest",
                        },
                    },
                }
            }
        },
    }
}


@router.post(
    "/bundles",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_UPLOAD_BODY,
    responses={
        400: {"description": "a file does not match the manifest, or does not load"},
        409: {"description": "this name and version are already registered"},
        413: {"description": "a file is larger than the hub's max_upload_bytes"},
        422: {"description": "the manifest or the form is malformed"},
    },
)
async def upload_bundle(request: Request, ctx: ContextDep, _token: OperatorDep) -> BundlePublic:
    """Register a version bundle: a ``manifest`` part and one ``file`` part per file it pins."""
    upload = await receive_bundle_upload(
        request,
        ctx.store,
        max_file_bytes=ctx.settings.max_upload_bytes,
        max_manifest_bytes=bundles.MAX_MANIFEST_BYTES,
        discard=lambda sha256: _discard(ctx, sha256),
    )
    return await anyio.to_thread.run_sync(_register, ctx, upload)


def _register(ctx: HubContext, upload: ReceivedBundle) -> BundlePublic:
    with ctx.sessions() as session:
        row = bundles.register_bundle(
            session,
            ctx.store,
            upload.manifest,
            upload.files,
            clock=ctx.clock,
            limits=ValidationLimits.from_settings(ctx.settings),
        )
        out = bundles.get_bundle(session, row.name, row.version)
    publish_registered(ctx.signing)  # every variant and the profile are signed targets when the answer comes
    return out


def _discard(ctx: HubContext, sha256: str) -> None:
    with ctx.sessions() as session:
        if not registry.is_registered_artifact(session, sha256):
            ctx.store.delete(sha256)


@router.get(
    "/models/{name}/{version}/bundle", responses={409: {"description": "the version prefix is ambiguous"}}
)
def get_bundle(name: str, version: str, session: SessionDep, _token: ViewerDep) -> BundlePublic:
    """A version's variants (a pushed file has one), the ones its gates kept out, its profile, its lineage.

    ``version`` may be a unique prefix of the version.
    """
    return bundles.get_bundle(session, name, resolve_version(session, name, version).version)

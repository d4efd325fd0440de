"""The update repository over HTTP, as a stock TUF client expects it.

    GET /tuf/metadata/timestamp.json        GET /tuf/metadata/<version>.<role>.json   (public)
    GET /tuf/targets/<dir>/<sha256>.<name>  (a token, viewer or higher; consistent snapshot:
                                             the content hash prefixes the name)

Metadata is public: it is signed and holds names, lengths and hashes, no weights. Targets
are the fleet's models and firmware, its owner's property: they need a token like the rest
of the API (``Authorization: Bearer``). Agents fetch artifacts over gRPC, not here.

Versioned metadata and targets never change, so they are served as immutable; the
timestamp and the unversioned root change and are not cached.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse

from cloud.api.deps import TOKEN_STATE, ContextDep
from cloud.errors import AuthError, ForbiddenError, HubError, NotFoundError
from cloud.models import ApiToken, Role
from cloud.services import tokens
from cloud.services.signing import Signing

router = APIRouter(prefix="/tuf", tags=["update repository"])

_IMMUTABLE = "public, max-age=31536000, immutable"


class SigningUnavailableError(HubError):
    """This hub runs without an update repository."""


def get_signing(ctx: ContextDep) -> Signing:
    signing = ctx.signing
    if signing is None:
        raise SigningUnavailableError("this hub has no update repository configured")
    return signing


SigningDep = Annotated[Signing, Depends(get_signing)]


def target_reader(request: Request, ctx: ContextDep) -> ApiToken:
    """The request's token, viewer or higher. /tuf lies outside /api, where the authentication
    middleware does not look, so the bearer token is checked here (a sync dependency: FastAPI runs
    the database lookup in a worker thread)."""
    token = request.scope.get("state", {}).get(TOKEN_STATE)
    if not isinstance(token, ApiToken):
        scheme, _, secret = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise AuthError(
                "artifact downloads need an API token: expected an 'Authorization: Bearer <token>' header"
            )
        with ctx.sessions() as session:
            token = tokens.check_token(tokens.find_token(session, secret.strip()), ctx.clock())
    if not token.role.allows(Role.VIEWER):
        raise ForbiddenError(
            f"artifact downloads need the viewer role; token {token.name!r} has {token.role.value}"
        )
    return token


TargetReaderDep = Annotated[ApiToken, Depends(target_reader)]


@router.get("/metadata/{name}", responses={404: {"description": "no such metadata file"}})
async def metadata(name: str, signing: SigningDep) -> Response:
    data = await anyio.to_thread.run_sync(signing.repo.metadata_file, name)
    versioned = name[:1].isdigit()
    return Response(
        content=data,
        media_type="application/json",
        headers={"Cache-Control": _IMMUTABLE if versioned else "no-cache"},
    )


@router.get(
    "/targets/{path:path}",
    responses={
        401: {"description": "no token, or one that is unknown, expired or revoked"},
        404: {"description": "no such target"},
    },
)
async def target(_token: TargetReaderDep, path: str, ctx: ContextDep, signing: SigningDep) -> FileResponse:
    directory, _, filename = path.rpartition("/")
    prefix, dot, rest = filename.partition(".")
    targets = await anyio.to_thread.run_sync(signing.repo.targets)
    spec = None
    if dot and len(prefix) == 64:
        spec = targets.get(f"{directory}/{rest}" if directory else rest)
        if spec is not None and spec.sha256 != prefix:
            spec = None
    if spec is None:
        spec = targets.get(path)
    if spec is None or not ctx.store.exists(spec.sha256):
        raise NotFoundError(f"no target {path!r} in the repository")
    return FileResponse(
        ctx.store.path(spec.sha256),
        media_type="application/octet-stream",
        headers={"Cache-Control": _IMMUTABLE},
    )

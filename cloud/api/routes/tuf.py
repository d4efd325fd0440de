"""The update repository over HTTP, as a stock TUF client expects it (no token: it is all signed).

    GET /tuf/metadata/timestamp.json        GET /tuf/metadata/<version>.<role>.json
    GET /tuf/targets/<dir>/<sha256>.<name>  (consistent snapshot: the content hash prefixes the name)

Versioned metadata and targets never change, so they are served as immutable; the
timestamp and the unversioned root change and are not cached.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, Response
from fastapi.responses import FileResponse

from cloud.api.deps import ContextDep
from cloud.errors import HubError, NotFoundError
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


@router.get("/metadata/{name}", responses={404: {"description": "no such metadata file"}})
async def metadata(name: str, signing: SigningDep) -> Response:
    data = await anyio.to_thread.run_sync(signing.repo.metadata_file, name)
    versioned = name[:1].isdigit()
    return Response(
        content=data,
        media_type="application/json",
        headers={"Cache-Control": _IMMUTABLE if versioned else "no-cache"},
    )


@router.get("/targets/{path:path}", responses={404: {"description": "no such target"}})
async def target(path: str, ctx: ContextDep, signing: SigningDep) -> FileResponse:
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

"""Repository keys: status, and rotations that root key custodians sign where their keys are.

Root private keys never reach the hub: ``POST /keys/rotations`` returns the new root for
the custodians to sign, ``POST /keys/rotations/{id}/signatures`` takes their signatures,
and the hub publishes the root once both thresholds (previous and new root) hold.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Path, status
from securesystemslib.signer import Key

from cloud.api.deps import AdminDep, ContextDep
from cloud.api.routes.tuf import SigningDep
from cloud.api.schemas.base import MAX_ROW_ID
from cloud.api.schemas.signing import KeysPublic, RoleKeysPublic, RotationCreate, RotationPublic, SignaturesIn
from cloud.errors import InvalidInputError
from cloud.services.rotation_limit import check_rotation_rate
from cloud.tuf.rotation import Rotation

router = APIRouter(prefix="/keys", tags=["keys"])
RotationId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]


def rotation_public(r: Rotation) -> RotationPublic:
    return RotationPublic(
        id=r.id,
        role=r.role,
        root_version=r.root_version,
        state=r.state,
        root_json=r.root_json.decode("utf-8"),
        signatures=r.signatures,
        missing=r.missing,
        old_keyids=r.old_keyids,
        new_keyids=r.new_keyids,
    )


def _key(data: dict[str, Any]) -> Key:
    return Key.from_dict(data["keyid"], {n: v for n, v in data.items() if n != "keyid"})


@router.get("")
async def keys_status(signing: SigningDep, _token: AdminDep) -> KeysPublic:
    def read() -> KeysPublic:
        roles = [
            RoleKeysPublic(
                role=s.role, version=s.version, expires=s.expires, keyids=s.keyids, threshold=s.threshold
            )
            for s in signing.repo.status()
        ]
        pending = [rotation_public(r) for r in signing.rotations.pending()]
        held = signing.repo.hub_root is not None and bool(signing.repo.hub_root.keyids())
        return KeysPublic(roles=roles, pending=pending, root_keys_on_hub=held)

    return await anyio.to_thread.run_sync(read)


@router.post(
    "/rotations",
    status_code=status.HTTP_201_CREATED,
    responses={429: {"description": "more rotations than EDGEFLEET_KEY_ROTATIONS_PER_HOUR allows"}},
)
async def propose_rotation(
    body: RotationCreate, ctx: ContextDep, signing: SigningDep, _token: AdminDep
) -> RotationPublic:
    """Prepare a new root version that rotates ``role``'s keys (published at once if the hub can sign it).

    At most ``EDGEFLEET_KEY_ROTATIONS_PER_HOUR`` in any hour; past it the answer is 429 with Retry-After.
    """
    keys = None
    if body.root_keys is not None:
        try:
            keys = [_key(k) for k in body.root_keys]
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInputError(
                f"invalid root key: expected securesystemslib key dicts with a keyid ({e})"
            ) from e

    def propose() -> Rotation:
        with ctx.sessions() as session:
            check_rotation_rate(session, limit=ctx.settings.key_rotations_per_hour, now=signing.repo.now())
        return signing.rotations.propose(body.role, root_keys=keys, threshold=body.threshold)

    return rotation_public(await anyio.to_thread.run_sync(propose))


@router.get("/rotations/{rotation_id}")
async def get_rotation(rotation_id: RotationId, signing: SigningDep, _token: AdminDep) -> RotationPublic:
    return rotation_public(await anyio.to_thread.run_sync(signing.rotations.get, rotation_id))


@router.post("/rotations/{rotation_id}/signatures")
async def sign_rotation(
    rotation_id: RotationId, body: SignaturesIn, signing: SigningDep, _token: AdminDep
) -> RotationPublic:
    """Add root-key signatures; the root is published once both thresholds hold."""
    rotation = await anyio.to_thread.run_sync(signing.rotations.add_signatures, rotation_id, body.signatures)
    return rotation_public(rotation)

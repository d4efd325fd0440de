"""Where the hub keeps artifacts: a local folder (the default) or an S3-compatible object store.

Every store is a :class:`cloud.artifacts.ArtifactStore`: callers that need a file ask ``path()`` and
get a local one, whichever store is behind it. :func:`open_artifact_store` builds the configured one.
"""

from __future__ import annotations

from cloud.artifacts import ArtifactStore
from cloud.errors import HubError
from cloud.settings import Settings

__all__ = ["StorageError", "open_artifact_store"]


class StorageError(HubError):
    """The artifact store cannot be reached or used (a missing bucket, refused credentials)."""


def open_artifact_store(settings: Settings) -> ArtifactStore:
    """The store ``settings.artifact_store`` names; StorageError when it cannot be used."""
    if settings.artifact_store == "local":
        return ArtifactStore(settings.resolved_artifact_dir())
    try:
        from cloud.storage.s3 import S3ArtifactStore, S3Location
    except ImportError as e:
        raise StorageError(f"EDGEFLEET_ARTIFACT_STORE=s3 needs boto3, which is not installed: {e}") from e

    assert settings.s3_bucket is not None  # the settings refuse s3 without a bucket
    location = S3Location(
        bucket=settings.s3_bucket,
        prefix=settings.s3_prefix,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
    )
    return S3ArtifactStore(
        settings.resolved_artifact_dir(), location, cache_max_bytes=settings.artifact_cache_max_bytes
    )

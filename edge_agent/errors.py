"""The agent's exceptions.

Callers catch :class:`AgentError` for anything the agent refuses on purpose.
Two families matter to the updater: :class:`DownloadError` (the hub or the
network let us down: retried) and :class:`VerifyError` (the bytes are not the
ones the desired state pinned). Third-party errors (grpc, onnxruntime, OS) are
wrapped at the boundary so that the original stays in ``__cause__``.
"""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""


class ConfigError(AgentError, ValueError):
    """The configuration is missing a key, has a wrong type, or a value out of range."""


# -- desired state -------------------------------------------------------------------------------


class DesiredRejectedError(AgentError):
    """A desired state that this device will not act on (malformed, not ours, a replay)."""


# -- artifacts -----------------------------------------------------------------------------------


class StoreError(AgentError):
    """The local artifact store cannot do what was asked (bad address, disk trouble)."""


class VerifyError(StoreError):
    """An artifact's bytes differ from what the desired state pinned."""


class LengthMismatchError(VerifyError):
    """The artifact has more or fewer bytes than pinned (truncated or padded)."""


class DigestMismatchError(VerifyError):
    """The artifact's sha256 differs from the pinned one."""


class DownloadError(AgentError):
    """Fetching an artifact from the hub failed; the updater retries with back-off."""


class HubUnavailableError(DownloadError):
    """The hub could not be reached, or the stream broke."""


class ArtifactNotFoundError(DownloadError):
    """The hub does not hold the requested artifact."""


class DownloadRefusedError(DownloadError):
    """The hub refused the request (permissions, a bad offset)."""


class DownloadStalledError(DownloadError):
    """No chunk arrived within the per-chunk timeout."""


class DownloadIncompleteError(DownloadError):
    """The stream ended before the pinned length arrived."""


class DownloadProtocolError(DownloadError):
    """The hub sent something the protocol does not allow (too many bytes, chunks out of order)."""


# -- runtimes and serving ------------------------------------------------------------------------


class ModelLoadError(AgentError):
    """A verified artifact could not be loaded into a runtime."""


class UnknownFormatError(ModelLoadError):
    """No runtime on this device handles the artifact's format."""


class InputError(AgentError, ValueError):
    """Prediction inputs do not match the model's input specs."""


class InferenceError(AgentError):
    """The runtime failed while running the model."""


class NoModelError(AgentError):
    """A prediction was asked for while no model is serving."""


# -- label feedback ------------------------------------------------------------------------------


class FeedbackError(AgentError):
    """A label for an earlier prediction was refused (the subclass says why)."""


class UnknownPredictionError(FeedbackError):
    """No prediction with that id is held: never issued, forgotten (capacity), or expired (TTL)."""


class DuplicateLabelError(FeedbackError):
    """The prediction already has a label; each takes one."""


class LabelError(FeedbackError, ValueError):
    """The label is not one of the model's classes (or the prediction has none to label)."""


# -- resources -----------------------------------------------------------------------------------


class ResourceError(AgentError):
    """The device lacks what a step needs (disk, memory); retried later, the current model serves."""


class InsufficientDiskError(ResourceError):
    """Not enough free disk for a download plus the reserve."""


class InsufficientMemoryError(ResourceError):
    """Not enough available memory to load a model beside the one serving."""


class StepTimeoutError(AgentError):
    """A step's worker (hashing, loading) did not finish within the step timeout."""


# -- local state ---------------------------------------------------------------------------------


class StateFileError(AgentError):
    """The state file cannot be read or written."""


class StateLoopError(AgentError):
    """One update saved its state more often than the loop guard allows ("state looping detected")."""


class QueueError(AgentError):
    """The on-disk message queue cannot be opened or written."""

"""The two errors of reading and fetching weights."""
from __future__ import annotations


class WeightsError(RuntimeError):
    """A weights file is missing, unsafe, corrupt, or does not fit the architecture."""


class WeightsUnavailableError(WeightsError):
    """Weights are neither cached on this machine nor downloadable right now."""


class CheckpointDescriptionError(WeightsError, ValueError):
    """A checkpoint's description (its sidecar JSON or the copy in its safetensors header) is invalid."""

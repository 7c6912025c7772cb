"""Exception classes. Every error the package raises on purpose ends in ``Error``."""

from __future__ import annotations

from typing import Any


class GemcastError(Exception):
    """Base class of every error gemcast raises on purpose."""


class ConfigError(GemcastError):
    """A setting is missing or malformed; the message names every bad variable."""


class ValidationError(GemcastError):
    """A request or stone is invalid. ``errors`` maps field names to reasons."""

    def __init__(self, message: str, errors: dict[str, Any] | list[Any] | None = None) -> None:
        super().__init__(message)
        self.errors = errors if errors is not None else {}


class DatasetError(GemcastError):
    """A dataset cannot be used: wrong header, empty, or every row rejected."""


class StorageError(GemcastError):
    """A storage URI is malformed or an object is missing."""


class NotFoundError(GemcastError):
    """A named thing (model version, object) does not exist."""


class IntegrityError(GemcastError):
    """A model file does not match the sha256 in its manifest."""


class GateError(GemcastError):
    """A promotion was refused by the gate."""


class EndpointError(GemcastError):
    """The model endpoint failed (502) or could not be reached in time (503).

    ``public_message`` is what a caller may read: never a stack trace or an internal address.
    """

    def __init__(self, message: str, *, status: int = 502, public_message: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.public_message = public_message or (
            "the model endpoint is unavailable; try again shortly" if status == 503
            else "the model endpoint returned an invalid answer"
        )

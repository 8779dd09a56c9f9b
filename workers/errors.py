"""The workers' own errors, each marked permanent or retryable so callers decide whether to try again."""

from __future__ import annotations


class BackendError(Exception):
    """A backend could not do what was asked; `permanent` says whether trying again can help."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


class ObjectNotFound(BackendError):
    """The object store holds no object under the key."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message, permanent=True)
        self.key = key


class ObjectConflict(BackendError):
    """The key already holds different bytes; objects are write-once, so nothing was changed."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message, permanent=True)
        self.key = key


class ConfigError(ValueError):
    """A settings value is malformed; the message names the setting and the accepted forms."""

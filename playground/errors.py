"""Errors the playground raises for a user to read: each says what went wrong and how to fix it."""


class PlaygroundError(Exception):
    """Base class: the message is shown to the user as-is, so it must say how to fix the problem.

    The message is English (the API and the logs show it). `key` and `params` let a user interface show
    it in another language: `key` names a message template there, and `params` fill it in. The domain
    only names them; it never imports the UI's strings.
    """

    def __init__(self, message: str, *, key: str | None = None, **params: object):
        super().__init__(message)
        self.key = key
        self.params = params


class SettingsError(PlaygroundError):
    """A generation setting is out of range or of the wrong type."""


class ModelLoadError(PlaygroundError):
    """A model could not be found or loaded."""


class DeviceError(PlaygroundError):
    """The requested device or variant cannot run on this machine."""


class Notice(str):
    """Something a user should know about a run (a dropped prompt, an unknown character): English text, as the
    API and the history store it, with an optional `key` and `params` a user interface can translate, as
    for PlaygroundError."""

    key: str | None
    params: dict

    def __new__(cls, text: str, *, key: str | None = None, **params: object) -> "Notice":
        notice = super().__new__(cls, text)
        notice.key = key
        notice.params = params
        return notice


class DataError(PlaygroundError):
    """Training data cannot be used: empty, binary, too large, in an unknown encoding, or too short."""


class TrainingCancelled(PlaygroundError):
    """A training run was cancelled by the user; nothing was written."""

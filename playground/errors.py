"""Errors the playground raises for a user to read: each says what went wrong and how to fix it."""

from .locales import text


class PlaygroundError(Exception):
    """Base class: the message is shown to the user as-is, so it must say how to fix the problem.

    Raised with a `key` of playground/locales and the `params` its template takes:
    `raise SettingsError(key="settings.range", name="top_p", value=5.0, interval="(0, 1]")`. Its message
    (str(exc)) is the English text, which the API and the logs show; a user interface shows the same key
    in the user's language. A message given as text is for errors no user can cause (internal checks).
    """

    def __init__(self, message: str | None = None, *, key: str | None = None, field: str | None = None, **params: object):
        if message is None:
            if key is None:
                raise TypeError("a PlaygroundError needs a key (or a message)")
            message = text(key, "en", **params)
        super().__init__(message)
        self.key = key
        self.params = params
        self.field = field  # the input it is about (a setting, "backend", "variant", "model"): the API's `param`


class SettingsError(PlaygroundError):
    """A generation setting is out of range or of the wrong type; its `field` is the setting's `name`."""

    def __init__(self, message: str | None = None, *, key: str | None = None, field: str | None = None, **params: object):
        super().__init__(message, key=key, field=field or params.get("name"), **params)


class ModelLoadError(PlaygroundError):
    """A model could not be found or loaded."""


class DeviceError(PlaygroundError):
    """The requested device or variant cannot run on this machine."""


class Notice(str):
    """Something a user should know about a run (a dropped prompt, an unknown character): made, as a PlaygroundError
    is, from a `key` of playground/locales and its `params`; the string itself is the English text, as the API and
    the history store it."""

    key: str | None
    params: dict

    def __new__(cls, message: str | None = None, *, key: str | None = None, **params: object) -> "Notice":
        if message is None:
            message = text(key, "en", **params)
        notice = super().__new__(cls, message)
        notice.key = key
        notice.params = params
        return notice


class DataError(PlaygroundError):
    """Training data cannot be used: empty, binary, too large, in an unknown encoding, or too short."""


class TrainingCancelled(PlaygroundError):
    """A training run was cancelled by the user; nothing was written."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): the cause a user's message quotes."""
    message = str(exc).strip()
    return message.splitlines()[0] if message else type(exc).__name__

"""Errors the playground raises for a user to read: each says what went wrong and how to fix it."""


class PlaygroundError(Exception):
    """Base class: the message is shown to the user as-is, so it must say how to fix the problem."""


class SettingsError(PlaygroundError):
    """A generation setting is out of range or of the wrong type."""


class ModelLoadError(PlaygroundError):
    """A model could not be found or loaded."""


class DeviceError(PlaygroundError):
    """The requested device or variant cannot run on this machine."""

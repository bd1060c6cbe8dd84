"""Errors that tell the user what is wrong and what would be right."""


class TlkitError(Exception):
    """Base class of every error tlkit raises on purpose."""


class ConfigError(TlkitError, ValueError):
    """A config value is invalid: names the key, echoes the value and says what is allowed."""

    def __init__(self, key: str, value, allowed: str, hint: str = ""):
        self.key, self.value, self.allowed, self.hint = key, value, allowed, hint
        message = f"{key}={value!r} is not valid: {allowed}"
        if hint:
            message += f"\n  hint: {hint}"
        super().__init__(message)


class DataError(TlkitError, ValueError):
    """The data on disk cannot be used as configured."""


class WeightsError(TlkitError, ValueError):
    """Backbone weights cannot be found or do not fit the backbone."""

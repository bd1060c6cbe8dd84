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


def error_chain(error: BaseException) -> str:
    """The messages of `error` and of the errors that caused it, one a line, each once (Hydra wraps its own)."""
    parts = []
    while error is not None and str(error) not in parts:
        parts.append(str(error))
        error = error.__cause__ or error.__context__
    return "\n".join(parts)

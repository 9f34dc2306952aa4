"""Errors for bad user input, reported by the command lines as one line (no traceback)."""


class ConfigError(ValueError):
    """A configuration value that is not allowed; the message names it and what is allowed."""

"""Errors a user can act on. The CLI prints them as one line, never as a traceback."""


class StreamdashError(Exception):
    """Base class: the message says what is wrong and what to do about it."""


class ConfigError(StreamdashError):
    """The configuration is invalid; the message names the field."""


class StackError(StreamdashError):
    """The local stack could not be installed, started or stopped."""

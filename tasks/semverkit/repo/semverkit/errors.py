"""Errors raised by semverkit."""


class InvalidVersion(ValueError):
    """A string is not a semantic version."""


class InvalidRange(ValueError):
    """A string is not a version range."""

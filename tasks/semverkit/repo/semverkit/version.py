"""The version type and its precedence rules."""

import functools
import re

from .errors import InvalidVersion

_VERSION = re.compile(
    r"^v?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)


def _identifier_key(identifier):
    # Numeric identifiers compare numerically and sort before alphanumeric ones.
    if identifier.isdigit():
        return (0, int(identifier), "")
    return (1, 0, identifier)


@functools.total_ordering
class Version:
    """``MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]``; build metadata does not affect precedence."""

    def __init__(self, major, minor, patch, prerelease=(), build=()):
        self.major = major
        self.minor = minor
        self.patch = patch
        self.prerelease = tuple(prerelease)
        self.build = tuple(build)

    @classmethod
    def parse(cls, text):
        match = _VERSION.match(text.strip())
        if not match:
            raise InvalidVersion("%r is not a semantic version" % text)
        pre = match.group("pre")
        build = match.group("build")
        return cls(int(match.group("major")), int(match.group("minor")),
                   int(match.group("patch")),
                   pre.split(".") if pre else (), build.split(".") if build else ())

    @property
    def release(self):
        return (self.major, self.minor, self.patch)

    def _precedence(self):
        # A version without pre-release identifiers ranks above any of its pre-releases.
        if not self.prerelease:
            return (self.release, (1,), ())
        return (self.release, (0,), tuple(_identifier_key(i) for i in self.prerelease))

    def __eq__(self, other):
        if not isinstance(other, Version):
            return NotImplemented
        return self._precedence() == other._precedence()

    def __lt__(self, other):
        if not isinstance(other, Version):
            return NotImplemented
        return self._precedence() < other._precedence()

    def __hash__(self):
        return hash(self._precedence())

    def __str__(self):
        text = "%d.%d.%d" % self.release
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text

    def __repr__(self):
        return "Version(%r)" % str(self)


def coerce(value):
    """A :class:`Version` from a version or a string."""
    return value if isinstance(value, Version) else Version.parse(value)

"""Computing the next version."""

from .version import Version, coerce

PARTS = ("major", "minor", "patch", "prerelease")


def bump(version, part, preid="rc"):
    """The next version after ``version`` for a release of kind ``part``.

    A pre-release is released by the bump that matches it: ``bump('2.0.0-rc.1', 'major')`` is
    ``'2.0.0'``.  Build metadata is never carried over.
    """
    if part not in PARTS:
        raise ValueError("part must be one of %s, got %r" % (", ".join(PARTS), part))
    v = coerce(version)
    major, minor, patch = v.release
    if part == "prerelease":
        return str(_next_prerelease(v, preid))
    if part == "major":
        if not (v.prerelease and minor == 0 and patch == 0):
            major += 1
        minor = patch = 0
    elif part == "minor":
        if not (v.prerelease and patch == 0):
            minor += 1
        patch = 0
    elif not v.prerelease:
        patch += 1
    return str(Version(major, minor, patch))


def _next_prerelease(v, preid):
    if not v.prerelease:
        return Version(v.major, v.minor, v.patch + 1, (preid, "0"))
    identifiers = list(v.prerelease)
    if identifiers[-1].isdigit():
        identifiers[-1] = str(int(identifiers[-1]) + 1)
    else:
        identifiers.append("0")
    return Version(v.major, v.minor, v.patch, identifiers)

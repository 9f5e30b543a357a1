"""npm-style ranges: comparators, ``^``, ``~``, ``x`` wildcards, ``||`` alternatives."""

import re

from .errors import InvalidRange
from .version import Version, coerce

_PARTIAL = re.compile(r"^v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-([0-9A-Za-z.-]+))?$")
_OPERATORS = (">=", "<=", ">", "<", "=")


def _partial(text):
    """``'1.2'`` -> ([1, 2, None], prerelease); wildcards become None."""
    match = _PARTIAL.match(text)
    if not match:
        raise InvalidRange("%r is not a version" % text)
    parts = []
    for group in match.groups()[:3]:
        parts.append(None if group is None or group in "xX*" else int(group))
    # anything after a wildcard is a wildcard too: 1.x.3 means 1.x
    for i in range(1, 3):
        if parts[i - 1] is None:
            parts[i] = None
    pre = match.group(4).split(".") if match.group(4) else ()
    return parts, pre


def _lower(parts, pre):
    return Version(*(p or 0 for p in parts), prerelease=pre)


def _caret(parts, pre):
    """^1.2.3 := >=1.2.3 <2.0.0; the first non-zero component is the one that may not change."""
    major, minor, patch = parts
    low = _lower(parts, pre)
    if major is None:
        return [(">=", Version(0, 0, 0))]
    if major > 0 or minor is None:
        return [(">=", low), ("<", Version(major + 1, 0, 0, ("0",)))]
    if minor > 0 or patch is None:
        return [(">=", low), ("<", Version(0, minor + 1, 0, ("0",)))]
    return [(">=", low), ("<", Version(0, 0, patch + 1, ("0",)))]


def _tilde(parts, pre):
    """~1.2.3 := >=1.2.3 <1.3.0; ~1 := >=1.0.0 <2.0.0."""
    major, minor, _ = parts
    low = _lower(parts, pre)
    if major is None:
        return [(">=", Version(0, 0, 0))]
    if minor is None:
        return [(">=", low), ("<", Version(major + 1, 0, 0, ("0",)))]
    return [(">=", low), ("<", Version(major, minor + 1, 0, ("0",)))]


def _plain(op, parts, pre):
    if None not in parts:
        return [(op or "=", Version(*parts, prerelease=pre))]
    # wildcards: 1.2.x := >=1.2.0 <1.3.0
    if parts[0] is None:
        return [(">=", Version(0, 0, 0))]
    if parts[1] is None:
        upper = Version(parts[0] + 1, 0, 0, ("0",))
    else:
        upper = Version(parts[0], parts[1] + 1, 0, ("0",))
    if op in (None, "="):
        return [(">=", _lower(parts, pre)), ("<", upper)]
    if op in (">", "<="):
        return [(">=" if op == ">" else "<", upper)]
    return [(op, _lower(parts, pre))]


def _comparators(token):
    if token.startswith("^"):
        return _caret(*_partial(token[1:]))
    if token.startswith("~"):
        return _tilde(*_partial(token[1:].lstrip(">")))
    for op in _OPERATORS:
        if token.startswith(op):
            return _plain(op, *_partial(token[len(op):].strip()))
    return _plain(None, *_partial(token))


_COMPARE = {
    "=": lambda a, b: a == b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


class Range:
    """A set of alternatives (``||``), each a conjunction of comparators."""

    def __init__(self, text):
        self.text = text
        self.alternatives = []
        for alternative in text.split("||"):
            # '>= 1.2' is written with a space sometimes: glue operators to their version
            tokens = re.sub(r"(>=|<=|>|<|=)\s+", r"\1", alternative.strip()).replace(",", " ").split()
            if not tokens:
                tokens = ["*"]
            comparators = []
            for token in tokens:
                comparators.extend(_comparators(token))
            self.alternatives.append(comparators)

    def __repr__(self):
        return "Range(%r)" % self.text

    def contains(self, version):
        version = coerce(version)
        for comparators in self.alternatives:
            if all(_COMPARE[op](version, bound) for op, bound in comparators):
                if version.prerelease and not self._allows_prerelease_of(version, comparators):
                    continue
                return True
        return False

    __contains__ = contains

    @staticmethod
    def _allows_prerelease_of(version, comparators):
        # npm: a pre-release only matches when a comparator names a pre-release of the same
        # major.minor.patch.
        return any(bound.prerelease and bound.release == version.release
                   for _, bound in comparators)

    def max_satisfying(self, versions):
        matching = [coerce(v) for v in versions if self.contains(v)]
        return max(matching) if matching else None


def satisfies(version, range_text):
    """Whether ``version`` is in the range ``range_text``."""
    return Range(range_text).contains(version)

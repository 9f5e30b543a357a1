import pytest

from semverkit import bump


@pytest.mark.parametrize("version,part,expected", [
    ("1.2.3", "patch", "1.2.4"),
    ("1.2.3", "minor", "1.3.0"),
    ("1.2.3", "major", "2.0.0"),
    ("1.2.3", "prerelease", "1.2.4-rc.0"),
    ("1.2.4-rc.0", "prerelease", "1.2.4-rc.1"),
    ("1.2.4-beta", "prerelease", "1.2.4-beta.0"),
])
def test_bump(version, part, expected):
    assert bump(version, part) == expected


def test_bad_part():
    with pytest.raises(ValueError):
        bump("1.0.0", "micro")


@pytest.mark.parametrize("version,part,expected", [
    ("2.0.0-rc.1", "major", "2.0.0"),
    ("1.3.0-rc.1", "minor", "1.3.0"),
    ("1.2.4-rc.1", "patch", "1.2.4"),
    ("1.2.4-rc.1", "minor", "1.3.0"),
    ("1.2.3+build.7", "patch", "1.2.4"),
])
def test_bump_releases_prereleases_and_drops_build(version, part, expected):
    assert bump(version, part) == expected

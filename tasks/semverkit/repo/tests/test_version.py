import pytest

from semverkit import InvalidVersion, Version


def test_parse_and_str_round_trip():
    for text in ["1.2.3", "0.0.1", "1.0.0-alpha.1", "1.0.0+build.5", "2.1.0-rc.1+sha.abc"]:
        assert str(Version.parse(text)) == text


def test_leading_v_is_accepted():
    assert Version.parse("v1.2.3").release == (1, 2, 3)


@pytest.mark.parametrize("text", ["1.2", "01.2.3", "1.2.3-", "1.2.3-a..b", "one.two.three"])
def test_invalid(text):
    with pytest.raises(InvalidVersion):
        Version.parse(text)


def test_release_ordering():
    assert Version.parse("1.2.3") < Version.parse("1.10.0") < Version.parse("2.0.0")


def test_prerelease_sorts_before_release():
    assert Version.parse("1.0.0-rc.1") < Version.parse("1.0.0")


def test_build_metadata_is_ignored_for_precedence():
    assert Version.parse("1.0.0+a") == Version.parse("1.0.0+b")
    assert len({Version.parse("1.0.0+a"), Version.parse("1.0.0")}) == 1


def test_semver_spec_precedence_example():
    chain = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
             "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0"]
    versions = [Version.parse(v) for v in chain]
    assert sorted(reversed(versions)) == versions


def test_numeric_prerelease_identifiers_compare_as_numbers():
    assert Version.parse("1.0.0-rc.2") < Version.parse("1.0.0-rc.10")
    assert Version.parse("1.0.0-2") < Version.parse("1.0.0-10")

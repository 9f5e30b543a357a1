from envfile import interpolate


def test_braced_and_bare():
    assert interpolate("${HOME}/x:$USER", {"HOME": "/h", "USER": "me"}) == "/h/x:me"


def test_unknown_is_empty():
    assert interpolate("a${NOPE}b", {}) == "ab"


def test_escaped_dollar():
    assert interpolate("cost: \\$5", {}) == "cost: $5"


def test_default_when_unset():
    assert interpolate("${PORT:-8080}", {}) == "8080"
    assert interpolate("${PORT-8080}", {}) == "8080"
    assert interpolate("${PORT:-8080}", {"PORT": "9000"}) == "9000"


def test_colon_dash_default_also_applies_to_empty_values():
    assert interpolate("${PORT:-8080}", {"PORT": ""}) == "8080"
    assert interpolate("${PORT-8080}", {"PORT": ""}) == ""

import pytest

from unitconv import UnknownUnit, parse_quantity


@pytest.mark.parametrize("text,value,symbol", [
    ("5 km", 5, "km"),
    ("-40°F", -40, "°F"),
    ("1.5e3 m", 1500.0, "m"),
    ("  .5 kg ", 0.5, "kg"),
    ("3 kilometers", 3, "km"),
    ("72.5 degF", 72.5, "°F"),
])
def test_parse(text, value, symbol):
    q = parse_quantity(text)
    assert q.value == value and q.unit.symbol == symbol


def test_int_stays_int():
    assert isinstance(parse_quantity("5 m").value, int)


@pytest.mark.parametrize("text", ["km", "5", "five km", ""])
def test_not_a_quantity(text):
    with pytest.raises(ValueError):
        parse_quantity(text)


def test_unknown_unit_in_text():
    with pytest.raises(UnknownUnit):
        parse_quantity("5 parsecs")


def test_parse_micro_sign_from_keyboard():
    assert parse_quantity("250 \u00b5m").to("mm").value == pytest.approx(0.25)

import pytest

from unitconv import IncompatibleUnits, UnknownUnit, get_unit
from unitconv.units import convert


def test_lookup_by_symbol_and_name():
    assert get_unit("km") is get_unit("kilometers")
    assert get_unit("Miles").symbol == "mi"


def test_unknown_unit():
    with pytest.raises(UnknownUnit) as info:
        get_unit("furlong")
    assert "furlong" in str(info.value)


def test_length_conversion():
    assert convert(1, "mi", "m") == pytest.approx(1609.344)
    assert convert(12, "in", "ft") == pytest.approx(1.0)


def test_incompatible():
    with pytest.raises(IncompatibleUnits):
        convert(1, "kg", "m")


def test_temperatures():
    assert convert(100, "°C", "°F") == pytest.approx(212)
    assert convert(-40, "°F", "°C") == pytest.approx(-40)
    assert convert(0, "K", "°C") == pytest.approx(-273.15)
    assert convert(32, "degF", "K") == pytest.approx(273.15)


def test_micro_prefix_with_either_mu_character():
    micro_sign, greek_mu = "\u00b5", "\u03bc"
    assert get_unit(micro_sign + "m") is get_unit(greek_mu + "m") is get_unit("um")
    assert convert(1500, micro_sign + "g", "mg") == pytest.approx(1.5)

import pytest

from unitconv import IncompatibleUnits, Quantity


def test_to():
    q = Quantity(5, "km").to("mi")
    assert q.unit.symbol == "mi" and q.value == pytest.approx(3.10686, rel=1e-5)


def test_add_converts_to_left_unit():
    total = Quantity(1, "m") + Quantity(50, "cm")
    assert total.unit.symbol == "m" and total.value == pytest.approx(1.5)


def test_adding_temperatures_is_refused():
    with pytest.raises(IncompatibleUnits):
        Quantity(20, "°C") + Quantity(10, "°C")


def test_equality_across_units():
    assert Quantity(1, "km") == Quantity(1000, "m")
    assert Quantity(1, "h") < Quantity(61, "min")


def test_format():
    assert Quantity(5, "km").format() == "5 km"
    assert Quantity(3.10686, "mi").format(2) == "3.11 mi"
    assert str(Quantity(1.5, "kg")) == "1.5 kg"


def test_format_rounds_halves_up():
    assert Quantity(0.125, "kg").format(2) == "0.13 kg"
    assert Quantity(2.675, "m").format(2) == "2.68 m"
    assert Quantity(2.5, "h").format(0) == "3 h"
    assert Quantity(-0.5, "s").format(0) == "-1 s"

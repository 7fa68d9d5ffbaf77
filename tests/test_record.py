"""Record: value objects with fields set once, by position or keyword, defaults filled in."""

from __future__ import annotations

import pytest

from ai_doctor.record import Record


class Point(Record):
    __slots__ = ("x", "y", "label")
    _defaults = {"label": ""}


def test_fields_by_position_keyword_and_default():
    assert Point(1, 2) == Point(x=1, y=2) == Point(1, y=2, label="")
    assert Point(1, 2, "a").label == "a" and Point(1, 2).label == ""
    assert Point(1, 2)._replace(label="b") == Point(1, 2, "b")
    assert hash(Point(1, 2)) == hash(Point(x=1, y=2))


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: Point(1, 2, "a", 4), "Point takes 3 fields, got 4"),
        (lambda: Point(1, x=2, y=3), "Point got 'x' twice"),
        (lambda: Point(1, 2, "a", label="b"), "Point got 'label' twice"),
        (lambda: Point(1), "Point is missing field 'y'"),
        (lambda: Point(1, 2, colour="red"), "Point has no field 'colour'"),
        (lambda: Point(1, 2, "a", colour="red"), "Point has no field 'colour'"),
    ],
)
def test_wrong_fields_are_named(make, words):
    with pytest.raises(TypeError, match="^%s$" % words):
        make()


def test_immutable():
    point = Point(1, 2)
    with pytest.raises(AttributeError):
        point.x = 3

"""Immutable value objects, cheap to define.

``dataclasses`` imports ``inspect`` and a ``namedtuple`` class is built by ``exec``; with about
forty value types, either costs a noticeable part of a run that is budgeted at a few times
Python's own start-up. A :class:`Record` subclass only lists its fields in ``__slots__``.
"""

from __future__ import annotations


class Record:
    """Fields from ``__slots__``, set once by keyword or position; defaults in ``_defaults``.

    Equal when the type and every field are equal; hashable when the fields are.
    """

    __slots__ = ()
    _defaults = {}

    def __init__(self, *args, **kwargs):
        # The hot path of a run (a thousand records): positional fields set in one loop, the
        # rest looked up by name only when some are left.
        names = self.__slots__
        given = len(args)
        if given > len(names):
            raise TypeError("%s takes %d fields, got %d" % (type(self).__name__, len(names), given))
        setter = object.__setattr__
        for name, value in zip(names, args):
            setter(self, name, value)
        taken = 0
        if given < len(names):
            defaults = self._defaults
            for name in names[given:]:
                if name in kwargs:
                    setter(self, name, kwargs[name])
                    taken += 1
                elif name in defaults:
                    setter(self, name, defaults[name])
                else:
                    raise TypeError("%s is missing field %r" % (type(self).__name__, name))
        if taken != len(kwargs):
            twice = [name for name in names[:given] if name in kwargs]
            if twice:
                raise TypeError("%s got %r twice" % (type(self).__name__, twice[0]))
            unknown = sorted(set(kwargs) - set(names))
            raise TypeError("%s has no field %s" % (type(self).__name__, ", ".join(map(repr, unknown))))

    def __setattr__(self, name, value):
        raise AttributeError("%s is immutable" % type(self).__name__)

    __delattr__ = __setattr__

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self):
        return hash((type(self).__name__,) + self._values())

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join("%s=%r" % (n, getattr(self, n)) for n in self.__slots__))

    def _replace(self, **changes):
        values = {name: getattr(self, name) for name in self.__slots__}
        values.update(changes)
        return type(self)(**values)

    def _asdict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}

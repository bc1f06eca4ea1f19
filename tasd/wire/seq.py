"""TCP sequence numbers: 32-bit values that wrap around (RFC 9293 §3.4)."""

from __future__ import annotations

_MOD = 1 << 32
_HALF = 1 << 31


class SeqNum:
    """A TCP sequence number, reduced mod 2**32. Immutable and hashable.

    ``a - b`` between two SeqNums is the signed distance from ``b`` to ``a``, in
    [-2**31, 2**31), and the comparisons are its sign: ``a < b`` iff ``a - b < 0``.
    This is RFC 1982 serial-number arithmetic as Linux's ``before()``/``after()``
    implement it. It is meaningful for numbers less than 2**31 apart (any TCP window
    is); at exactly 2**31 apart the order is undefined (RFC 1982 §3.2) and, as in
    Linux, each number is "before" the other.

    ``SeqNum ± int`` is a SeqNum. SeqNums do not compare with plain ints (a wrapped
    comparison against an unwrapped int is always a bug): convert with ``int(s)``.
    """

    __slots__ = ("_value",)

    def __init__(self, value: SeqNum | int = 0) -> None:
        v = value._value if isinstance(value, SeqNum) else int(value) % _MOD
        object.__setattr__(self, "_value", v)

    def __setattr__(self, name, value):
        raise AttributeError("SeqNum is immutable")

    def __int__(self) -> int:
        return self._value

    def __repr__(self) -> str:
        return f"SeqNum({self._value})"

    def __hash__(self) -> int:
        return hash(self._value)

    def __eq__(self, other):
        if isinstance(other, SeqNum):
            return self._value == other._value
        return NotImplemented

    def __add__(self, n: int) -> SeqNum:
        if isinstance(n, int):
            return SeqNum(self._value + n)
        return NotImplemented

    __radd__ = __add__

    def __sub__(self, other):
        if isinstance(other, SeqNum):
            return (self._value - other._value + _HALF) % _MOD - _HALF
        if isinstance(other, int):
            return SeqNum(self._value - other)
        return NotImplemented

    def __lt__(self, other: SeqNum) -> bool:
        if isinstance(other, SeqNum):
            return self - other < 0
        return NotImplemented

    def __le__(self, other: SeqNum) -> bool:
        if isinstance(other, SeqNum):
            return self - other <= 0
        return NotImplemented

    def __gt__(self, other: SeqNum) -> bool:
        if isinstance(other, SeqNum):
            return self - other > 0
        return NotImplemented

    def __ge__(self, other: SeqNum) -> bool:
        if isinstance(other, SeqNum):
            return self - other >= 0
        return NotImplemented

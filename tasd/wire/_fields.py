"""Small checks shared by the repr classes (not public)."""

from ipaddress import IPv4Address

from .errors import Malformed, Truncated


def need(buf, n: int, what: str) -> None:
    """Raise Truncated unless `buf` holds at least `n` bytes."""
    if len(buf) < n:
        raise Truncated(f"{what}: need {n} bytes, have {len(buf)}")


def check_uint(name: str, value: int, bits: int) -> None:
    """Raise Malformed unless `value` fits an unsigned field of `bits` bits."""
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value < 1 << bits:
        raise Malformed(f"{name}={value!r} does not fit in {bits} bits")


def setf(obj, name: str, value) -> None:
    """Set a field of a frozen dataclass from its __post_init__ (normalisation)."""
    object.__setattr__(obj, name, value)


def as_ipv4(addr) -> IPv4Address:
    return addr if isinstance(addr, IPv4Address) else IPv4Address(addr)

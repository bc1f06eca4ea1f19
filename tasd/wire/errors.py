"""Errors raised by the wire layer.

Every parser either returns a repr or raises a `WireError`; no byte string makes it
raise anything else. `WireError` is a `ValueError`, so callers that only care about
"bad input" can catch that.
"""


class WireError(ValueError):
    """Bytes (or a repr) that do not make a valid packet of the expected kind."""


class Truncated(WireError):
    """The buffer ends before the header or the length it announces."""


class Malformed(WireError):
    """A field holds a value the format forbids, or a repr cannot be encoded."""


class BadChecksum(WireError):
    """The Internet checksum does not verify."""

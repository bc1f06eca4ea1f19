"""The Internet checksum (RFC 1071) and the IPv4 pseudo-header (RFC 9293 §3.1).

The 16-bit one's-complement sum of a buffer equals the buffer read as one big-endian
integer, reduced mod 0xffff (because 2**16 == 1 mod 0xffff), except that a non-zero
buffer never sums to 0 but to 0xffff ("negative zero"). Reading the buffer with
`int.from_bytes` thus sums it in C, with no per-word Python loop.
"""

from ipaddress import IPv4Address

from ._fields import check_uint


def ones_sum(data, initial: int = 0) -> int:
    """Folded 16-bit one's-complement sum of `data` (odd length: zero-padded) plus
    `initial`, itself such a sum (e.g. from `pseudo_header_sum`). Not complemented."""
    total = int.from_bytes(data, "big")
    if len(data) & 1:
        total <<= 8
    total += initial
    s = total % 0xFFFF
    return 0xFFFF if s == 0 and total else s


def inet_checksum(data, initial: int = 0) -> int:
    """The Internet checksum of `data`: the complement of `ones_sum(data, initial)`.

    Computed over a buffer whose checksum field is zero, it is the value to store;
    computed over a received buffer including its checksum field, it is 0 iff the
    checksum verifies.
    """
    return ~ones_sum(data, initial) & 0xFFFF


def pseudo_header_sum(src: IPv4Address, dst: IPv4Address, protocol: int, length: int) -> int:
    """`ones_sum` of the IPv4 pseudo-header: src, dst, zero, protocol, `length` (the
    TCP/UDP header plus payload length), to pass as `initial` to `inet_checksum`."""
    check_uint("protocol", protocol, 8)
    check_uint("pseudo-header length", length, 16)
    return ones_sum(src.packed + dst.packed, protocol + length)

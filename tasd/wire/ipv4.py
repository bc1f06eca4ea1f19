"""IPv4 packets (RFC 791), with the ECN field of RFC 3168."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address

from ._fields import as_ipv4, check_uint, need, setf
from .checksum import inet_checksum
from .errors import BadChecksum, Malformed

HEADER_LEN = 20
MAX_OPTIONS_LEN = 40
_HDR = struct.Struct("!BBHHHBBH4s4s")
_DF = 0x4000
_MF = 0x2000


class IpProtocol(IntEnum):
    ICMP = 1
    TCP = 6
    UDP = 17


class Ecn(IntEnum):
    """The two low bits of the former TOS byte (RFC 3168 §5)."""
    NOT_ECT = 0b00
    ECT1 = 0b01
    ECT0 = 0b10
    CE = 0b11


@dataclass(frozen=True, slots=True)
class Ipv4Packet:
    """An IPv4 packet. `frag_offset` is in bytes (a multiple of 8); `options` are the
    raw option bytes (a multiple of 4, at most 40), not interpreted. DF defaults to
    set, as Linux sends TCP (path MTU discovery, RFC 1191)."""

    src: IPv4Address
    dst: IPv4Address
    protocol: int
    payload: bytes = b""
    ttl: int = 64
    dscp: int = 0
    ecn: Ecn = Ecn.NOT_ECT
    ident: int = 0
    dont_frag: bool = True
    more_frags: bool = False
    frag_offset: int = 0
    options: bytes = b""

    def __post_init__(self) -> None:
        setf(self, "src", as_ipv4(self.src))
        setf(self, "dst", as_ipv4(self.dst))
        check_uint("protocol", self.protocol, 8)
        check_uint("ttl", self.ttl, 8)
        check_uint("dscp", self.dscp, 6)
        check_uint("ecn", self.ecn, 2)
        setf(self, "ecn", Ecn(self.ecn))
        check_uint("ident", self.ident, 16)
        setf(self, "dont_frag", bool(self.dont_frag))
        setf(self, "more_frags", bool(self.more_frags))
        check_uint("frag_offset", self.frag_offset, 16)
        if self.frag_offset % 8:
            raise Malformed(f"frag_offset={self.frag_offset} is not a multiple of 8")
        setf(self, "options", bytes(self.options))
        if len(self.options) % 4 or len(self.options) > MAX_OPTIONS_LEN:
            raise Malformed(f"IPv4 options of {len(self.options)} bytes")
        setf(self, "payload", bytes(self.payload))
        check_uint("total length", self.header_len + len(self.payload), 16)

    @property
    def header_len(self) -> int:
        return HEADER_LEN + len(self.options)

    @property
    def tos(self) -> int:
        """The whole former TOS byte: DSCP and ECN (RFC 2474, RFC 3168)."""
        return self.dscp << 2 | self.ecn

    @property
    def is_fragment(self) -> bool:
        return self.more_frags or self.frag_offset != 0

    @classmethod
    def parse(cls, buf, *, verify_checksum: bool = True) -> Ipv4Packet:
        """Parse `buf`, which may run on past the total length (Ethernet padding)."""
        need(buf, HEADER_LEN, "IPv4 header")
        vihl, tos, total_len, ident, frag, ttl, proto, _, src, dst = _HDR.unpack_from(buf)
        if vihl >> 4 != 4:
            raise Malformed(f"IP version {vihl >> 4}, not 4")
        header_len = (vihl & 0x0F) * 4
        if header_len < HEADER_LEN:
            raise Malformed(f"IPv4 header length {header_len} < {HEADER_LEN}")
        need(buf, header_len, "IPv4 header with options")
        if total_len < header_len:
            raise Malformed(f"IPv4 total length {total_len} < header length {header_len}")
        need(buf, total_len, "IPv4 packet")
        if verify_checksum and inet_checksum(buf[:header_len]) != 0:
            raise BadChecksum("IPv4 header checksum")
        # The reserved flag bit (RFC 791 §3.1, "must be zero") is ignored.
        return cls(
            src=IPv4Address(src), dst=IPv4Address(dst), protocol=proto,
            payload=bytes(buf[header_len:total_len]), ttl=ttl, dscp=tos >> 2,
            ecn=Ecn(tos & 0b11), ident=ident, dont_frag=bool(frag & _DF),
            more_frags=bool(frag & _MF), frag_offset=(frag & 0x1FFF) * 8,
            options=bytes(buf[HEADER_LEN:header_len]))

    def emit(self) -> bytes:
        frag = (_DF if self.dont_frag else 0) | (_MF if self.more_frags else 0) | self.frag_offset // 8
        header = bytearray(_HDR.pack(
            0x40 | self.header_len // 4, self.tos, self.header_len + len(self.payload),
            self.ident, frag, self.ttl, self.protocol, 0, self.src.packed, self.dst.packed))
        header += self.options
        struct.pack_into("!H", header, 10, inet_checksum(header))
        return bytes(header) + self.payload


def as_ipv4(addr) -> IPv4Address:
    """addr as an IPv4Address, one returned as it is: IPv4Address(an
    IPv4Address) goes through a string (the hot paths call this)."""
    return addr if type(addr) is IPv4Address else IPv4Address(addr)

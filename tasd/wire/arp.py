"""ARP for IPv4 over Ethernet (RFC 826; gratuitous ARP and probes: RFC 5227)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address

from ._fields import as_ipv4, need, setf
from .errors import Malformed
from .ethernet import EtherType, MacAddr

PACKET_LEN = 28
_HTYPE_ETHERNET = 1
_FIXED = struct.Struct("!HHBB")  # htype, ptype, hlen, plen
_PACKET = struct.Struct("!HHBBH6s4s6s4s")


class ArpOp(IntEnum):
    REQUEST = 1
    REPLY = 2


@dataclass(frozen=True, slots=True)
class ArpPacket:
    """An Ethernet/IPv4 ARP packet. Bytes after the 28 of the packet (Ethernet
    padding) are ignored by `parse`."""

    oper: ArpOp
    sha: MacAddr
    spa: IPv4Address
    tha: MacAddr
    tpa: IPv4Address

    def __post_init__(self) -> None:
        try:
            setf(self, "oper", ArpOp(self.oper))
        except ValueError:
            raise Malformed(f"unknown ARP operation {self.oper!r}") from None
        setf(self, "sha", MacAddr(self.sha))
        setf(self, "tha", MacAddr(self.tha))
        setf(self, "spa", as_ipv4(self.spa))
        setf(self, "tpa", as_ipv4(self.tpa))

    @classmethod
    def parse(cls, buf) -> ArpPacket:
        need(buf, PACKET_LEN, "ARP packet")
        htype, ptype, hlen, plen, oper, sha, spa, tha, tpa = _PACKET.unpack_from(buf)
        if (htype, ptype, hlen, plen) != (_HTYPE_ETHERNET, EtherType.IPV4, 6, 4):
            raise Malformed(
                f"not Ethernet/IPv4 ARP: htype={htype} ptype={ptype:#06x} hlen={hlen} plen={plen}")
        return cls(oper, MacAddr(sha), IPv4Address(spa), MacAddr(tha), IPv4Address(tpa))

    def emit(self) -> bytes:
        return _PACKET.pack(_HTYPE_ETHERNET, EtherType.IPV4, 6, 4, self.oper,
                            self.sha.packed, self.spa.packed, self.tha.packed, self.tpa.packed)

    @property
    def is_gratuitous(self) -> bool:
        """Announces the sender's own binding: spa == tpa (RFC 5227 §3; request or
        reply)."""
        return self.spa == self.tpa

    @property
    def is_probe(self) -> bool:
        """An address-conflict probe: a request with spa 0.0.0.0 (RFC 5227 §2.1.1)."""
        return self.oper == ArpOp.REQUEST and int(self.spa) == 0

    @classmethod
    def request(cls, sha: MacAddr, spa: IPv4Address, tpa: IPv4Address) -> ArpPacket:
        """Who has `tpa`? Tell `spa` at `sha`. tha is zero, as Linux sends it."""
        return cls(ArpOp.REQUEST, sha, spa, MacAddr.ZERO, tpa)

    @classmethod
    def announcement(cls, sha: MacAddr, spa: IPv4Address) -> ArpPacket:
        """A gratuitous request announcing `spa` at `sha` (RFC 5227 §2.3)."""
        return cls(ArpOp.REQUEST, sha, spa, MacAddr.ZERO, spa)

    @classmethod
    def reply_to(cls, request: ArpPacket, our_mac: MacAddr) -> ArpPacket:
        """The reply to `request`, which asked for an address we own (its tpa)."""
        if request.oper != ArpOp.REQUEST:
            raise ValueError("can only reply to an ARP request")
        return cls(ArpOp.REPLY, our_mac, request.tpa, request.sha, request.spa)

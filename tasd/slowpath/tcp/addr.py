"""Connection identifiers: the 4-tuple, from our side."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import NamedTuple

_THIS_NETWORK = IPv4Network("0.0.0.0/8")


class FourTuple(NamedTuple):
    local_ip: IPv4Address
    local_port: int
    remote_ip: IPv4Address
    remote_port: int

    def packed(self) -> bytes:
        return (self.local_ip.packed + self.local_port.to_bytes(2, "big")
                + self.remote_ip.packed + self.remote_port.to_bytes(2, "big"))


def is_unicast(addr: IPv4Address) -> bool:
    """An address a TCP peer may have: RFC 9293 MUST-57 (no SYN from a broadcast
    or multicast address); 0.0.0.0/8 ("this network") and 240.0.0.0/4 (which holds
    the limited broadcast) are never sources either."""
    return not (addr.is_multicast or addr.is_reserved or addr in _THIS_NETWORK)

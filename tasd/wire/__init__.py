"""Wire formats of the slowpath: typed parse/emit representations of Ethernet, ARP,
IPv4, ICMPv4 and TCP, the Internet checksum and TCP sequence numbers.

Each repr is a frozen dataclass with ``Repr.parse(buf) -> Repr`` and
``repr.emit() -> bytes``. Fields are range-checked on construction and `parse`
checks lengths before reading any field, so every byte string either parses or
raises a `WireError` (`Truncated`, `Malformed`, `BadChecksum`). This layer is for
control traffic; bulk data never reaches Python.
"""

from .arp import ArpOp, ArpPacket
from .checksum import inet_checksum, ones_sum, pseudo_header_sum
from .errors import BadChecksum, Malformed, Truncated, WireError
from .ethernet import EthernetFrame, EtherType, MacAddr
from .icmp import IcmpEcho, IcmpMessage, IcmpType, echo_reply_for, parse_icmp
from .ipv4 import Ecn, IpProtocol, Ipv4Packet, as_ipv4
from .seq import SeqNum
from .tcp import (Mss, OptionKind, Sack, SackPermitted, TcpFlags, TcpOption, TcpSegment,
                  Timestamps, UnknownOption, WindowScale)

__all__ = [
    "WireError", "Truncated", "Malformed", "BadChecksum",
    "inet_checksum", "ones_sum", "pseudo_header_sum",
    "SeqNum",
    "MacAddr", "EtherType", "EthernetFrame",
    "ArpOp", "ArpPacket",
    "IpProtocol", "Ecn", "Ipv4Packet", "as_ipv4",
    "IcmpType", "IcmpEcho", "IcmpMessage", "parse_icmp", "echo_reply_for",
    "TcpFlags", "OptionKind", "TcpOption", "Mss", "WindowScale", "SackPermitted", "Sack",
    "Timestamps", "UnknownOption", "TcpSegment",
]

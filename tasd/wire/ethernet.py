"""Ethernet II frames (RFC 894) and MAC addresses."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from enum import IntEnum

from ._fields import check_uint, need, setf

HEADER_LEN = 14
_HDR = struct.Struct("!6s6sH")
_HEX_PAIR = re.compile(r"[0-9A-Fa-f]{2}")


class EtherType(IntEnum):
    IPV4 = 0x0800
    ARP = 0x0806
    VLAN = 0x8100  # IEEE 802.1Q tag
    IPV6 = 0x86DD


class MacAddr:
    """A 48-bit IEEE 802 MAC address. Immutable and hashable.

    Built from another MacAddr, 6 bytes, an int, or a string "aa:bb:cc:dd:ee:ff"
    (also with "-"); `str()` gives the lower-case colon form, `bytes()`/`packed`
    the 6 octets. Bad input raises ValueError, as `ipaddress` does.
    """

    __slots__ = ("_packed",)
    BROADCAST: MacAddr
    ZERO: MacAddr

    def __init__(self, addr: MacAddr | bytes | str | int) -> None:
        if isinstance(addr, MacAddr):
            packed = addr._packed
        elif isinstance(addr, str):
            parts = addr.replace("-", ":").split(":")
            if len(parts) != 6 or not all(_HEX_PAIR.fullmatch(p) for p in parts):
                raise ValueError(f"not a MAC address: {addr!r}")
            packed = bytes(int(p, 16) for p in parts)
        elif isinstance(addr, int):
            if not 0 <= addr < 1 << 48:
                raise ValueError(f"MAC address out of range: {addr:#x}")
            packed = addr.to_bytes(6, "big")
        else:
            packed = bytes(addr)
            if len(packed) != 6:
                raise ValueError(f"a MAC address is 6 bytes, not {len(packed)}")
        object.__setattr__(self, "_packed", packed)

    def __setattr__(self, name, value):
        raise AttributeError("MacAddr is immutable")

    @property
    def packed(self) -> bytes:
        return self._packed

    def __bytes__(self) -> bytes:
        return self._packed

    def __int__(self) -> int:
        return int.from_bytes(self._packed, "big")

    def __str__(self) -> str:
        return self._packed.hex(":")

    def __repr__(self) -> str:
        return f"MacAddr('{self}')"

    def __eq__(self, other):
        if isinstance(other, MacAddr):
            return self._packed == other._packed
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._packed)

    @property
    def is_broadcast(self) -> bool:
        return self._packed == b"\xff" * 6

    @property
    def is_multicast(self) -> bool:
        """Group address (I/G bit set); includes broadcast."""
        return bool(self._packed[0] & 0x01)

    @property
    def is_unicast(self) -> bool:
        return not self.is_multicast

    @property
    def is_local(self) -> bool:
        """Locally administered (U/L bit set), e.g. a random veth/TAP address."""
        return bool(self._packed[0] & 0x02)

    @property
    def is_zero(self) -> bool:
        return self._packed == bytes(6)


MacAddr.BROADCAST = MacAddr(b"\xff" * 6)
MacAddr.ZERO = MacAddr(bytes(6))


@dataclass(frozen=True, slots=True)
class EthernetFrame:
    """An Ethernet II frame, without preamble or FCS.

    The payload is everything after the 14-byte header, including any padding to the
    60-byte minimum: only the layer above knows its own length (IPv4 total length).
    An 802.1Q-tagged frame is not unpacked: `ethertype` is `EtherType.VLAN` and the
    payload starts with the tag's TCI; tasd runs on untagged links. Values below
    0x0600 (802.3 length fields) are exposed as they are; callers drop ethertypes they
    do not speak. `emit` does not pad short frames: that is the device's job.
    """

    dst: MacAddr
    src: MacAddr
    ethertype: int
    payload: bytes = b""

    def __post_init__(self) -> None:
        setf(self, "dst", MacAddr(self.dst))
        setf(self, "src", MacAddr(self.src))
        check_uint("ethertype", self.ethertype, 16)
        setf(self, "payload", bytes(self.payload))

    @classmethod
    def parse(cls, buf) -> EthernetFrame:
        need(buf, HEADER_LEN, "Ethernet header")
        dst, src, ethertype = _HDR.unpack_from(buf)
        return cls(MacAddr(dst), MacAddr(src), ethertype, bytes(buf[HEADER_LEN:]))

    def emit(self) -> bytes:
        return _HDR.pack(self.dst.packed, self.src.packed, self.ethertype) + self.payload

"""TCP segments (RFC 9293) and their options (RFC 7323, RFC 2018)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from ipaddress import IPv4Address

from ._fields import check_uint, need, setf
from .checksum import inet_checksum, pseudo_header_sum
from .errors import BadChecksum, Malformed
from .ipv4 import IpProtocol
from .seq import SeqNum

HEADER_LEN = 20
MAX_OPTIONS_LEN = 40
_HDR = struct.Struct("!HHIIBBHHH")


class TcpFlags(IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


class OptionKind(IntEnum):
    EOL = 0
    NOP = 1
    MSS = 2
    WINDOW_SCALE = 3
    SACK_PERMITTED = 4
    SACK = 5
    TIMESTAMPS = 8


_KNOWN_KINDS = frozenset(OptionKind)

@dataclass(frozen=True, slots=True)
class Mss:
    value: int

    def __post_init__(self) -> None:
        check_uint("MSS", self.value, 16)

    def emit(self) -> bytes:
        return struct.pack("!BBH", OptionKind.MSS, 4, self.value)


@dataclass(frozen=True, slots=True)
class WindowScale:
    """The shift count as sent; a receiver clamps values above 14 (RFC 7323 §2.3)."""

    shift: int

    def __post_init__(self) -> None:
        check_uint("window scale", self.shift, 8)

    def emit(self) -> bytes:
        return bytes((OptionKind.WINDOW_SCALE, 3, self.shift))


@dataclass(frozen=True, slots=True)
class SackPermitted:
    def emit(self) -> bytes:
        return bytes((OptionKind.SACK_PERMITTED, 2))


@dataclass(frozen=True, slots=True)
class Sack:
    """1 to 4 SACK blocks, each (left edge, right edge) (RFC 2018 §3)."""

    blocks: tuple[tuple[SeqNum, SeqNum], ...]

    def __post_init__(self) -> None:
        blocks = tuple((SeqNum(left), SeqNum(right)) for left, right in self.blocks)
        if not 1 <= len(blocks) <= 4:
            raise Malformed(f"{len(blocks)} SACK blocks, not 1 to 4")
        setf(self, "blocks", blocks)

    def emit(self) -> bytes:
        edges = [int(edge) for block in self.blocks for edge in block]
        return struct.pack(f"!BB{len(edges)}I", OptionKind.SACK, 2 + 4 * len(edges), *edges)


@dataclass(frozen=True, slots=True)
class Timestamps:
    tsval: int
    tsecr: int

    def __post_init__(self) -> None:
        check_uint("TSval", self.tsval, 32)
        check_uint("TSecr", self.tsecr, 32)

    def emit(self) -> bytes:
        return struct.pack("!BBII", OptionKind.TIMESTAMPS, 10, self.tsval, self.tsecr)


@dataclass(frozen=True, slots=True)
class UnknownOption:
    """An option tasd does not interpret, kept verbatim (kind, then `data` after the
    length byte). Known kinds and EOL/NOP are refused so that a round trip through
    the wire gives back the same repr."""

    kind: int
    data: bytes = b""

    def __post_init__(self) -> None:
        check_uint("option kind", self.kind, 8)
        if self.kind in _KNOWN_KINDS:
            raise Malformed(f"option kind {self.kind} is not unknown")
        setf(self, "data", bytes(self.data))
        if len(self.data) > MAX_OPTIONS_LEN - 2:
            raise Malformed(f"option data of {len(self.data)} bytes cannot fit")

    def emit(self) -> bytes:
        return bytes((self.kind, 2 + len(self.data))) + self.data


TcpOption = Mss | WindowScale | SackPermitted | Sack | Timestamps | UnknownOption

# Total length of the options whose length is fixed (RFC 9293 §3.2, RFC 7323 §2-3).
_FIXED_LEN = {OptionKind.MSS: 4, OptionKind.WINDOW_SCALE: 3,
              OptionKind.SACK_PERMITTED: 2, OptionKind.TIMESTAMPS: 10}


def _parse_option(kind: int, data: bytes) -> TcpOption:
    want = _FIXED_LEN.get(kind)
    if want is not None and len(data) + 2 != want:
        raise Malformed(f"TCP option {kind} of length {len(data) + 2}, not {want}")
    match kind:
        case OptionKind.MSS:
            return Mss(int.from_bytes(data, "big"))
        case OptionKind.WINDOW_SCALE:
            return WindowScale(data[0])
        case OptionKind.SACK_PERMITTED:
            return SackPermitted()
        case OptionKind.TIMESTAMPS:
            return Timestamps(*struct.unpack("!II", data))
        case OptionKind.SACK:
            if len(data) % 8:
                raise Malformed(f"SACK option of length {len(data) + 2}, not 2+8n")
            edges = struct.unpack(f"!{len(data) // 4}I", data)
            return Sack(tuple(zip(edges[::2], edges[1::2])))
    return UnknownOption(kind, data)


def _parse_options(buf) -> tuple[TcpOption, ...]:
    """NOPs are skipped; EOL ends the list, what follows it is padding (RFC 9293
    §3.2)."""
    options = []
    i, end = 0, len(buf)
    while i < end:
        kind = buf[i]
        if kind == OptionKind.EOL:
            break
        if kind == OptionKind.NOP:
            i += 1
            continue
        if i + 1 >= end:
            raise Malformed(f"TCP option {kind} has no length byte")
        length = buf[i + 1]
        if length < 2 or i + length > end:
            raise Malformed(f"TCP option {kind} of length {length} at offset {i}")
        options.append(_parse_option(kind, bytes(buf[i + 2:i + length])))
        i += length
    return tuple(options)


def _emit_options(options: tuple[TcpOption, ...]) -> bytes:
    """Lay the options out as Linux does: each one preceded by NOPs so that it ends
    on a 32-bit boundary, which also aligns the 32-bit values of TS and SACK (RFC 7323
    Appendix A), except that SACK-permitted directly followed by TS shares their
    padding (MSS, SACK_PERM, TS, NOP, WS is 20 bytes). If that does not fit in 40
    bytes, the options are packed without NOPs. The tail is padded with zeros (EOL)."""
    raw = [option.emit() for option in options]
    aligned = bytearray()
    i = 0
    while i < len(raw):
        group = raw[i]
        if (isinstance(options[i], SackPermitted) and i + 1 < len(raw)
                and isinstance(options[i + 1], Timestamps)):
            i += 1
            group += raw[i]
        aligned += bytes([OptionKind.NOP]) * (-(len(aligned) + len(group)) % 4) + group
        i += 1
    if len(aligned) > MAX_OPTIONS_LEN:
        aligned = bytearray(b"".join(raw))
        aligned += bytes(-len(aligned) % 4)
        if len(aligned) > MAX_OPTIONS_LEN:
            raise Malformed(f"TCP options need {len(aligned)} bytes, the limit is 40")
    return bytes(aligned)


@dataclass(frozen=True, slots=True)
class TcpSegment:
    """A TCP segment. `options` excludes NOP and EOL, which `emit` inserts as
    padding. The reserved header bits (including AccECN's AE) are ignored on parse
    and sent as zero (RFC 9293 §3.1)."""

    src_port: int
    dst_port: int
    seq: SeqNum = SeqNum(0)
    ack: SeqNum = SeqNum(0)
    flags: TcpFlags = TcpFlags(0)
    window: int = 0
    urgent: int = 0
    options: tuple[TcpOption, ...] = ()
    payload: bytes = b""

    def __post_init__(self) -> None:
        check_uint("src_port", self.src_port, 16)
        check_uint("dst_port", self.dst_port, 16)
        setf(self, "seq", SeqNum(self.seq))
        setf(self, "ack", SeqNum(self.ack))
        check_uint("flags", self.flags, 8)
        setf(self, "flags", TcpFlags(self.flags))
        check_uint("window", self.window, 16)
        check_uint("urgent", self.urgent, 16)
        setf(self, "options", tuple(self.options))
        for option in self.options:
            if not isinstance(option, TcpOption):
                raise TypeError(f"not a TCP option: {option!r}")
        setf(self, "payload", bytes(self.payload))

    @property
    def seq_len(self) -> int:
        """Sequence space the segment occupies: payload, plus one each for SYN, FIN."""
        return len(self.payload) + (TcpFlags.SYN in self.flags) + (TcpFlags.FIN in self.flags)

    def option(self, cls: type) -> TcpOption | None:
        """The first option of class `cls` (e.g. `Mss`), or None."""
        return next((o for o in self.options if isinstance(o, cls)), None)

    @classmethod
    def parse(cls, buf, src: IPv4Address, dst: IPv4Address, *,
              verify_checksum: bool = True) -> TcpSegment:
        """Parse `buf`, the whole IP payload; `src` and `dst` are the IP addresses
        covered by the checksum's pseudo-header. A bad checksum is reported before a
        malformed option: a corrupted segment is counted as such."""
        need(buf, HEADER_LEN, "TCP header")
        src_port, dst_port, seq, ack, offset, flags, window, _, urgent = _HDR.unpack_from(buf)
        header_len = (offset >> 4) * 4
        if header_len < HEADER_LEN:
            raise Malformed(f"TCP data offset {header_len} < {HEADER_LEN}")
        need(buf, header_len, "TCP header with options")
        if verify_checksum and inet_checksum(
                buf, pseudo_header_sum(src, dst, IpProtocol.TCP, len(buf))) != 0:
            raise BadChecksum("TCP checksum")
        return cls(src_port, dst_port, SeqNum(seq), SeqNum(ack), TcpFlags(flags), window,
                   urgent, _parse_options(buf[HEADER_LEN:header_len]), bytes(buf[header_len:]))

    def emit(self, src: IPv4Address, dst: IPv4Address) -> bytes:
        """The segment with its checksum over the pseudo-header of `src`, `dst`."""
        options = _emit_options(self.options)
        header_len = HEADER_LEN + len(options)
        segment = bytearray(_HDR.pack(
            self.src_port, self.dst_port, int(self.seq), int(self.ack), header_len // 4 << 4,
            self.flags, self.window, 0, self.urgent))
        segment += options
        segment += self.payload
        struct.pack_into("!H", segment, 16, inet_checksum(
            segment, pseudo_header_sum(src, dst, IpProtocol.TCP, len(segment))))
        return bytes(segment)

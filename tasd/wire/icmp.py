"""ICMPv4 messages (RFC 792)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from enum import IntEnum

from ._fields import check_uint, need, setf
from .checksum import inet_checksum
from .errors import BadChecksum, Malformed

HEADER_LEN = 8
_HDR = struct.Struct("!BBH4s")
_ECHO = struct.Struct("!BBHHH")


class IcmpType(IntEnum):
    ECHO_REPLY = 0
    DEST_UNREACHABLE = 3
    REDIRECT = 5
    ECHO_REQUEST = 8
    TIME_EXCEEDED = 11
    PARAMETER_PROBLEM = 12


def _with_checksum(message: bytes) -> bytes:
    return message[:2] + inet_checksum(message).to_bytes(2, "big") + message[4:]


@dataclass(frozen=True, slots=True)
class IcmpEcho:
    """An echo request or reply (type 8 or 0, code 0)."""

    ident: int
    seq: int
    data: bytes = b""
    is_reply: bool = False

    def __post_init__(self) -> None:
        check_uint("ident", self.ident, 16)
        check_uint("seq", self.seq, 16)
        setf(self, "data", bytes(self.data))
        setf(self, "is_reply", bool(self.is_reply))

    @property
    def type(self) -> IcmpType:
        return IcmpType.ECHO_REPLY if self.is_reply else IcmpType.ECHO_REQUEST

    @classmethod
    def parse(cls, buf, *, verify_checksum: bool = True) -> IcmpEcho:
        message = parse_icmp(buf, verify_checksum=verify_checksum)
        if not isinstance(message, IcmpEcho):
            raise Malformed(f"ICMP type {message.type} code {message.code} is not an echo")
        return message

    def emit(self) -> bytes:
        return _with_checksum(_ECHO.pack(self.type, 0, 0, self.ident, self.seq) + self.data)


@dataclass(frozen=True, slots=True)
class IcmpMessage:
    """Any ICMP message, uninterpreted: `rest` is the second 32-bit word of the header
    (e.g. the next-hop MTU of "fragmentation needed"), `payload` what follows (for
    errors, the offending IP header and at least 8 bytes of its payload)."""

    type: int
    code: int
    rest: bytes = bytes(4)
    payload: bytes = b""

    def __post_init__(self) -> None:
        check_uint("type", self.type, 8)
        check_uint("code", self.code, 8)
        setf(self, "rest", bytes(self.rest))
        if len(self.rest) != 4:
            raise Malformed(f"ICMP rest-of-header is 4 bytes, not {len(self.rest)}")
        setf(self, "payload", bytes(self.payload))

    @classmethod
    def parse(cls, buf, *, verify_checksum: bool = True) -> IcmpMessage:
        need(buf, HEADER_LEN, "ICMP header")
        if verify_checksum and inet_checksum(buf) != 0:
            raise BadChecksum("ICMP checksum")
        type_, code, _, rest = _HDR.unpack_from(buf)
        return cls(type_, code, rest, bytes(buf[HEADER_LEN:]))

    def emit(self) -> bytes:
        return _with_checksum(_HDR.pack(self.type, self.code, 0, self.rest) + self.payload)


def parse_icmp(buf, *, verify_checksum: bool = True) -> IcmpEcho | IcmpMessage:
    """An IcmpEcho for echo types with code 0, otherwise an IcmpMessage."""
    message = IcmpMessage.parse(buf, verify_checksum=verify_checksum)
    if message.type in (IcmpType.ECHO_REQUEST, IcmpType.ECHO_REPLY) and message.code == 0:
        ident, seq = struct.unpack("!HH", message.rest)
        return IcmpEcho(ident, seq, message.payload, is_reply=message.type == IcmpType.ECHO_REPLY)
    return message


def echo_reply_for(request: IcmpEcho) -> IcmpEcho:
    """The reply to an echo request: same ident, seq and data (RFC 792, "Echo or Echo Reply Message")."""
    if request.is_reply:
        raise ValueError("can only reply to an echo request")
    return replace(request, is_reply=True)

"""Keyed hashes of connection identifiers: initial sequence numbers (RFC 6528),
per-connection timestamp offsets (RFC 7323 §7.1) and the ephemeral port offset
(RFC 6056 §3.3.3). One secret, one BLAKE2b key; each use has its own
personalisation string so the values are independent."""

from __future__ import annotations

import hashlib

from tasd.wire import SeqNum

from .addr import FourTuple

ISN_TICKS_PER_SECOND = 250_000      # RFC 6528 §3: M is a timer ticking every 4 µs
TS_TICKS_PER_SECOND = 1000          # our TSval clock: 1 ms, as Linux
MIN_SECRET_LEN = 16                 # RFC 6528 §3 asks for at least 128 bits


class KeyedHash:
    """`h(purpose, data) -> int`: a 64-bit keyed hash (BLAKE2b, RFC 7693)."""

    def __init__(self, secret: bytes) -> None:
        secret = bytes(secret)
        if len(secret) < MIN_SECRET_LEN:
            raise ValueError(f"the secret needs at least {MIN_SECRET_LEN} bytes")
        if len(secret) > hashlib.blake2b.MAX_KEY_SIZE:
            secret = hashlib.blake2b(secret).digest()
        self._key = secret

    def __call__(self, purpose: bytes, data: bytes) -> int:
        digest = hashlib.blake2b(data, key=self._key, person=purpose, digest_size=8).digest()
        return int.from_bytes(digest, "big")

    def isn(self, key: FourTuple, now: float) -> SeqNum:
        """ISN = M + F(localip, localport, remoteip, remoteport, secretkey), M the
        4 µs clock (RFC 6528 §3). Differs per 4-tuple; for one 4-tuple it grows
        with time like the RFC 793 clock, so a new incarnation starts above an old
        one's numbers unless the old one sent more than 250 000 bytes a second."""
        m = int(now * ISN_TICKS_PER_SECOND)
        return SeqNum(m + self(b"tasd-tcp-isn", key.packed()))

    def ts_offset(self, key: FourTuple) -> int:
        """The random offset of a connection's TSval clock (RFC 7323 §7.1: do not
        leak a host-wide clock). Keyed by the 4-tuple, so that successive
        incarnations of one 4-tuple see a monotonic clock (PAWS across TIME_WAIT,
        RFC 6191)."""
        return self(b"tasd-tcp-tsoff", key.packed()) & 0xFFFFFFFF

    def port_offset(self, key: FourTuple) -> int:
        """F(local_ip, remote_ip, remote_port, secret) of RFC 6056 §3.3.3; the
        local port in `key` is ignored."""
        return self(b"tasd-tcp-port", key._replace(local_port=0).packed())

    def pick(self, key: FourTuple, n: int) -> int:
        """A stable choice among n (SO_REUSEPORT listeners) for this 4-tuple."""
        return self(b"tasd-tcp-reuse", key.packed()) % n


def tsval(now: float, ts_offset: int) -> int:
    return (int(now * TS_TICKS_PER_SECOND) + ts_offset) & 0xFFFFFFFF

"""Ephemeral port selection, RFC 6056 §3.3.3 (Algorithm 3, "simple hash-based").

port = min + (F(local_ip, remote_ip, remote_port, secret) + next_ephemeral) % n,
`next_ephemeral` growing by one per try. Ports look random to an off-path
observer, differ per destination, and successive connections to one destination
take successive ports, which keeps port reuse (and TIME_WAIT clashes) rare.
"""

from __future__ import annotations

from typing import Callable

from .addr import FourTuple
from .isn import KeyedHash


class EphemeralPorts:
    def __init__(self, port_range: tuple[int, int], keyed_hash: KeyedHash) -> None:
        self.lo, self.hi = port_range
        self._hash = keyed_hash
        self._next = 0

    def allocate(self, key: FourTuple, usable: Callable[[int], bool]) -> int | None:
        """A port p for `key` (its local_port is ignored) with `usable(p)`, or
        None when every port of the range is taken."""
        n = self.hi - self.lo + 1
        offset = self._hash.port_offset(key)
        for _ in range(n):
            port = self.lo + (offset + self._next) % n
            self._next = (self._next + 1) % n
            if usable(port):
                return port
        return None

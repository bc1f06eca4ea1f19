"""A listening socket: its SYN_RECEIVED connections and its accept queue.

Bounds, as Linux without SYN cookies:
- the accept queue (established, installed, not yet delivered) is full when it
  holds more than `backlog` connections (sk_acceptq_is_full: so backlog 0 still
  admits one);
- SYN_RECEIVED connections are bounded by the backlog too (at least 1) and by
  max_syn_backlog.
A SYN that finds either full is dropped (counted as syn_dropped_backlog); the peer
sends it again. A handshake-completing ACK that finds the accept queue full is
dropped (counted as listen_overflows) and the connection stays in SYN_RECEIVED:
the SYN-ACK timer makes the peer repeat the ACK, maybe when there is room."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Hashable

from .config import TcpConfig


@dataclass(eq=False)
class Listener:
    id: int
    owner: Hashable
    port: int
    backlog: int
    reuseport: bool
    credit: int = 0
    accept_queue: deque = field(default_factory=deque)      # Connections
    syn_received: set[int] = field(default_factory=set)     # conn ids

    def accept_queue_full(self) -> bool:
        return len(self.accept_queue) > self.backlog

    def syn_queue_full(self, cfg: TcpConfig) -> bool:
        return len(self.syn_received) >= min(max(self.backlog, 1), cfg.max_syn_backlog)

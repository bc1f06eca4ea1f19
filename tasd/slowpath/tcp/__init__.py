"""The slowpath's TCP, sans-I/O: listeners, the handshake, teardown state,
TIME_WAIT, timeout decisions for flows the fastpath runs, and RST/SYN handling
for segments that reach the slowpath (docs/tcp.md says who does what).

    stack = TcpStack(IPv4Address("10.0.0.1"), secret=key, rng=random.Random())
    lid = stack.listen(app, 80, backlog=128)
    stack.accept_credit(lid, 16)
    stack.segment(src, dst, seg, ecn, now)      # and the other inputs
    for action in stack.take_actions(): ...
    stack.poll(now); stack.poll_at()

Modules: config (TcpConfig), actions (what comes out), stack (TcpStack), conn
(Connection, State), listener, timewait, options (negotiation), isn (keyed
hashes: ISN, TS offsets, port offsets), ports (ephemeral ports), rto (RFC 6298
arithmetic and backoff), ratelimit (challenge ACKs), timers, addr, errors.
"""

from .actions import (Accepted, Action, Closed, ConnectFailed, Connected, FlowParams,
                      FlowSnapshot, InstallFlow, ListenerClosed, Probe, QueryActivity,
                      RemoveFlow, ReplaySegment, Reset, Retransmit, SendSegment)
from .addr import FourTuple
from .config import TcpConfig
from .conn import Connection, State
from .errors import TcpError
from .stack import TcpStack

__all__ = [
    "TcpStack", "TcpConfig", "TcpError", "State", "Connection", "FourTuple",
    "FlowParams", "FlowSnapshot", "Action",
    "SendSegment", "InstallFlow", "ReplaySegment", "RemoveFlow", "Retransmit", "Probe",
    "QueryActivity", "Accepted", "Connected", "ConnectFailed", "Reset", "Closed",
    "ListenerClosed",
]

"""What the TCP machine asks its driver to do, and what it reports to owners.

Every input of `TcpStack` appends actions; `TcpStack.take_actions()` drains them in
the order they were produced, which is the order the driver must carry them out
(an `InstallFlow` is followed by the `ReplaySegment`s of that flow, then by the
owner's `Accepted` or `Connected`). All are frozen dataclasses.

Flow lifetime, as the slowpath sees it: a flow exists in its worker from
`InstallFlow` until the worker answers a `RemoveFlow` with
`TcpStack.flow_removed()`. Only the slowpath removes flows; a worker that sees a
reset reports it (`reset_received`) and waits for the `RemoveFlow`.

Handle lifetime, as the owner sees it: a conn id is the owner's from `connect()`
or `Accepted` until `Closed`. `Closed` comes exactly once, after the owner called
`close()` or `abort()` *and* the connection no longer needs its flow buffers (it
reached CLOSED or TIME_WAIT and its flow was removed). Errors before that
(`ConnectFailed`, `Reset`) do not end the handle: the owner still closes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Hashable

from tasd.wire import Ecn, SeqNum, TcpSegment


@dataclass(frozen=True, slots=True)
class FlowParams:
    """Everything a worker needs to run an established connection.

    Sequence state is after the handshake (`snd_una == snd_nxt == iss + 1`,
    `rcv_nxt == irs + 1`), or with `syn_received` before its last ACK
    (`snd_una == iss`, the SYN's window): the worker completes it. Windows are
    in bytes. `mss` is the MSS to send with,
    options not deducted (the worker takes 12 bytes off when `timestamps`).
    Our TSval for time `now` (seconds, the clock shared with the slowpath) is
    `(int(now * 1000) + ts_offset) % 2**32`; `ts_recent` is the peer's last TSval
    (0 when `timestamps` is off)."""

    local_ip: IPv4Address
    local_port: int
    remote_ip: IPv4Address
    remote_port: int
    owner: Hashable
    iss: SeqNum
    irs: SeqNum
    snd_una: SeqNum
    snd_nxt: SeqNum
    rcv_nxt: SeqNum
    snd_wnd: int            # the peer's window, already scaled (a SYN's never is)
    snd_wl1: SeqNum         # RFC 9293: seq and ack of the segment that set snd_wnd
    snd_wl2: SeqNum
    snd_wscale: int         # 0 unless both sides sent window scale; then ≤ 14
    rcv_wscale: int
    rcv_wnd: int            # the window we announced, in bytes
    mss: int
    timestamps: bool
    ts_recent: int
    ts_offset: int
    sack: bool
    ecn: bool
    rto: float              # initial RTO for the worker (RFC 6298 §2, §5.7)
    srtt: float | None      # handshake RTT sample, if any (RTTVAR = srtt / 2)
    rttvar: float | None
    passive: bool
    syn_received: bool = False


@dataclass(frozen=True, slots=True)
class FlowSnapshot:
    """A flow's state as its worker reports it with a timeout or a removal.
    `srtt`/`rttvar` are None (or 0) when the worker has no RTT sample; `last_rx`
    is when the worker last received a segment on the flow."""

    snd_una: SeqNum
    snd_nxt: SeqNum
    rcv_nxt: SeqNum
    srtt: float | None
    rttvar: float | None
    last_rx: float


# --- to the driver -------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SendSegment:
    """Send a segment of the slowpath's own (SYN, SYN-ACK, RST, handshake ACK,
    TIME_WAIT ACK, challenge ACK). Always Not-ECT (RFC 3168 §6.1.1)."""
    src: IPv4Address
    dst: IPv4Address
    seg: TcpSegment
    ecn: Ecn = Ecn.NOT_ECT


@dataclass(frozen=True, slots=True)
class InstallFlow:
    conn_id: int
    params: FlowParams


@dataclass(frozen=True, slots=True)
class ReplaySegment:
    """A segment of an installed flow that reached the slowpath; the driver passes
    it to the flow's worker behind the InstallFlow (same ring, so in order). A
    worker drops a replayed segment it cannot match rather than sending it back."""
    conn_id: int
    src: IPv4Address
    dst: IPv4Address
    seg: TcpSegment
    ecn: Ecn


@dataclass(frozen=True, slots=True)
class RemoveFlow:
    """Take the flow off its worker; with `rst`, the worker first sends a RST with
    its exact sequence numbers. The worker answers with `flow_removed()`."""
    conn_id: int
    rst: bool


@dataclass(frozen=True, slots=True)
class Retransmit:
    """After an RTO: retransmit from snd_una with cwnd at one segment, arm the
    retransmission timer with `rto` seconds."""
    conn_id: int
    rto: float


@dataclass(frozen=True, slots=True)
class Probe:
    """Send a probe: `kind` "zero_window" (persist, RFC 9293 §3.8.6.1) or
    "keepalive" (RFC 9293 §3.8.4, seq snd_una − 1; skipped by the worker while
    data is in flight). `next` is when the worker (zero window) or the slowpath
    (keepalive) checks again, in seconds."""
    conn_id: int
    kind: str
    next: float


@dataclass(frozen=True, slots=True)
class QueryActivity:
    """Keepalive: read the flow's `last_rx` from the worker's flow table and call
    `TcpStack.keepalive_check(conn_id, last_rx, now)`."""
    conn_id: int


# --- to owners -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Accepted:
    owner: Hashable
    listener_id: int
    conn_id: int
    remote_ip: IPv4Address
    remote_port: int
    local_port: int


@dataclass(frozen=True, slots=True)
class Connected:
    owner: Hashable
    conn_id: int
    cookie: object
    local_port: int


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    owner: Hashable
    conn_id: int
    cookie: object
    errno: str          # "ECONNREFUSED", "ETIMEDOUT"


@dataclass(frozen=True, slots=True)
class Reset:
    """The connection died under the owner: "ECONNRESET", "EPIPE" (reset in
    CLOSE_WAIT, as Linux), "ETIMEDOUT", "ECONNABORTED" (flow lost)."""
    owner: Hashable
    conn_id: int
    errno: str


@dataclass(frozen=True, slots=True)
class Closed:
    owner: Hashable
    conn_id: int


@dataclass(frozen=True, slots=True)
class ListenerClosed:
    owner: Hashable
    listener_id: int


Action = (SendSegment | InstallFlow | ReplaySegment | RemoveFlow | Retransmit | Probe
          | QueryActivity | Accepted | Connected | ConnectFailed | Reset | Closed
          | ListenerClosed)

"""The harness shared by the tests of tasd.slowpath.tcp (imported by the other
test_tcp_* files; its own tests check the harness).

A `Net` is a TcpStack on a virtual clock, seen from the wire: the peer's segments
go in with `recv`, time passes with `wait`, and every call returns the actions the
stack produced. A `Conn` is one connection from the peer's point of view, with
packetdrill's relative numbering: `seq` counts from the peer's ISS, `ack` from
ours. The builders (`syn_received(net)`, `established(net)`, ...) put a connection
in a state; the fixtures (`conn_syn_received`, ...) are those builders on a fresh
Net with the default configuration.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address

import pytest

from tasd.slowpath.tcp import (Accepted, FlowSnapshot, InstallFlow, SendSegment,
                               State, TcpConfig, TcpStack)
from tasd.slowpath.tcp.addr import FourTuple
from tasd.wire import (Ecn, Mss, SackPermitted, SeqNum, TcpFlags, TcpSegment, Timestamps,
                       WindowScale)

LOCAL = IPv4Address("192.0.2.1")
PEER = IPv4Address("198.51.100.2")
PORT = 8080                  # our listening port
PEER_PORT = 40000
PEER_ISS = SeqNum(3_000_000_000)   # near the wrap, on purpose
PEER_TS0 = 700_000           # the peer's TSval at t = 0 (ms clock)
SECRET = bytes(range(32))
OWNER = "app"

S, A, R, F, P = TcpFlags.SYN, TcpFlags.ACK, TcpFlags.RST, TcpFlags.FIN, TcpFlags.PSH
ECE, CWR = TcpFlags.ECE, TcpFlags.CWR

# +0 < S 0:0(0) win 65535 <mss 1460,sackOK,TS val 700000 ecr 0,nop,wscale 7>
LINUX_OPTIONS = (Mss(1460), SackPermitted(), Timestamps(PEER_TS0, 0), WindowScale(7))
PEER_SYN = TcpSegment(PEER_PORT, PORT, seq=PEER_ISS, flags=S, window=65535,
                      options=LINUX_OPTIONS)


class Net:
    """A TcpStack on a virtual clock."""

    def __init__(self, config: TcpConfig = TcpConfig(), seed: int = 0) -> None:
        self.config = config
        self.stack = TcpStack(LOCAL, secret=SECRET, rng=random.Random(seed), config=config)
        self.now = 0.0
        self.last_tsval = 0            # TSval of the last segment the stack sent

    def take(self) -> list:
        actions = self.stack.take_actions()
        for action in actions:
            if isinstance(action, SendSegment):
                ts = action.seg.option(Timestamps)
                if ts is not None:
                    self.last_tsval = ts.tsval
        return actions

    def recv(self, seg: TcpSegment, src: IPv4Address = PEER, ecn: Ecn = Ecn.NOT_ECT) -> list:
        """The peer's segment reaches the slowpath now."""
        self.stack.segment(src, LOCAL, seg, ecn, self.now)
        return self.take()

    def wait(self, dt: float) -> list:
        """Let `dt` seconds pass, polling at every deadline on the way."""
        end = self.now + dt
        while (at := self.stack.poll_at()) is not None and at <= end:
            self.now = max(self.now, at)
            self.stack.poll(self.now)
        self.now = end
        self.stack.poll(self.now)
        return self.take()

    def wait_collect(self, dt: float) -> list[tuple[float, object]]:
        """Like wait, but each action with the time it came out."""
        end = self.now + dt
        out = []
        while (at := self.stack.poll_at()) is not None and at <= end:
            self.now = max(self.now, at)
            self.stack.poll(self.now)
            out += [(self.now, a) for a in self.take()]
        self.now = end
        return out

    def peer_tsval(self) -> int:
        return (PEER_TS0 + int(self.now * 1000)) & 0xFFFFFFFF


def sent(actions) -> list[TcpSegment]:
    return [a.seg for a in actions if isinstance(a, SendSegment)]


def only_sent(actions) -> TcpSegment:
    segs = sent(actions)
    assert len(segs) == 1, actions
    return segs[0]


def kinds(actions) -> list[str]:
    return [type(a).__name__ for a in actions]


def of_type(actions, cls) -> list:
    return [a for a in actions if isinstance(a, cls)]


@dataclass
class Conn:
    """A connection as the peer sees it."""

    net: Net
    iss: SeqNum                    # ours
    irs: SeqNum = PEER_ISS         # the peer's
    id: int | None = None
    local_port: int = PORT
    peer_port: int = PEER_PORT
    ts: bool = True                # the peer sends timestamps
    lid: int | None = None
    install: InstallFlow | None = None
    history: list = field(default_factory=list)

    @property
    def stack(self) -> TcpStack:
        return self.net.stack

    @property
    def state(self) -> State | None:
        return self.stack.state(self.id)

    @property
    def key(self) -> FourTuple:
        return FourTuple(LOCAL, self.local_port, PEER, self.peer_port)

    def seg(self, flags: TcpFlags, seq: int = 1, ack: int = 1, *, payload: bytes = b"",
            window: int | None = None, options=None) -> TcpSegment:
        """The peer's segment: `seq` relative to its ISS, `ack` to ours."""
        if options is None:
            options = (Timestamps(self.net.peer_tsval(), self.net.last_tsval),) if self.ts else ()
        if window is None:
            window = 65535 if S in flags else 502
        return TcpSegment(self.peer_port, self.local_port, seq=self.irs + seq,
                          ack=self.iss + ack if A in flags else SeqNum(0), flags=flags,
                          window=window, options=options, payload=payload)

    def recv(self, flags: TcpFlags, seq: int = 1, ack: int = 1, **kw) -> list:
        return self.net.recv(self.seg(flags, seq, ack, **kw))

    def rel_seq(self, seg: TcpSegment) -> int:
        return seg.seq - self.iss

    def rel_ack(self, seg: TcpSegment) -> int:
        return seg.ack - self.irs

    def snapshot(self, sent: int = 0, received: int = 0, *, fin_sent=False, fin_received=False,
                 srtt=None, rttvar=None, last_rx=None) -> FlowSnapshot:
        """A worker's snapshot after `sent`/`received` payload bytes (and FINs)."""
        snd = self.iss + 1 + sent + fin_sent
        return FlowSnapshot(snd, snd, self.irs + 1 + received + fin_received, srtt, rttvar,
                            self.net.now if last_rx is None else last_rx)


# --- builders: a connection in each state ------------------------------------------

def listening(net: Net, backlog: int = 128, credit: int = 100, port: int = PORT) -> int:
    lid = net.stack.listen(OWNER, port, backlog)
    if credit:
        net.stack.accept_credit(lid, credit)
    return lid


def syn_received(net: Net, syn: TcpSegment = PEER_SYN, lid: int | None = None) -> Conn:
    # +0 < S 0:0(0) win 65535 <mss 1460,sackOK,TS val 700000 ecr 0,nop,wscale 7>
    # +0 > S. 0:0(0) ack 1 <mss 1460,sackOK,TS val X ecr 700000,nop,wscale 7>
    if lid is None:
        lid = listening(net)
    synack = only_sent(net.recv(syn))
    assert synack.flags & (S | A) == S | A
    conn = Conn(net, iss=synack.seq, irs=syn.seq, local_port=syn.dst_port,
                peer_port=syn.src_port, ts=syn.option(Timestamps) is not None, lid=lid)
    conn.id = net.stack.find(conn.key).id
    return conn


def established(net: Net, syn: TcpSegment = PEER_SYN, rtt: float = 0.05) -> Conn:
    """Passive open, installed and delivered (the listener has credit)."""
    conn = syn_received(net, syn)
    net.wait(rtt)
    # +.05 < . 1:1(0) ack 1 win 502
    actions = conn.recv(A)
    assert kinds(actions) == ["InstallFlow", "Accepted"], actions
    conn.install = actions[0]
    assert of_type(actions, Accepted)[0].conn_id == conn.id
    return conn


def syn_sent(net: Net, *, dst_port: int = PORT, src_port: int = 0, cookie="c") -> Conn:
    cid = net.stack.connect(OWNER, PEER, dst_port, net.now, src_port=src_port, cookie=cookie)
    syn = only_sent(net.take())
    assert syn.flags & S
    # In an active open the peer listens on `dst_port`.
    return Conn(net, iss=syn.seq, id=cid, local_port=syn.src_port, peer_port=dst_port)


def synack_for(conn: Conn, options=LINUX_OPTIONS, flags: TcpFlags = S | A) -> TcpSegment:
    # +0 < S. 0:0(0) ack 1 win 65535 <mss 1460,sackOK,TS val ... ecr X,nop,wscale 7>
    opts = tuple(Timestamps(conn.net.peer_tsval(), conn.net.last_tsval)
                 if isinstance(o, Timestamps) else o for o in options)
    return conn.seg(flags, seq=0, ack=1, options=opts, window=65535)


def established_active(net: Net, rtt: float = 0.05, options=LINUX_OPTIONS) -> Conn:
    conn = syn_sent(net)
    conn.ts = any(isinstance(o, Timestamps) for o in options)
    net.wait(rtt)
    actions = net.recv(synack_for(conn, options))
    assert kinds(actions) == ["SendSegment", "InstallFlow", "Connected"], actions
    conn.install = actions[1]
    return conn


def fin_wait_1(net: Net) -> Conn:
    conn = established(net)
    conn.stack.fin_sent(conn.id, net.now)
    return conn


def fin_wait_2(net: Net) -> Conn:
    conn = fin_wait_1(net)
    conn.stack.fin_acked(conn.id, net.now)
    return conn


def close_wait(net: Net) -> Conn:
    conn = established(net)
    conn.stack.fin_received(conn.id, net.now)
    return conn


def last_ack(net: Net) -> Conn:
    conn = close_wait(net)
    conn.stack.fin_sent(conn.id, net.now)
    return conn


def closing(net: Net) -> Conn:
    conn = fin_wait_1(net)
    conn.stack.fin_received(conn.id, net.now)
    return conn


# The final state of the flow in the TIME_WAIT fixtures: we sent 100 bytes and a
# FIN, the peer 50 bytes and a FIN.
TW_SENT, TW_RECEIVED = 100, 50


def time_wait(net: Net, *, app_closed: bool = True, ts_recent: int | None = None,
              syn: TcpSegment = PEER_SYN) -> Conn:
    """Active close completed, the flow removed: the TIME_WAIT table has it."""
    conn = established(net, syn)
    conn.stack.fin_sent(conn.id, net.now)
    conn.stack.fin_acked(conn.id, net.now)
    if app_closed:
        conn.stack.close(conn.id, net.now)
    conn.stack.fin_received(conn.id, net.now)
    assert conn.state is State.TIME_WAIT
    net.take()
    final = conn.snapshot(TW_SENT, TW_RECEIVED, fin_sent=True, fin_received=True)
    ts = ts_recent if ts_recent is not None else net.peer_tsval()
    conn.stack.flow_removed(conn.id, final, ts if conn.ts else None, net.now)
    net.take()
    assert conn.stack.time_wait(conn.key) is not None
    return conn


@pytest.fixture
def net() -> Net:
    return Net()


@pytest.fixture
def net_listen() -> Net:
    """LISTEN: a listener on PORT with credit for 100 connections."""
    net = Net()
    listening(net)
    return net


@pytest.fixture
def conn_syn_received() -> Conn:
    return syn_received(Net())


@pytest.fixture
def conn_syn_sent() -> Conn:
    return syn_sent(Net())


@pytest.fixture
def conn_established() -> Conn:
    return established(Net())


@pytest.fixture
def conn_established_active() -> Conn:
    return established_active(Net())


@pytest.fixture
def conn_fin_wait_1() -> Conn:
    return fin_wait_1(Net())


@pytest.fixture
def conn_fin_wait_2() -> Conn:
    return fin_wait_2(Net())


@pytest.fixture
def conn_close_wait() -> Conn:
    return close_wait(Net())


@pytest.fixture
def conn_last_ack() -> Conn:
    return last_ack(Net())


@pytest.fixture
def conn_closing() -> Conn:
    return closing(Net())


@pytest.fixture
def conn_time_wait() -> Conn:
    return time_wait(Net())


# --- the harness's own tests ----------------------------------------------------------

def test_harness_relative_numbering(conn_established):
    c = conn_established
    seg = c.seg(A | P, seq=1, ack=1, payload=b"x")
    assert seg.seq == PEER_ISS + 1 and seg.ack == c.iss + 1
    assert c.rel_seq(TcpSegment(1, 2, seq=c.iss + 5)) == 5


def test_harness_wait_polls_every_deadline():
    net = Net()
    conn = syn_sent(net)
    times = [t for t, a in net.wait_collect(8) if isinstance(a, SendSegment)]
    assert times == [1, 3, 7]
    assert conn.state is State.SYN_SENT


def test_harness_fixtures_reach_their_states(conn_syn_received, conn_syn_sent, conn_established,
                                             conn_fin_wait_1, conn_fin_wait_2, conn_close_wait,
                                             conn_last_ack, conn_closing, conn_time_wait):
    assert conn_syn_received.state is State.SYN_RECEIVED
    assert conn_syn_sent.state is State.SYN_SENT
    assert conn_established.state is State.ESTABLISHED
    assert conn_fin_wait_1.state is State.FIN_WAIT_1
    assert conn_fin_wait_2.state is State.FIN_WAIT_2
    assert conn_close_wait.state is State.CLOSE_WAIT
    assert conn_last_ack.state is State.LAST_ACK
    assert conn_closing.state is State.CLOSING
    assert conn_time_wait.state is None          # the owner closed: forgotten
    assert conn_time_wait.stack.time_wait(conn_time_wait.key) is not None


def test_harness_replace_template():
    syn = replace(PEER_SYN, options=())
    assert syn.flags == S and syn.options == () and syn.seq == PEER_ISS

"""Property test: any sequence of segments, time steps, flow events and owner
calls leaves the stack standing, and every action it emits is well-formed and
consistent with the flow lifecycle (docs/tcp.md)."""

import math
from ipaddress import IPv4Address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasd.slowpath.tcp import (Accepted, Closed, ConnectFailed, Connected, FlowSnapshot,
                               InstallFlow, ListenerClosed, Probe, QueryActivity, RemoveFlow,
                               ReplaySegment, Reset, Retransmit, SendSegment, TcpConfig,
                               TcpError)
from tasd.wire import (Ecn, Mss, SackPermitted, SeqNum, TcpFlags, TcpSegment, Timestamps,
                       UnknownOption, WindowScale)
from test_tcp_support import LOCAL, PEER, PEER_ISS, PORT, Net

PEER_PORTS = (40000, 40001, 40002)
SMALL = TcpConfig(challenge_ack_limit=20, ephemeral_ports=(50000, 50003))

options = st.lists(st.one_of(
    st.builds(Mss, st.integers(0, 65535)),
    st.builds(WindowScale, st.integers(0, 255)),
    st.just(SackPermitted()),
    st.builds(Timestamps, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.builds(UnknownOption, st.sampled_from([30, 34, 254]), st.binary(max_size=4)),
), max_size=4).map(tuple)


class Model:
    """What the driver knows from the actions: flows and owner handles."""

    def __init__(self, net: Net) -> None:
        self.net = net
        self.installed: dict[int, object] = {}    # conn id -> FlowParams
        self.removing: set[int] = set()
        self.handles: set[int] = set()            # conn ids owners hold
        self.closed: set[int] = set()
        self.our_seqs: list[SeqNum] = [SeqNum(0)]      # seq numbers we used
        self.peer_seqs: list[SeqNum] = [PEER_ISS]       # seq numbers we acknowledged
        self.syns: list[SendSegment] = []               # our SYNs and SYN-ACKs
        self.local_ports: list[int] = [PORT]

    def check(self, actions, input_was_rst: bool) -> None:
        cfg = self.net.config
        for a in actions:
            if isinstance(a, SendSegment):
                assert a.src == LOCAL and a.ecn == Ecn.NOT_ECT
                a.seg.emit(a.src, a.dst)           # encodable
                assert not (input_was_rst and TcpFlags.RST in a.seg.flags)
                self.our_seqs.append(a.seg.seq)
                self.our_seqs.append(a.seg.seq + 1)
                if TcpFlags.ACK in a.seg.flags:
                    self.peer_seqs.append(a.seg.ack)
                if TcpFlags.SYN in a.seg.flags:
                    self.syns.append(a)
            elif isinstance(a, InstallFlow):
                p = a.params
                assert a.conn_id not in self.installed
                assert cfg.rto_min <= p.rto <= max(cfg.rto_max, 3.0)
                assert 48 <= p.mss <= cfg.mss
                assert 0 <= p.snd_wscale <= 14 and 0 <= p.rcv_wscale <= 14
                assert p.rcv_wnd <= 65535 << p.rcv_wscale and p.rcv_wnd > 0
                assert p.snd_una == p.snd_nxt == p.iss + 1 and p.rcv_nxt == p.irs + 1
                assert 0 <= p.snd_wnd <= 65535 << 14
                assert p.timestamps or p.ts_recent == 0
                self.installed[a.conn_id] = p
                self.local_ports.append(p.local_port)
            elif isinstance(a, ReplaySegment):
                assert a.conn_id in self.installed and a.conn_id not in self.removing
            elif isinstance(a, RemoveFlow):
                assert a.conn_id in self.installed and a.conn_id not in self.removing
                self.removing.add(a.conn_id)
            elif isinstance(a, Retransmit):
                assert a.conn_id in self.installed and 0 < a.rto <= cfg.rto_max
            elif isinstance(a, Probe):
                assert a.conn_id in self.installed and a.kind in ("zero_window", "keepalive")
                assert 0 < a.next <= max(cfg.rto_max, cfg.keepalive_intvl)
            elif isinstance(a, QueryActivity):
                assert a.conn_id in self.installed
            elif isinstance(a, Accepted):
                assert a.conn_id in self.installed and a.conn_id not in self.handles
                self.handles.add(a.conn_id)
            elif isinstance(a, Connected):
                assert a.conn_id in self.installed and a.conn_id in self.handles
            elif isinstance(a, (ConnectFailed, Reset)):
                assert a.conn_id in self.handles and a.conn_id not in self.closed
            elif isinstance(a, Closed):
                assert a.conn_id in self.handles and a.conn_id not in self.closed
                self.closed.add(a.conn_id)
            else:
                assert isinstance(a, ListenerClosed)
        at = self.net.stack.poll_at()
        assert at is None or math.isfinite(at)


def _segment(data, model: Model) -> TcpSegment:
    flags = TcpFlags(data.draw(st.integers(0, 255)))
    seq = data.draw(st.one_of(st.integers(0, 2**32 - 1).map(SeqNum),
                              st.tuples(st.sampled_from(model.peer_seqs[-8:]),
                                        st.integers(-3, 70000))
                              .map(lambda t: t[0] + t[1])))
    ack = data.draw(st.one_of(st.integers(0, 2**32 - 1).map(SeqNum),
                              st.tuples(st.sampled_from(model.our_seqs[-8:]), st.integers(-2, 2))
                              .map(lambda t: t[0] + t[1])))
    return TcpSegment(data.draw(st.sampled_from(PEER_PORTS + (PORT,))),
                      data.draw(st.sampled_from(model.local_ports[-6:])),
                      seq=seq, ack=ack, flags=flags,
                      window=data.draw(st.integers(0, 65535)),
                      options=data.draw(options),
                      payload=data.draw(st.binary(max_size=8)))


def _answer(data, model: Model) -> TcpSegment:
    """The segment a well-behaved peer sends next: a SYN to the listener, or the
    answer to one of our SYNs (SYN-ACK) or SYN-ACKs (ACK, maybe with data or FIN)."""
    if not model.syns or data.draw(st.booleans()):
        return TcpSegment(data.draw(st.sampled_from(PEER_PORTS)), PORT,
                          seq=SeqNum(data.draw(st.integers(0, 2**32 - 1))),
                          flags=TcpFlags.SYN | data.draw(st.sampled_from(
                              [TcpFlags(0), TcpFlags.ECE | TcpFlags.CWR])),
                          window=65535, options=data.draw(options))
    ours = data.draw(st.sampled_from(model.syns[-4:])).seg
    if TcpFlags.ACK in ours.flags:
        flags = TcpFlags.ACK | data.draw(st.sampled_from([TcpFlags(0), TcpFlags.FIN,
                                                          TcpFlags.PSH]))
        seq = ours.ack
    else:
        flags = TcpFlags.SYN | TcpFlags.ACK | data.draw(st.sampled_from(
            [TcpFlags(0), TcpFlags.ECE]))
        seq = SeqNum(data.draw(st.integers(0, 2**32 - 1)))
    return TcpSegment(ours.dst_port, ours.src_port, seq=seq, ack=ours.seq + 1, flags=flags,
                      window=data.draw(st.integers(0, 65535)), options=data.draw(options),
                      payload=b"" if TcpFlags.SYN in flags else data.draw(st.binary(max_size=4)))


def _step(data, model: Model) -> None:
    net, stack = model.net, model.net.stack
    op = data.draw(st.sampled_from(["seg", "answer", "answer", "wait", "event", "owner"]))
    rst = False
    if op in ("seg", "answer"):
        seg = _segment(data, model) if op == "seg" else _answer(data, model)
        rst = TcpFlags.RST in seg.flags
        stack.segment(PEER, LOCAL, seg, data.draw(st.sampled_from(list(Ecn))), net.now)
    elif op == "wait":
        net.now += data.draw(st.sampled_from([0.0, 0.001, 0.3, 1.0, 7.0, 61.0, 8000.0]))
        stack.poll(net.now)
    elif op == "event":
        ids = sorted(model.installed) + [999]
        cid = data.draw(st.sampled_from(ids))
        p = model.installed.get(cid)
        snap = FlowSnapshot(p.snd_nxt if p else SeqNum(0), p.snd_nxt if p else SeqNum(0),
                            p.rcv_nxt if p else SeqNum(0),
                            data.draw(st.sampled_from([None, 0.0, 0.01, 2.0])),
                            data.draw(st.sampled_from([None, 0.005, 1.0])),
                            net.now - data.draw(st.sampled_from([0.0, 1.0, 100.0])))
        event = data.draw(st.sampled_from(
            ["fin_sent", "fin_received", "fin_acked", "reset_received", "ack_progress",
             "window_opened", "rto", "persist", "flow_removed", "keepalive_check"]))
        if event in ("rto", "persist"):
            stack.timeout(cid, event, snap, net.now)
        elif event == "flow_removed":
            stack.flow_removed(cid, snap, data.draw(st.sampled_from([None, 0, 12345])), net.now)
        elif event == "keepalive_check":
            stack.keepalive_check(cid, snap.last_rx, net.now)
        else:
            getattr(stack, event)(cid, net.now)
    else:
        call = data.draw(st.sampled_from(["close", "abort", "keepalive", "user_timeout",
                                          "connect", "credit", "unlisten", "listen"]))
        cid = data.draw(st.sampled_from(sorted(model.handles) + [999]))
        try:
            if call == "close":
                stack.close(cid, net.now)
            elif call == "abort":
                stack.abort(cid, net.now)
            elif call == "keepalive":
                stack.set_keepalive(cid, data.draw(st.booleans()), idle=1.0, intvl=0.5, cnt=2,
                                    now=net.now)
            elif call == "user_timeout":
                stack.set_user_timeout(cid, data.draw(st.sampled_from([None, 0, 0.5, 30])))
            elif call == "connect":
                new = stack.connect("app", PEER, data.draw(st.sampled_from(PEER_PORTS + (PORT,))),
                                    net.now)
                model.handles.add(new)
            elif call == "credit":
                stack.accept_credit(data.draw(st.sampled_from([1, 2, 3])),
                                    data.draw(st.integers(0, 3)))
            elif call == "unlisten":
                stack.unlisten(data.draw(st.sampled_from([1, 2, 3])), net.now)
            else:
                stack.listen("app", data.draw(st.sampled_from([PORT, 8081])),
                             data.draw(st.integers(0, 3)), reuseport=data.draw(st.booleans()))
        except TcpError:
            pass
    actions = net.take()
    model.check(actions, rst)
    # The driver answers removals and activity queries as a worker would.
    for a in actions:
        if isinstance(a, RemoveFlow) and data.draw(st.booleans()):
            p = model.installed[a.conn_id]
            stack.flow_removed(a.conn_id, FlowSnapshot(p.snd_nxt, p.snd_nxt + 1, p.rcv_nxt + 1,
                                                       None, None, net.now), None, net.now)
            model.check(net.take(), False)
            model.installed.pop(a.conn_id)
            model.removing.discard(a.conn_id)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_dialogues_never_crash_nor_emit_bad_actions(data):
    net = Net(SMALL, seed=data.draw(st.integers(0, 3)))
    net.stack.listen("app", PORT, data.draw(st.integers(0, 4)))
    net.stack.accept_credit(1, data.draw(st.integers(0, 3)))
    model = Model(net)
    for _ in range(data.draw(st.integers(1, 40))):
        _step(data, model)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 2**32 - 1),
                          st.integers(0, 2**32 - 1), options), max_size=12))
def test_random_segments_to_listener_and_closed_ports(segments):
    net = Net(SMALL)
    net.stack.listen("app", PORT, 2)
    model = Model(net)
    for i, (flags, seq, ack, opts) in enumerate(segments):
        seg = TcpSegment(PEER_PORTS[i % 3], PORT if i % 2 else 9, seq=SeqNum(seq), ack=SeqNum(ack),
                         flags=TcpFlags(flags), window=1000, options=opts)
        net.stack.segment(IPv4Address(PEER), LOCAL, seg, Ecn.NOT_ECT, net.now)
        model.check(net.take(), TcpFlags.RST in seg.flags)
        net.now += 0.4
        net.stack.poll(net.now)
        model.check(net.take(), False)

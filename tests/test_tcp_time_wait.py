"""TIME_WAIT (RFC 9293 §3.6, §3.10.7.4; RFC 6191; Linux's tcp_timewait_state_process
as the model where the RFCs leave a choice).

The fixture's connection sent 100 bytes and a FIN and received 50 bytes and a FIN:
in the peer's relative numbering our snd_nxt is 102 and our rcv_nxt is 52."""

from dataclasses import replace

import pytest

from tasd.slowpath.tcp import InstallFlow, State, TcpError
from tasd.wire import Mss, SeqNum, Timestamps
from test_tcp_support import (  # noqa: F401  (fixtures)
    LINUX_OPTIONS, PEER, PEER_SYN, A, F, Net, P, R, S, conn_time_wait, established_active,
    kinds, of_type, only_sent, time_wait)

SND_NXT, RCV_NXT = 102, 52


def _active_time_wait(net: Net, options=LINUX_OPTIONS):
    """TIME_WAIT of a connection we opened (no listener on its local port)."""
    c = established_active(net, options=options)
    for event in ("fin_sent", "fin_acked", "fin_received"):
        getattr(c.stack, event)(c.id, net.now)
    c.stack.close(c.id, net.now)
    c.stack.flow_removed(c.id, c.snapshot(100, 50, fin_sent=True, fin_received=True),
                         net.peer_tsval() if c.ts else None, net.now)
    net.take()
    return c


def test_time_wait_fin_retransmit_acked_timer_restarted(conn_time_wait):
    c = conn_time_wait
    tw = c.stack.time_wait(c.key)
    c.net.wait(30)
    # +30 < F. 51:51(0) ack 102   (our last ACK was lost)
    ack = only_sent(c.recv(F | A, seq=RCV_NXT - 1, ack=SND_NXT))
    # +0 > . 102:102(0) ack 52 win 2048 <nop,nop,TS val X ecr Y>
    assert ack.flags == A and c.rel_seq(ack) == SND_NXT and c.rel_ack(ack) == RCV_NXT
    assert ack.window == 262144 >> 7
    assert ack.option(Timestamps).tsecr == tw.ts_recent
    c.net.wait(59.9)
    assert c.stack.time_wait(c.key) is not None          # 2·MSL from the FIN, not the start
    c.net.wait(0.1)
    assert c.stack.time_wait(c.key) is None
    assert c.stack.stats["time_wait_acks"] == 1


def test_time_wait_fin_retransmits_never_rate_limited(conn_time_wait):
    c = conn_time_wait
    for _ in range(3):
        assert only_sent(c.recv(F | A, seq=RCV_NXT - 1, ack=SND_NXT)).flags == A


def test_time_wait_expires_after_2msl(conn_time_wait):
    c = conn_time_wait
    assert c.net.wait(59.9) == [] and c.stack.time_wait(c.key) is not None
    assert c.net.wait(0.1) == [] and c.stack.time_wait(c.key) is None
    assert c.stack.poll_at() is None


def test_time_wait_rst_exact_killed(conn_time_wait):
    # < R 52:52(0): Linux ends TIME_WAIT (no RFC 1337 protection by default).
    c = conn_time_wait
    assert c.recv(R, seq=RCV_NXT, options=()) == []
    assert c.stack.time_wait(c.key) is None
    assert c.stack.stats["time_wait_killed"] == 1


@pytest.mark.parametrize("seq", [RCV_NXT - 1, RCV_NXT + 1, RCV_NXT + 100_000])
def test_time_wait_rst_not_exact_ignored(conn_time_wait, seq):
    c = conn_time_wait
    assert c.recv(R | A, seq=seq, ack=SND_NXT, options=()) == []
    assert c.stack.time_wait(c.key) is not None


def test_time_wait_bare_ack_silent_timer_restarted(conn_time_wait):
    c = conn_time_wait
    c.net.wait(40)
    # +40 < . 52:52(0) ack 102
    assert c.recv(A, seq=RCV_NXT, ack=SND_NXT) == []
    c.net.wait(59)
    assert c.stack.time_wait(c.key) is not None
    c.net.wait(1)
    assert c.stack.time_wait(c.key) is None


def test_time_wait_ack_old_timestamp_paws_answered(conn_time_wait):
    # An in-sequence ACK whose TSval is older than ts_recent is an old duplicate
    # (RFC 7323 §5.3): answered, not taken as a keep-alive of TIME_WAIT.
    c = conn_time_wait
    tw = c.stack.time_wait(c.key)
    old = c.seg(A, seq=RCV_NXT, ack=SND_NXT, options=(Timestamps(tw.ts_recent - 5, 0),))
    assert only_sent(c.net.recv(old)).flags == A
    assert tw.ts_recent == c.stack.time_wait(c.key).ts_recent


def test_time_wait_old_ack_answered_rate_limited(conn_time_wait):
    c = conn_time_wait
    assert only_sent(c.recv(A, seq=RCV_NXT - 10, ack=SND_NXT)).flags == A
    assert c.recv(A, seq=RCV_NXT - 10, ack=SND_NXT) == []       # within 0.5 s
    c.net.wait(0.5)
    assert only_sent(c.recv(A, seq=RCV_NXT - 10, ack=SND_NXT)).flags == A


def test_time_wait_data_acked(conn_time_wait):
    c = conn_time_wait
    ack = only_sent(c.recv(A | P, seq=RCV_NXT, ack=SND_NXT, payload=b"late"))
    assert c.rel_ack(ack) == RCV_NXT


# --- a new SYN for the 4-tuple (RFC 6191) -----------------------------------------

def test_time_wait_syn_newer_timestamp_reused(conn_time_wait):
    c = conn_time_wait
    tw = c.stack.time_wait(c.key)
    c.net.wait(1)
    # +1 < S 0:0(0) <mss 1460,sackOK,TS val (ts_recent+1000) ecr 0,nop,wscale 7>
    # (its seq is below the old rcv_nxt: the timestamp decides)
    syn = c.seg(S, seq=-5000, options=(Mss(1460), Timestamps(tw.ts_recent + 1000, 0)))
    synack = only_sent(c.net.recv(syn))
    assert synack.flags == S | A and synack.ack == syn.seq + 1
    assert synack.seq == tw.snd_nxt + 65537        # above all the old connection sent
    assert c.stack.time_wait(c.key) is None
    assert c.stack.find(c.key).state is State.SYN_RECEIVED
    assert c.stack.stats["time_wait_reused"] == 1


def test_time_wait_syn_older_timestamp_acked(conn_time_wait):
    c = conn_time_wait
    tw = c.stack.time_wait(c.key)
    syn = c.seg(S, seq=RCV_NXT + 10_000, options=(Mss(1460), Timestamps(tw.ts_recent - 1, 0)))
    ack = only_sent(c.net.recv(syn))
    assert ack.flags == A and c.rel_seq(ack) == SND_NXT and c.rel_ack(ack) == RCV_NXT
    assert c.stack.time_wait(c.key) is tw


def test_time_wait_syn_equal_timestamp_higher_seq_reused(conn_time_wait):
    c = conn_time_wait
    tw = c.stack.time_wait(c.key)
    syn = c.seg(S, seq=RCV_NXT + 1, options=(Timestamps(tw.ts_recent, 0),))
    assert only_sent(c.net.recv(syn)).flags == S | A


def test_time_wait_syn_equal_timestamp_lower_seq_acked(conn_time_wait):
    c = conn_time_wait
    tw = c.stack.time_wait(c.key)
    syn = c.seg(S, seq=RCV_NXT - 1, options=(Timestamps(tw.ts_recent, 0),))
    assert only_sent(c.net.recv(syn)).flags == A


@pytest.mark.parametrize("seq, reused", [(RCV_NXT + 1, True), (RCV_NXT + 2**30, True),
                                         (RCV_NXT, False), (RCV_NXT - 1000, False)])
def test_time_wait_syn_no_timestamps_isn_decides(seq, reused):
    c = time_wait(Net(), syn=replace(PEER_SYN, options=(Mss(1460),)))
    assert c.stack.time_wait(c.key).ts_recent is None
    out = only_sent(c.net.recv(c.seg(S, seq=seq, options=(Mss(1460),))))
    assert out.flags == (S | A if reused else A)


def test_time_wait_syn_with_ack_not_reused(conn_time_wait):
    c = conn_time_wait
    tw = c.stack.time_wait(c.key)
    seg = c.seg(S | A, seq=RCV_NXT + 5, ack=SND_NXT,
                options=(Timestamps(tw.ts_recent + 10, 0),))
    assert only_sent(c.net.recv(seg)).flags == A
    assert c.stack.time_wait(c.key) is tw


def test_time_wait_syn_no_listener_acked():
    net = Net()
    c = _active_time_wait(net)
    tw = c.stack.time_wait(c.key)
    syn = c.seg(S, seq=RCV_NXT + 5, options=(Timestamps(tw.ts_recent + 10, 0),))
    assert only_sent(c.net.recv(syn)).flags == A
    assert c.stack.time_wait(c.key) is tw


def test_time_wait_syn_reused_then_handshake_completes(conn_time_wait):
    c = conn_time_wait
    tw = c.stack.time_wait(c.key)
    syn = c.seg(S, seq=RCV_NXT + 100, options=(Timestamps(tw.ts_recent + 10, 0),))
    synack = only_sent(c.net.recv(syn))
    c2 = replace(c, iss=synack.seq, irs=syn.seq)
    actions = c2.recv(A, options=(Timestamps(tw.ts_recent + 20, synack.option(Timestamps).tsval),))
    assert kinds(actions) == ["InstallFlow", "Accepted"]
    assert of_type(actions, InstallFlow)[0].params.iss == tw.snd_nxt + 65537


# --- TIME_WAIT and new connections ---------------------------------------------

def test_time_wait_blocks_connect_same_tuple():
    net = Net()
    c = _active_time_wait(net)
    with pytest.raises(TcpError) as e:
        net.stack.connect("app", PEER, c.peer_port, net.now, src_port=c.local_port)
    assert e.value.errno == "EADDRINUSE"
    # An ephemeral connect to the same destination avoids the port.
    other = net.stack.connect("app", PEER, c.peer_port, net.now)
    assert net.stack.connection(other).key.local_port != c.local_port
    # Once TIME_WAIT is over the 4-tuple is free.
    net.wait(60)
    net.stack.connect("app", PEER, c.peer_port, net.now, src_port=c.local_port)


def test_time_wait_counted(conn_time_wait):
    c = conn_time_wait
    assert c.stack.stats["time_wait"] == 1
    assert c.stack.gauges()["time_wait"] == 1
    c.net.wait(60)
    assert c.stack.gauges()["time_wait"] == 0
    assert c.stack.stats["time_wait"] == 1


def test_time_wait_without_timestamps_ack_has_none():
    net = Net()
    c = _active_time_wait(net, options=(Mss(1460),))
    ack = only_sent(c.recv(F | A, seq=RCV_NXT - 1, ack=SND_NXT, options=()))
    assert ack.options == () and ack.window == 65535


def test_time_wait_listener_port_syn_unrelated_tuple_normal(conn_time_wait):
    c = conn_time_wait
    synack = only_sent(c.net.recv(replace(PEER_SYN, src_port=c.peer_port + 1,
                                          seq=SeqNum(5))))
    assert synack.flags == S | A and synack.dst_port == c.peer_port + 1
    assert c.stack.time_wait(c.key) is not None

"""Validation of segments that reach the slowpath: RFC 9293 §3.10.7 (resets for
segments that match nothing, acceptability tests) and RFC 5961 (exact-sequence
RSTs, challenge ACKs and their host-wide rate limit)."""

from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from tasd.slowpath.tcp import ConnectFailed, ReplaySegment, State, TcpConfig
from tasd.wire import Mss, SeqNum, TcpSegment, Timestamps
from test_tcp_support import (  # noqa: F401  (fixtures)
    LOCAL, OWNER, PEER, PEER_ISS, PEER_PORT, PEER_SYN, PORT, A, F, Net, P, R, S,
    conn_established, conn_syn_received, conn_syn_sent, listening, net, net_listen,
    only_sent, syn_received)

CLOSED_PORT = 9999


def _closed(flags, seq=1000, ack=0, payload=b""):
    return TcpSegment(PEER_PORT, CLOSED_PORT, seq=SeqNum(seq), ack=SeqNum(ack), flags=flags,
                      window=100, payload=payload)


# --- CLOSED: RFC 9293 §3.10.7.1 ----------------------------------------------------

def test_closed_syn_rst_ack(net):
    # < S 1000:1000(0)  →  > R. 0:0(0) ack 1001
    rst = only_sent(net.recv(_closed(S)))
    assert rst.flags == R | A and rst.seq == SeqNum(0) and rst.ack == SeqNum(1001)
    assert (rst.src_port, rst.dst_port) == (CLOSED_PORT, PEER_PORT)
    assert net.stack.stats["resets_sent"] == 1


def test_closed_ack_rst_seq_from_ack(net):
    # < P. 1000:1010(10) ack 777  →  > R 777:777(0)
    rst = only_sent(net.recv(_closed(A | P, ack=777, payload=b"0123456789")))
    assert rst.flags == R and rst.seq == SeqNum(777) and rst.ack == SeqNum(0)


def test_closed_data_fin_without_ack_rst_acks_all(net):
    rst = only_sent(net.recv(_closed(F, payload=b"abc")))
    assert rst.flags == R | A and rst.ack == SeqNum(1000 + 3 + 1)


@pytest.mark.parametrize("flags", [R, R | A, R | S, R | F])
def test_closed_rst_never_answered(net, flags):
    assert net.recv(_closed(flags, ack=5)) == []


@pytest.mark.parametrize("src", ["224.0.0.1", "255.255.255.255", "0.0.0.0", "240.1.2.3"])
def test_closed_syn_from_non_unicast_dropped(net, src):
    listening(net)
    assert net.recv(PEER_SYN, src=IPv4Address(src)) == []
    assert net.stack.stats["segments_dropped"] == 1


def test_closed_segment_for_other_address_dropped(net):
    listening(net)
    net.stack.segment(PEER, IPv4Address("192.0.2.99"), PEER_SYN, 0, net.now)
    assert net.take() == []


def test_closed_source_port_zero_dropped(net):
    listening(net)
    assert net.recv(replace(PEER_SYN, src_port=0)) == []


# --- LISTEN: RFC 9293 §3.10.7.2 ---------------------------------------------------

def test_listen_ack_rst(net_listen):
    net = net_listen
    # < . 1:1(0) ack 4242  →  > R 4242:4242(0)
    rst = only_sent(net.recv(replace(PEER_SYN, flags=A, ack=SeqNum(4242))))
    assert rst.flags == R and rst.seq == SeqNum(4242)


def test_listen_synack_rst(net_listen):
    net = net_listen
    rst = only_sent(net.recv(replace(PEER_SYN, flags=S | A, ack=SeqNum(4242))))
    assert rst.flags == R and rst.seq == SeqNum(4242)


@pytest.mark.parametrize("flags", [R, R | S, S | F, F, P])
def test_listen_other_segments_dropped(net_listen, flags):
    net = net_listen
    assert net.recv(replace(PEER_SYN, flags=flags)) == []
    assert net.stack.gauges()["syn_received"] == 0


def test_listen_syn_data_not_acknowledged(net_listen):
    net = net_listen
    synack = only_sent(net.recv(replace(PEER_SYN, payload=b"hello")))
    assert synack.ack == PEER_ISS + 1          # no Fast Open: the peer sends it again


# --- SYN_SENT: RFC 9293 §3.10.7.3 ---------------------------------------------------

@pytest.mark.parametrize("ack", [0, 2, -100])
def test_syn_sent_ack_bad_ack_rst(conn_syn_sent, ack):
    c = conn_syn_sent
    # < S. 0:0(0) ack <not ISS+1>  →  > R <SEG.ACK>
    rst = only_sent(c.recv(S | A, seq=0, ack=ack))
    assert rst.flags == R and rst.seq == c.iss + ack
    assert c.state is State.SYN_SENT


def test_syn_sent_rst_bad_ack_dropped(conn_syn_sent):
    c = conn_syn_sent
    assert c.recv(R | A, seq=0, ack=5, options=()) == []
    assert c.state is State.SYN_SENT


def test_syn_sent_rst_acceptable_refused(conn_syn_sent):
    c = conn_syn_sent
    # < R. 0:0(0) ack 1
    actions = c.recv(R | A, seq=0, ack=1, options=())
    assert actions == [ConnectFailed(OWNER, c.id, "c", "ECONNREFUSED")]
    assert c.state is State.CLOSED
    assert c.stack.stats["connects_refused"] == 1
    assert c.stack.find(c.key) is None


def test_syn_sent_rst_without_ack_dropped(conn_syn_sent):
    c = conn_syn_sent
    assert c.recv(R, seq=0, options=()) == []
    assert c.state is State.SYN_SENT


def test_syn_sent_ack_without_syn_dropped(conn_syn_sent):
    c = conn_syn_sent
    assert c.recv(A, seq=0, ack=1) == []
    assert c.state is State.SYN_SENT


# --- SYN_RECEIVED: RFC 9293 §3.10.7.4 with RFC 5961 -------------------------------------

def test_syn_received_rst_exact_dropped(conn_syn_received):
    c = conn_syn_received
    # < R 1:1(0)
    assert c.recv(R, seq=1, options=()) == []
    assert c.stack.find(c.key) is None                    # back to LISTEN
    assert c.stack.gauges()["syn_received"] == 0
    assert c.stack.stats["resets_received"] == 1
    assert only_sent(c.net.recv(PEER_SYN)).flags == S | A  # the listener carries on


@pytest.mark.parametrize("seq", [2, 1000, 65535])
def test_syn_received_rst_in_window_challenge_ack(conn_syn_received, seq):
    c = conn_syn_received
    # < R 1000:1000(0)  →  > . 1:1(0) ack 1   (challenge ACK)
    ack = only_sent(c.recv(R, seq=seq, options=()))
    assert ack.flags == A and c.rel_seq(ack) == 1 and c.rel_ack(ack) == 1
    assert c.state is State.SYN_RECEIVED
    assert c.stack.stats["challenge_acks"] == 1


@pytest.mark.parametrize("seq", [0, -5, 65536, 2**20])
def test_syn_received_rst_out_of_window_dropped(conn_syn_received, seq):
    c = conn_syn_received
    assert c.recv(R, seq=seq, options=()) == []
    assert c.state is State.SYN_RECEIVED


def test_syn_received_syn_new_seq_challenge_ack(conn_syn_received):
    c = conn_syn_received
    ack = only_sent(c.recv(S, seq=10, options=(Mss(1460),)))
    assert ack.flags == A and c.rel_ack(ack) == 1
    assert c.stack.stats["challenge_acks"] == 1
    assert c.state is State.SYN_RECEIVED


@pytest.mark.parametrize("ack", [0, 2, 1000])
def test_syn_received_ack_bad_ack_rst(conn_syn_received, ack):
    c = conn_syn_received
    rst = only_sent(c.recv(A, ack=ack))
    assert rst.flags == R and rst.seq == c.iss + ack
    assert c.state is State.SYN_RECEIVED


def test_syn_received_data_out_of_window_acked(conn_syn_received):
    c = conn_syn_received
    ack = only_sent(c.recv(A | P, seq=100_000, payload=b"x"))
    assert ack.flags == A and c.rel_ack(ack) == 1
    assert c.state is State.SYN_RECEIVED


def test_syn_received_old_duplicate_ack_rate_limited(conn_syn_received):
    c = conn_syn_received
    assert only_sent(c.recv(A, seq=0)).flags == A
    assert c.recv(A, seq=0) == []
    c.net.wait(0.5)
    assert only_sent(c.recv(A, seq=0)).flags == A


def test_syn_received_paws_old_timestamp_not_established(conn_syn_received):
    c = conn_syn_received
    old = c.seg(A, options=(Timestamps(PEER_SYN.option(Timestamps).tsval - 1, c.net.last_tsval),))
    ack = only_sent(c.net.recv(old))
    assert ack.flags == A
    assert c.state is State.SYN_RECEIVED


def test_syn_received_no_ack_flag_dropped(conn_syn_received):
    c = conn_syn_received
    assert c.recv(P, seq=1, payload=b"x") == []
    assert c.state is State.SYN_RECEIVED


# --- challenge ACK rate limit (RFC 5961 §7) ------------------------------------------

def test_syn_received_challenge_acks_rate_limited():
    limit = 10
    net = Net(TcpConfig(challenge_ack_limit=limit))
    c = syn_received(net)
    sent_count = sum(len(c.recv(R, seq=2 + i, options=())) for i in range(100))
    # Linux's randomised budget: between limit/2 and 3·limit/2 per second.
    assert limit // 2 <= sent_count < limit + limit // 2
    assert net.stack.stats["challenge_acks"] == sent_count
    assert net.stack.stats["challenge_acks_suppressed"] == 100 - sent_count
    assert c.recv(R, seq=500, options=()) == []
    net.wait(1.0)
    assert only_sent(c.recv(R, seq=500, options=())).flags == A


def test_syn_received_challenge_ack_budget_is_host_wide():
    net = Net(TcpConfig(challenge_ack_limit=4))
    a = syn_received(net)
    b = syn_received(net, replace(PEER_SYN, src_port=PEER_PORT + 1), lid=a.lid)
    total = 0
    for i in range(20):
        total += len(a.recv(R, seq=2 + i, options=())) + len(b.recv(R, seq=2 + i, options=()))
    assert 2 <= total < 6


def test_syn_received_challenge_ack_disabled():
    net = Net(TcpConfig(challenge_ack_limit=0))
    c = syn_received(net)
    assert c.recv(R, seq=5, options=()) == []


# --- installed flows: the worker validates ----------------------------------------

@pytest.mark.parametrize("flags", [R, S, A | F])
def test_established_segment_replayed_to_worker(conn_established, flags):
    c = conn_established
    seg = c.seg(flags, seq=7)
    assert c.net.recv(seg) == [ReplaySegment(c.id, PEER, LOCAL, seg, 0)]
    assert c.state is State.ESTABLISHED


def test_established_other_port_unaffected(conn_established):
    c = conn_established
    rst = only_sent(c.net.recv(replace(c.seg(A), dst_port=PORT + 1)))
    assert rst.flags == R

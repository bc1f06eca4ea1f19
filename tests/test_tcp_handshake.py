"""Opening connections: passive and active open, simultaneous open, option
negotiation (RFC 7323, 2018, 3168, 9293 §3.7.1), the backlog and accept credit,
the initial RTO from the handshake (RFC 6298)."""

from dataclasses import replace

import pytest

from tasd.slowpath.tcp import (Accepted, ConnectFailed, Connected, InstallFlow, ListenerClosed,
                               RemoveFlow, ReplaySegment, SendSegment, State, TcpConfig,
                               TcpError)
from tasd.wire import Mss, SackPermitted, Timestamps, WindowScale
from test_tcp_support import (  # noqa: F401  (fixtures)
    CWR, ECE, LINUX_OPTIONS, LOCAL, OWNER, PEER, PEER_ISS, PEER_PORT, PEER_SYN, PEER_TS0,
    PORT, A, F, Net, P, R, S, conn_established, conn_syn_received, conn_syn_sent,
    established_active, kinds, listening, net, net_listen, of_type, only_sent,
    sent, syn_received, syn_sent, synack_for)


# --- LISTEN → SYN_RECEIVED ------------------------------------------------------

def test_listen_syn_synack_linux_options(net_listen):
    net = net_listen
    # +0 < S 0:0(0) win 65535 <mss 1460,sackOK,TS val 700000 ecr 0,nop,wscale 7>
    synack = only_sent(net.recv(PEER_SYN))
    # +0 > S. 0:0(0) ack 1 win 65535 <mss 1460,sackOK,TS val X ecr 700000,nop,wscale 7>
    assert synack.flags == S | A
    assert synack.ack == PEER_ISS + 1
    assert synack.window == 65535
    ts = synack.option(Timestamps)
    assert synack.options == (Mss(1460), SackPermitted(), Timestamps(ts.tsval, PEER_TS0),
                              WindowScale(7))
    wire = synack.emit(LOCAL, PEER)
    assert wire[20:28] == bytes.fromhex("020405b4 0402 080a")
    assert wire[36:40] == bytes.fromhex("01 030307")
    assert net.stack.stats["syn_rcvd"] == 1


def test_listen_syn_each_gets_own_connection(net_listen):
    net = net_listen
    a = only_sent(net.recv(PEER_SYN))
    b = only_sent(net.recv(replace(PEER_SYN, src_port=PEER_PORT + 1)))
    assert a.dst_port == PEER_PORT and b.dst_port == PEER_PORT + 1
    assert a.seq != b.seq
    assert net.stack.gauges()["syn_received"] == 2


def test_syn_received_ack_established_installed_accepted():
    net = Net()
    c = syn_received(net)
    net.wait(0.5)
    # +.5 < . 1:1(0) ack 1 win 502 <nop,nop,TS val 700500 ecr X>
    actions = c.recv(A)
    assert kinds(actions) == ["InstallFlow", "Accepted"]
    install, accepted = actions
    p = install.params
    assert install.conn_id == c.id == accepted.conn_id
    assert (p.local_ip, p.local_port, p.remote_ip, p.remote_port) == (LOCAL, PORT, PEER, PEER_PORT)
    assert (p.iss, p.irs) == (c.iss, PEER_ISS)
    assert p.snd_una == p.snd_nxt == c.iss + 1
    assert p.rcv_nxt == PEER_ISS + 1
    assert p.snd_wnd == 502 << 7            # the ACK's window is scaled
    assert (p.snd_wscale, p.rcv_wscale) == (7, 7)
    assert p.rcv_wnd == 262144
    assert p.mss == 1460
    assert p.timestamps and p.ts_recent == PEER_TS0 + 500
    assert p.sack and not p.ecn and p.passive
    assert p.srtt == pytest.approx(0.5) and p.rttvar == pytest.approx(0.25)
    assert p.rto == pytest.approx(1.5)       # RFC 6298 §2.2: SRTT + 4·RTTVAR
    assert p.owner == OWNER
    assert accepted == Accepted(OWNER, c.lid, c.id, PEER, PEER_PORT, PORT)
    assert c.state is State.ESTABLISHED
    assert net.stack.stats["passive_opens"] == 1


def test_syn_received_ack_short_rtt_rto_min(conn_syn_received):
    c = conn_syn_received
    c.net.wait(0.01)
    install = of_type(c.recv(A), InstallFlow)[0]
    assert install.params.rto == pytest.approx(0.2)    # Linux rto_min, not the RFC's 1 s


def test_syn_received_ack_with_data_replayed(conn_syn_received):
    c = conn_syn_received
    # +0 < P. 1:11(10) ack 1 win 502
    seg = c.seg(A | P, payload=b"0123456789")
    actions = c.net.recv(seg)
    assert kinds(actions) == ["InstallFlow", "ReplaySegment", "Accepted"]
    assert actions[1] == ReplaySegment(c.id, PEER, LOCAL, seg, actions[1].ecn)


def test_syn_received_ack_with_fin_replayed(conn_syn_received):
    c = conn_syn_received
    actions = c.recv(A | F)
    assert kinds(actions) == ["InstallFlow", "ReplaySegment", "Accepted"]


def test_established_segments_replayed_in_order(conn_established):
    c = conn_established
    first, second = c.seg(A, payload=b"a"), c.seg(A, seq=2, payload=b"b")
    actions = c.net.recv(first) + c.net.recv(second)
    assert [a.seg for a in actions] == [first, second]
    assert all(isinstance(a, ReplaySegment) and a.conn_id == c.id for a in actions)


def test_syn_received_duplicate_syn_synack_again(conn_syn_received):
    c = conn_syn_received
    c.net.wait(0.3)
    # +.3 < S 0:0(0) win 65535 <...>   (our SYN-ACK was lost)
    synack = only_sent(c.net.recv(PEER_SYN))
    assert synack.flags == S | A and synack.seq == c.iss and synack.ack == PEER_ISS + 1
    assert c.state is State.SYN_RECEIVED


def test_syn_received_ack_no_credit_queued_until_credit():
    net = Net()
    lid = listening(net, credit=0)
    c = syn_received(net, lid=lid)
    assert kinds(c.recv(A)) == ["InstallFlow"]           # installed, not delivered
    assert c.state is State.ESTABLISHED
    net.stack.accept_credit(lid, 2)
    assert net.take() == [Accepted(OWNER, lid, c.id, PEER, PEER_PORT, PORT)]
    d = syn_received(net, replace(PEER_SYN, src_port=PEER_PORT + 1), lid=lid)
    assert kinds(d.recv(A)) == ["InstallFlow", "Accepted"]


def test_established_credit_withdrawn_connection_waits():
    """Credit of a taker that went away is taken back: the next connection
    waits in the accept queue for new credit."""
    net = Net()
    lid = listening(net, credit=0)
    net.stack.accept_credit(lid, 1)
    net.stack.withdraw_credit(lid, 1)
    net.stack.withdraw_credit(lid, 5)  # never below none
    c = syn_received(net, lid=lid)
    assert kinds(c.recv(A)) == ["InstallFlow"]
    net.stack.accept_credit(lid, 1)
    assert net.take() == [Accepted(OWNER, lid, c.id, PEER, PEER_PORT, PORT)]


def test_listen_accept_credit_bad_arguments(net):
    lid = listening(net)
    with pytest.raises(TcpError) as e:
        net.stack.accept_credit(lid, -1)
    assert e.value.errno == "EINVAL"
    with pytest.raises(TcpError) as e:
        net.stack.accept_credit(lid + 100, 1)
    assert e.value.errno == "EBADF"


# --- backlog ----------------------------------------------------------------

def _peer(net, port):
    """A peer connection from source port `port`, not yet opened."""
    return replace(PEER_SYN, src_port=port)


def test_listen_syn_backlog_full_dropped(net):
    listening(net, backlog=1, credit=0)
    only_sent(net.recv(_peer(net, 50001)))
    # A second SYN while one handshake is pending: SYN_RECEIVED is bounded by 1.
    assert net.recv(_peer(net, 50002)) == []
    assert net.stack.stats["syn_dropped_backlog"] == 1


def test_listen_syn_accept_queue_full_dropped(net):
    lid = listening(net, backlog=0, credit=0)
    c = syn_received(net, lid=lid)
    c.recv(A)                                  # queue 1 > backlog 0: full (Linux admits one)
    assert net.recv(_peer(net, 50002)) == []
    assert net.stack.stats["syn_dropped_backlog"] == 1


def test_syn_received_ack_accept_queue_full_dropped_then_retried():
    net = Net()
    lid = listening(net, backlog=2, credit=0)
    conns = [syn_received(net, _peer(net, 50000 + i), lid=lid) for i in range(2)]
    for c in conns:
        assert kinds(c.recv(A)) == ["InstallFlow"]
    late = [syn_received(net, _peer(net, 50010 + i), lid=lid) for i in range(2)]
    assert kinds(late[0].recv(A)) == ["InstallFlow"]      # queue 3 > 2: now full
    assert late[1].recv(A) == []                           # handshake ACK dropped
    assert late[1].state is State.SYN_RECEIVED
    assert net.stack.stats["listen_overflows"] == 1
    net.stack.accept_credit(lid, 1)
    assert kinds(net.take()) == ["Accepted"]
    # The SYN-ACK timer makes the peer repeat its ACK; there is room now.
    assert of_type(net.wait(1.0), SendSegment)[0].seg.flags == S | A
    assert kinds(late[1].recv(A)) == ["InstallFlow"]
    assert late[1].state is State.ESTABLISHED


# --- option negotiation (passive) ----------------------------------------------

# (peer's SYN options, expected SYN-ACK option types, mss, snd/rcv wscale, ts, sack)
ALL = [Mss, SackPermitted, Timestamps, WindowScale]
PASSIVE_MATRIX = {
    "linux": (LINUX_OPTIONS, ALL, 1460, (7, 7), True, True),
    "none": ((), [Mss], 536, (0, 0), False, False),
    "mss_only": ((Mss(1200),), [Mss], 1200, (0, 0), False, False),
    "mss_jumbo": ((Mss(8960),), [Mss], 1460, (0, 0), False, False),
    "mss_tiny": ((Mss(10),), [Mss], 48, (0, 0), False, False),
    "wscale_only": ((Mss(1460), WindowScale(2)), [Mss, WindowScale], 1460, (2, 7), False, False),
    "wscale_0": ((Mss(1460), WindowScale(0)), [Mss, WindowScale], 1460, (0, 7), False, False),
    "wscale_15_clamped": ((Mss(1460), WindowScale(15)), [Mss, WindowScale], 1460, (14, 7),
                          False, False),
    "ts_only": ((Mss(1460), Timestamps(PEER_TS0, 0)), [Mss, Timestamps], 1460, (0, 0),
                True, False),
    "sack_only": ((Mss(1460), SackPermitted()), [Mss, SackPermitted], 1460, (0, 0), False, True),
    "no_ts": ((Mss(1460), SackPermitted(), WindowScale(9)), [Mss, SackPermitted, WindowScale],
              1460, (9, 7), False, True),
}


@pytest.mark.parametrize("name", PASSIVE_MATRIX)
def test_listen_syn_option_matrix(name):
    options, synack_types, mss, (snd_ws, rcv_ws), ts, sack = PASSIVE_MATRIX[name]
    net = Net()
    c = syn_received(net, replace(PEER_SYN, options=options))
    synack = c.stack.connection(c.id).syn_segment(net.now)
    assert [type(o) for o in synack.options] == synack_types
    install = of_type(c.recv(A), InstallFlow)[0].params
    assert install.mss == mss
    assert (install.snd_wscale, install.rcv_wscale) == (snd_ws, rcv_ws)
    assert install.timestamps is ts and install.sack is sack
    assert install.rcv_wnd == (262144 if rcv_ws else 65535)
    assert install.snd_wnd == 502 << snd_ws


def test_listen_syn_config_disables_options():
    net = Net(TcpConfig(timestamps=False, sack=False, window_scaling=False, mss=1400))
    c = syn_received(net)
    install = of_type(c.recv(A, options=()), InstallFlow)[0].params
    assert not install.timestamps and not install.sack
    assert install.snd_wscale == install.rcv_wscale == 0
    assert install.mss == 1400


def test_syn_received_synack_options_without_ts_order(net):
    listening(net)
    syn = replace(PEER_SYN, options=(Mss(1460), SackPermitted(), WindowScale(7)))
    synack = only_sent(net.recv(syn))
    # > S. 0:0(0) ack 1 <mss 1460,nop,nop,sackOK,nop,wscale 7>
    assert synack.emit(LOCAL, PEER)[20:32] == bytes.fromhex("020405b4 01010402 01030307")


# --- ECN setup (RFC 3168 §6.1.1) --------------------------------------------

@pytest.mark.parametrize("syn_flags, config_ecn, agreed", [
    (S | ECE | CWR, True, True),
    (S | ECE, True, False),          # not an ECN-setup SYN
    (S | CWR, True, False),
    (S, True, False),
    (S | ECE | CWR, False, False),
])
def test_listen_syn_ecn_negotiation(syn_flags, config_ecn, agreed):
    net = Net(TcpConfig(ecn=config_ecn))
    c = syn_received(net, replace(PEER_SYN, flags=syn_flags))
    synack = c.stack.connection(c.id).syn_segment(net.now)
    assert synack.flags == (S | A | ECE if agreed else S | A)
    assert of_type(c.recv(A), InstallFlow)[0].params.ecn is agreed


# --- SYN_SENT (active open) ------------------------------------------------------

def test_syn_sent_syn_options_ecn_setup():
    net = Net()
    cid = net.stack.connect(OWNER, PEER, 80, net.now, cookie=7)
    syn = only_sent(net.take())
    # +0 > SEW 0:0(0) win 65535 <mss 1460,sackOK,TS val X ecr 0,nop,wscale 7>
    assert syn.flags == S | ECE | CWR
    assert syn.window == 65535 and syn.dst_port == 80
    assert [type(o) for o in syn.options] == [Mss, SackPermitted, Timestamps, WindowScale]
    assert syn.option(Timestamps).tsecr == 0
    assert net.stack.state(cid) is State.SYN_SENT
    assert net.stack.stats["active_opens"] == 1


def test_syn_sent_synack_established_ack_install_connected(conn_syn_sent):
    c = conn_syn_sent
    c.net.wait(0.05)
    # +.05 < S. 0:0(0) ack 1 win 65535 <mss 1460,sackOK,TS val 700050 ecr X,nop,wscale 7>
    actions = c.net.recv(synack_for(c))
    assert kinds(actions) == ["SendSegment", "InstallFlow", "Connected"]
    ack = actions[0].seg
    # +0 > . 1:1(0) ack 1 win 2048 <nop,nop,TS val Y ecr 700050>
    assert ack.flags == A and ack.seq == c.iss + 1 and ack.ack == PEER_ISS + 1
    assert ack.window == 262144 >> 7
    assert ack.option(Timestamps).tsecr == PEER_TS0 + 50
    p = actions[1].params
    assert p.snd_wnd == 65535                # a SYN-ACK's window is never scaled
    assert (p.snd_wscale, p.rcv_wscale, p.mss, p.timestamps, p.sack) == (7, 7, 1460, True, True)
    assert p.ts_recent == PEER_TS0 + 50
    assert not p.passive and not p.ecn
    assert p.srtt == pytest.approx(0.05)
    assert actions[2] == Connected(OWNER, c.id, "c", c.local_port)
    assert c.state is State.ESTABLISHED


@pytest.mark.parametrize("options, mss, ws, ts, sack", [
    (LINUX_OPTIONS, 1460, 7, True, True),
    ((), 536, 0, False, False),
    ((Mss(1380), WindowScale(3)), 1380, 3, False, False),
    ((Mss(1460), Timestamps(0, 0)), 1460, 0, True, False),
    ((Mss(1460), SackPermitted()), 1460, 0, False, True),
])
def test_syn_sent_synack_option_matrix(options, mss, ws, ts, sack):
    net = Net()
    c = established_active(net, options=options)
    p = c.install.params
    assert (p.mss, p.snd_wscale, p.timestamps, p.sack) == (mss, ws, ts, sack)
    scaling = any(isinstance(o, WindowScale) for o in options)
    assert p.rcv_wscale == (7 if scaling else 0)


def test_syn_sent_synack_no_wscale_ack_window_unscaled(conn_syn_sent):
    c = conn_syn_sent
    actions = c.net.recv(synack_for(c, options=(Mss(1460),)))
    ack = sent(actions)[0]
    assert ack.window == 65535 and ack.options == ()
    assert of_type(actions, InstallFlow)[0].params.rcv_wnd == 65535


@pytest.mark.parametrize("flags, agreed", [
    (S | A | ECE, True), (S | A | ECE | CWR, False), (S | A, False)])
def test_syn_sent_synack_ecn(conn_syn_sent, flags, agreed):
    c = conn_syn_sent
    actions = c.net.recv(synack_for(c, flags=flags))
    assert of_type(actions, InstallFlow)[0].params.ecn is agreed


def test_syn_sent_synack_with_data_data_not_taken(conn_syn_sent):
    c = conn_syn_sent
    seg = replace(synack_for(c), payload=b"early")
    actions = c.net.recv(seg)
    assert kinds(actions) == ["SendSegment", "InstallFlow", "Connected"]
    assert actions[0].seg.ack == PEER_ISS + 1       # the data is not acknowledged


def test_syn_sent_synack_bad_tsecr_reset(conn_syn_sent):
    c = conn_syn_sent
    seg = replace(synack_for(c), options=(Mss(1460), Timestamps(1, c.net.last_tsval + 100_000)))
    rst = only_sent(c.net.recv(seg))
    assert rst.flags == R and rst.seq == c.iss + 1
    assert c.state is State.SYN_SENT


# --- simultaneous open (RFC 9293 §3.5 Figure 7) -------------------------------------

def test_syn_sent_syn_simultaneous_open_synack(conn_syn_sent):
    c = conn_syn_sent
    # +0 < S 0:0(0) win 65535 <mss 1460,sackOK,TS val .. ecr 0,nop,wscale 7>
    synack = only_sent(c.net.recv(c.seg(S, seq=0, options=LINUX_OPTIONS)))
    # +0 > S. 0:0(0) ack 1 <mss 1460,sackOK,TS val X ecr 700000,nop,wscale 7>
    assert synack.flags == S | A and synack.seq == c.iss and synack.ack == PEER_ISS + 1
    assert [type(o) for o in synack.options] == [Mss, SackPermitted, Timestamps, WindowScale]
    assert c.state is State.SYN_RECEIVED
    # +0 < S. 0:0(0) ack 1 <...>   (the peer's SYN-ACK: its SYN again, acking ours)
    actions = c.net.recv(synack_for(c))
    assert kinds(actions) == ["InstallFlow", "Connected"]
    assert actions[0].params.rcv_nxt == PEER_ISS + 1 and not actions[0].params.passive
    assert actions[0].params.snd_wnd == 65535          # a SYN-ACK's window: unscaled
    assert c.state is State.ESTABLISHED


def test_syn_received_simultaneous_ack_established(conn_syn_sent):
    c = conn_syn_sent
    c.net.recv(c.seg(S, seq=0, options=LINUX_OPTIONS))
    assert kinds(c.recv(A)) == ["InstallFlow", "Connected"]


def test_syn_received_simultaneous_rst_refused(conn_syn_sent):
    c = conn_syn_sent
    c.net.recv(c.seg(S, seq=0, options=LINUX_OPTIONS))
    actions = c.recv(R, seq=1, options=())
    assert actions == [ConnectFailed(OWNER, c.id, "c", "ECONNREFUSED")]
    assert c.state is State.CLOSED


def test_syn_sent_syn_simultaneous_ecn(conn_syn_sent):
    c = conn_syn_sent
    synack = only_sent(c.net.recv(c.seg(S | ECE | CWR, seq=0, options=LINUX_OPTIONS)))
    assert synack.flags == S | A | ECE
    assert of_type(c.recv(A), InstallFlow)[0].params.ecn


def test_syn_received_simultaneous_timeout_connect_failed(conn_syn_sent):
    c = conn_syn_sent
    c.net.recv(c.seg(S, seq=0, options=LINUX_OPTIONS))
    actions = c.net.wait(200)
    synacks = [s for s in sent(actions) if s.flags == S | A]
    assert len(synacks) == 6                                  # syn_retries
    assert of_type(actions, ConnectFailed)[0].errno == "ETIMEDOUT"


# --- initial RTO (RFC 6298 §2, §5.7) ----------------------------------------------

def test_syn_received_ack_after_synack_retransmit_rtt_from_timestamp(conn_syn_received):
    c = conn_syn_received
    second = only_sent(c.net.wait(1.0))             # SYN-ACK again at +1
    assert second.flags == S | A
    c.net.wait(0.3)
    ack = c.seg(A, options=(Timestamps(c.net.peer_tsval(), second.option(Timestamps).tsval),))
    p = of_type(c.net.recv(ack), InstallFlow)[0].params
    assert p.srtt == pytest.approx(0.3)              # the echo names the copy answered


def test_syn_received_ack_after_synack_retransmit_no_timestamps_rto_3s():
    net = Net()
    c = syn_received(net, replace(PEER_SYN, options=(Mss(1460),)))
    net.wait(1.2)
    p = of_type(c.recv(A), InstallFlow)[0].params
    assert p.srtt is None and p.rto == 3.0           # Karn: no sample; §5.7: 3 s


def test_syn_sent_synack_after_syn_retransmit_rto_3s(conn_syn_sent):
    c = conn_syn_sent
    c.net.wait(1.5)
    p = of_type(c.net.recv(synack_for(c, options=(Mss(1460),))), InstallFlow)[0].params
    assert p.srtt is None and p.rto == 3.0


# --- listen() ----------------------------------------------------------------

def test_listen_port_in_use_eaddrinuse(net):
    net.stack.listen("a", PORT, 10)
    for owner, reuse in (("b", False), ("a", False), ("b", True)):
        with pytest.raises(TcpError) as e:
            net.stack.listen(owner, PORT, 10, reuseport=reuse)
        assert e.value.errno == "EADDRINUSE"


def test_listen_reuseport_both_sides_allowed_and_spread(net):
    a = net.stack.listen("a", PORT, 100, reuseport=True)
    b = net.stack.listen("b", PORT, 100, reuseport=True)
    net.stack.accept_credit(a, 100)
    net.stack.accept_credit(b, 100)
    owners = []
    for port in range(50000, 50040):
        c = syn_received(net, replace(PEER_SYN, src_port=port), lid=a)
        owners.append(of_type(c.recv(A), Accepted)[0].owner)
    assert set(owners) == {"a", "b"}


@pytest.mark.parametrize("port, backlog", [(0, 1), (65536, 1), (80, -1), ("80", 1)])
def test_listen_bad_arguments_einval(net, port, backlog):
    with pytest.raises(TcpError) as e:
        net.stack.listen(OWNER, port, backlog)
    assert e.value.errno == "EINVAL"


def test_listen_port_of_active_connection_eaddrinuse(conn_syn_sent):
    c = conn_syn_sent
    with pytest.raises(TcpError) as e:
        c.stack.listen(OWNER, c.local_port, 1)
    assert e.value.errno == "EADDRINUSE"


def test_listen_unlisten_pending_connections_reset():
    net = Net()
    lid = listening(net, credit=0)
    queued = syn_received(net, lid=lid)
    queued.recv(A)
    pending = syn_received(net, replace(PEER_SYN, src_port=PEER_PORT + 1), lid=lid)
    net.stack.unlisten(lid, net.now)
    actions = net.take()
    rst = only_sent(actions)
    # > R. 1:1(0) ack 1   (the peer may be in SYN-SENT or ESTABLISHED)
    assert rst.flags == R | A and rst.seq == pending.iss + 1 and rst.ack == PEER_ISS + 1
    assert RemoveFlow(queued.id, rst=True) in actions
    assert actions[-1] == ListenerClosed(OWNER, lid)
    net.stack.flow_removed(queued.id, queued.snapshot(), None, net.now)
    assert net.take() == []                      # never delivered: nobody to tell
    assert net.stack.gauges()["connections"] == 0
    # The port is free again; a SYN now meets no listener.
    assert only_sent(net.recv(replace(PEER_SYN, src_port=50123))).flags == R | A
    net.stack.listen(OWNER, PORT, 1)


def test_syn_sent_synack_ece_after_plain_syn_retransmit_agreed(conn_syn_sent):
    # Linux's ECN fallback: the SYN again without ECE|CWR; a peer that saw the
    # first one and answers ECE has agreed to ECN.
    c = conn_syn_sent
    assert only_sent(c.net.wait(1.0)).flags == S
    actions = c.net.recv(synack_for(c, flags=S | A | ECE))
    assert of_type(actions, InstallFlow)[0].params.ecn


def test_syn_sent_ecn_disabled_plain_syn():
    net = Net(TcpConfig(ecn=False))
    c = syn_sent(net)
    assert net.stack.connection(c.id).syn_segment(0.0).flags == S
    assert not of_type(net.recv(synack_for(c, flags=S | A | ECE)), InstallFlow)[0].params.ecn

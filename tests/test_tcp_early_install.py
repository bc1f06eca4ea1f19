"""Early install (TcpConfig.early_install, what tasd runs with): a passive
connection's flow goes to its worker with the SYN-ACK, in SYN_RECEIVED; the
worker takes the ACK that completes the handshake and says so
(flow_established); everything else the worker passes up is the slowpath's,
and a connection that ends before its ACK ends through its flow."""

from dataclasses import replace

import pytest

from tasd.slowpath.tcp import InstallFlow, ListenerClosed, RemoveFlow, SendSegment, State, TcpConfig
from test_tcp_support import (PEER_ISS, PEER_PORT, PEER_SYN, PEER_TS0, A, Conn, Net, R, S, kinds, listening,
                              of_type, sent)

EARLY = TcpConfig(early_install=True, early_install_max=2)


def early(net: Net, syn=PEER_SYN, lid=None) -> Conn:
    if lid is None:
        lid = listening(net)
    actions = net.recv(syn)
    assert kinds(actions) == ["SendSegment", "InstallFlow"], actions
    synack, install = actions
    c = Conn(net, iss=synack.seg.seq, irs=syn.seq, peer_port=syn.src_port, lid=lid)
    c.id = install.conn_id
    c.install = install
    return c


def test_synack_then_flow_in_syn_received():
    net = Net(EARLY)
    c = early(net)
    p = c.install.params
    assert p.syn_received and p.passive
    assert p.snd_una == c.iss and p.snd_nxt == c.iss + 1 and p.rcv_nxt == PEER_ISS + 1
    assert p.snd_wnd == 65535                       # the SYN's, never scaled
    assert p.ts_recent == PEER_TS0 and p.srtt is None and p.rto == pytest.approx(1.0)
    assert c.state is State.SYN_RECEIVED
    assert net.stack.stats["early_installs"] == 1


def test_worker_establishes_then_accepted():
    net = Net(EARLY)
    c = early(net)
    net.wait(0.01)
    c.stack.flow_established(c.id, replace(c.snapshot(), srtt=0.01, rttvar=0.005), net.now)
    actions = net.take()
    assert kinds(actions) == ["Accepted"]
    assert actions[0].conn_id == c.id
    assert c.state is State.ESTABLISHED
    assert net.stack.stats["passive_opens"] == 1 and net.stack.stats["established_in_worker"] == 1
    assert net.wait(30) == []                       # no SYN-ACK timer left
    # a second event for it is stale
    c.stack.flow_established(c.id, c.snapshot(), net.now)
    assert net.take() == [] and net.stack.stats["stale_events"] == 1


def test_ack_that_beat_the_install_is_replayed():
    """The worker had not got the flow yet: the ACK came to the slowpath,
    which hands it to the flow's worker (behind the install)."""
    net = Net(EARLY)
    c = early(net)
    actions = c.recv(A, payload=b"hello")
    assert kinds(actions) == ["ReplaySegment"]
    assert c.state is State.SYN_RECEIVED


def test_duplicate_syn_gets_the_synack_again():
    net = Net(EARLY)
    c = early(net)
    actions = net.recv(PEER_SYN)
    assert [s.flags for s in sent(actions)] == [S | A] and not of_type(actions, InstallFlow)


def test_rst_ends_it_through_its_flow():
    net = Net(EARLY)
    c = early(net)
    actions = c.recv(R, ack=0)
    assert actions == [RemoveFlow(c.id, False)]
    assert c.state is State.CLOSED
    assert c.recv(A) == []                          # while the removal is pending: dropped
    c.stack.flow_removed(c.id, c.snapshot(), None, net.now)
    assert net.take() == [] and c.stack.connection(c.id) is None
    assert net.stack.stats["flows_lost"] == 0


def test_synack_timeout_removes_the_flow():
    net = Net(EARLY)
    c = early(net)
    actions = net.wait(100)
    assert [a.seg.flags for a in actions if isinstance(a, SendSegment)] == [S | A] * 5
    assert of_type(actions, RemoveFlow) == [RemoveFlow(c.id, False)]
    assert net.stack.stats["synack_timeouts"] == 1
    c.stack.flow_removed(c.id, c.snapshot(), None, net.now)
    assert c.stack.connection(c.id) is None


def test_unlisten_resets_peer_and_removes_flow():
    net = Net(EARLY)
    c = early(net)
    net.stack.unlisten(c.lid, net.now)
    actions = net.take()
    assert [s.flags & R for s in sent(actions)] == [R]
    assert of_type(actions, RemoveFlow) == [RemoveFlow(c.id, False)]
    assert of_type(actions, ListenerClosed)
    c.stack.flow_removed(c.id, c.snapshot(), None, net.now)
    assert c.stack.connection(c.id) is None


def test_beyond_early_install_max_installs_at_the_ack():
    """Under a SYN flood flows (and their buffers) wait for the ACK again."""
    net = Net(EARLY)
    lid = listening(net)
    for i in range(2):
        early(net, replace(PEER_SYN, src_port=PEER_PORT + i), lid)
    actions = net.recv(replace(PEER_SYN, src_port=PEER_PORT + 2))
    assert kinds(actions) == ["SendSegment"]
    synack = actions[0].seg
    c = Conn(net, iss=synack.seq, peer_port=PEER_PORT + 2, lid=lid)
    c.id = net.stack.find(c.key).id
    actions = c.recv(A)
    assert kinds(actions) == ["InstallFlow", "Accepted"]
    assert not actions[0].params.syn_received


def test_declined_early_install_installs_at_the_ack():
    """The driver had no MAC (the SYN-ACK waits for ARP) or no slot yet."""
    net = Net(EARLY)
    c = early(net)
    c.stack.decline_early(c.id)
    actions = c.recv(A)
    assert kinds(actions) == ["InstallFlow", "Accepted"]
    assert not actions[0].params.syn_received and actions[0].params.snd_una == c.iss + 1
    assert net.stack.stats["early_declined"] == 1


def test_replayed_established_segments_after_the_event():
    net = Net(EARLY)
    c = early(net)
    c.stack.flow_established(c.id, c.snapshot(), net.now)
    net.take()
    assert kinds(c.recv(A, payload=b"x")) == ["ReplaySegment"]


# --- on the testbed: SYNs whose SYN-ACK the peer answers with a RST (a port scan)

def test_scan_leaves_nothing_behind(tasd):
    """Raw SYNs from the peer (no socket behind them: its kernel answers each
    SYN-ACK with a RST): every half-open connection and its early-installed
    flow go away; nothing is left in the flow table, the app's slots or
    tasctl flows; a real connection works after."""
    import os
    import subprocess
    import time
    from ipaddress import IPv4Address

    from e2e import PY
    from tasd.wire import SeqNum, TcpFlags, TcpSegment

    t, tb = tasd, tasd.tb
    srv = t.app(os.path.join(os.path.dirname(__import__("tasd").__file__), "lib", "tas-echo"), "7300",
                stdout=subprocess.PIPE, text=True)
    assert "listening" in srv.stdout.readline()
    segs = [TcpSegment(40000 + i, 7300, SeqNum(1000 * i), flags=TcpFlags.SYN, window=65535).emit(
        IPv4Address(tb.peer_ip), IPv4Address(t.ip)) for i in range(50)]
    code = ("import socket, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)\n"
            "for h in sys.argv[2:]: s.sendto(bytes.fromhex(h), (sys.argv[1], 0))\n")
    tb.run(tb.ns_peer, PY, "-c", code, t.ip, *[s.hex() for s in segs])
    deadline = time.monotonic() + 10
    while True:
        st = t.ctl("stats")["slowpath"]["tcp"]
        if st["tcp_resets_received"] >= 50 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert st["tcp_early_installs"] == 50 and st["tcp_resets_received"] == 50, st
    deadline = time.monotonic() + 5
    while t.ctl("flows")["flows"] or t.ctl("stats")["slowpath"]["tcp"]["flows_installed"]:
        assert time.monotonic() < deadline, t.ctl("flows")
        time.sleep(0.1)
    assert t.ctl("status")["connections"] == 0
    assert t.ctl("apps")["apps"][0]["connections"] == 0
    r = tb.run(tb.ns_peer, "sh", "-c", f"echo hello | socat -t 2 - TCP:{t.ip}:7300", timeout=20)
    assert r.stdout.strip() == "hello"

"""Timers: SYN and SYN-ACK retransmission with backoff, the RFC 6298 decisions
on the worker's retransmission and persist timeouts, keepalive, poll_at."""

import pytest

from tasd.slowpath.tcp import (Closed, ConnectFailed, Probe, QueryActivity, RemoveFlow, Reset,
                               Retransmit, SendSegment, State, TcpConfig, TcpError)
from test_tcp_support import (  # noqa: F401  (fixtures)
    OWNER, A, Net, S, conn_established, conn_syn_received, conn_syn_sent,
    established, kinds, syn_sent, synack_for)


# --- SYN retransmission (RFC 6298 §5.5 and Linux's tcp_syn_retries) -------------------

def test_syn_sent_no_answer_backoff_then_etimedout(conn_syn_sent):
    c = conn_syn_sent
    out = c.net.wait_collect(200)
    syns = [(t, a.seg) for t, a in out if isinstance(a, SendSegment)]
    assert [t for t, _ in syns] == [1, 3, 7, 15, 31, 63]       # 1, 2, 4, 8, 16, 32 s apart
    assert all(seg.seq == c.iss and seg.flags == S for _, seg in syns)  # no ECE|CWR again
    assert out[-1] == (127, ConnectFailed(OWNER, c.id, "c", "ETIMEDOUT"))
    assert c.state is State.CLOSED
    assert c.stack.stats["syn_retransmits"] == 6
    assert c.stack.stats["connect_timeouts"] == 1


def test_syn_sent_syn_retries_configured():
    net = Net(TcpConfig(syn_retries=2))
    c = syn_sent(net)
    out = net.wait_collect(100)
    assert [t for t, a in out] == [1, 3, 7]
    assert out[-1][1] == ConnectFailed(OWNER, c.id, "c", "ETIMEDOUT")


def test_syn_sent_backoff_bounded_by_rto_max():
    net = Net(TcpConfig(rto_max=5.0))
    syn_sent(net)
    times = [t for t, _ in net.wait_collect(100)]
    assert times == [1, 3, 7, 12, 17, 22, 27]


def test_syn_sent_poll_at_follows_deadline(conn_syn_sent):
    c = conn_syn_sent
    assert c.stack.poll_at() == 1.0
    c.net.wait(1.0)
    assert c.stack.poll_at() == 3.0
    c.net.recv(synack_for(c))
    assert c.stack.poll_at() is None


def test_syn_received_no_ack_synack_backoff_dropped(conn_syn_received):
    c = conn_syn_received
    out = c.net.wait_collect(100)
    assert [t for t, a in out] == [1, 3, 7, 15, 31]             # synack_retries = 5
    assert all(a.seg.flags == S | A and a.seg.seq == c.iss for _, a in out)
    assert c.stack.find(c.key) is None                          # dropped silently at 63
    assert c.stack.stats["synack_timeouts"] == 1
    assert c.stack.poll_at() is None


# --- RTO on an installed flow (RFC 6298 §5.5–5.7) --------------------------------

def _rto_run(c, n, snap, dt=None):
    """Report n RTO expiries the way a worker would (each after the RTO it was
    given); return the actions."""
    actions = []
    for _ in range(n):
        c.stack.timeout(c.id, "rto", snap, c.net.now)
        new = c.net.take()
        actions += new
        rtos = [a.rto for a in new if isinstance(a, Retransmit)]
        c.net.now += dt if dt is not None else (rtos[0] if rtos else 0)
    return actions


def test_established_rto_doubles_until_give_up(conn_established):
    c = conn_established
    snap = c.snapshot(1000, srtt=0.1, rttvar=0.05)      # RTO = 0.1 + 4·0.05 = 0.3
    actions = _rto_run(c, 16, snap)
    rtos = [a.rto for a in actions if isinstance(a, Retransmit)]
    assert len(rtos) == 15                              # tcp_retries2
    assert rtos[:4] == pytest.approx([0.6, 1.2, 2.4, 4.8])
    assert max(rtos) == 120.0 and rtos[-1] == 120.0     # rto_max
    assert actions[-2:] == [RemoveFlow(c.id, rst=True), Reset(OWNER, c.id, "ETIMEDOUT")]
    assert c.state is State.CLOSED
    assert c.stack.stats["timeouts"] == 16 and c.stack.stats["timeout_aborts"] == 1


def test_established_rto_without_sample_uses_handshake_rto(conn_established):
    c = conn_established
    assert c.install.params.rto == pytest.approx(0.2)
    c.stack.timeout(c.id, "rto", c.snapshot(), c.net.now)
    assert c.net.take() == [Retransmit(c.id, pytest.approx(0.4))]


def test_established_ack_progress_resets_backoff(conn_established):
    c = conn_established
    snap = c.snapshot(10, srtt=0.5, rttvar=0.1)          # base 0.9
    _rto_run(c, 3, snap)
    c.stack.ack_progress(c.id, c.net.now)
    c.stack.timeout(c.id, "rto", snap, c.net.now)
    assert c.net.take() == [Retransmit(c.id, pytest.approx(1.8))]


def test_established_rto_retries2_configured():
    c = established(Net(TcpConfig(retries2=3)))
    actions = _rto_run(c, 4, c.snapshot(srtt=0.1, rttvar=0.0))
    assert kinds(actions) == ["Retransmit"] * 3 + ["RemoveFlow", "Reset"]


def test_established_user_timeout_gives_up_on_time(conn_established):
    c = conn_established
    c.stack.set_user_timeout(c.id, 10.0)
    start = c.net.now
    snap = c.snapshot(srtt=0.1, rttvar=0.05)
    actions = _rto_run(c, 20, snap)
    rtos = [a.rto for a in actions if isinstance(a, Retransmit)]
    assert kinds(actions)[-2:] == ["RemoveFlow", "Reset"]
    # The lost data left one RTO (0.3 s) before the first expiry; the last RTO is
    # cut so that the give-up comes 10 s after it, not a whole backoff later.
    assert rtos[-1] < 2 * rtos[-2]
    assert c.net.now - (start - 0.3) == pytest.approx(10.0)
    assert len(rtos) < 15


def test_established_user_timeout_cleared_restores_retries(conn_established):
    c = conn_established
    c.stack.set_user_timeout(c.id, 0.5)
    c.stack.set_user_timeout(c.id, 0)
    actions = _rto_run(c, 5, c.snapshot(srtt=0.1, rttvar=0.05))
    assert kinds(actions) == ["Retransmit"] * 5


def test_fin_wait_1_owner_closed_orphan_retries(conn_established):
    c = conn_established
    c.stack.close(c.id, c.net.now)
    c.stack.fin_sent(c.id, c.net.now)
    actions = _rto_run(c, 9, c.snapshot(fin_sent=True, srtt=0.1, rttvar=0.05))
    assert kinds(actions) == ["Retransmit"] * 8 + ["RemoveFlow"]   # no one to tell
    c.stack.flow_removed(c.id, c.snapshot(), None, c.net.now)
    assert c.net.take() == [Closed(OWNER, c.id)]


def test_established_timeout_unknown_kind_rejected(conn_established):
    c = conn_established
    with pytest.raises(ValueError):
        c.stack.timeout(c.id, "delack", c.snapshot(), c.net.now)


def test_established_timeout_after_removal_stale(conn_established):
    c = conn_established
    c.stack.abort(c.id, c.net.now)
    c.net.take()
    c.stack.timeout(c.id, "rto", c.snapshot(), c.net.now)
    assert c.net.take() == []


# --- zero-window probing ---------------------------------------------------------

def _persist_run(c, n, answered: bool, snap_base):
    actions = []
    last_rx = c.net.now
    for _ in range(n):
        snap = snap_base(last_rx)
        c.stack.timeout(c.id, "persist", snap, c.net.now)
        new = c.net.take()
        actions += new
        probes = [a.next for a in new if isinstance(a, Probe)]
        c.net.now += probes[0] if probes else 0
        if answered:
            last_rx = c.net.now          # the peer answers each probe at once
            c.net.now += 0.001
    return actions


def test_established_persist_probes_back_off_never_give_up(conn_established):
    c = conn_established
    actions = _persist_run(c, 40, True, lambda rx: c.snapshot(srtt=0.1, rttvar=0.05, last_rx=rx))
    nexts = [a.next for a in actions]
    assert all(isinstance(a, Probe) and a.kind == "zero_window" for a in actions)
    assert nexts[:3] == pytest.approx([0.6, 1.2, 2.4])
    assert nexts[-1] == 120.0 and len(nexts) == 40
    assert c.state is State.ESTABLISHED


def test_established_persist_unanswered_gives_up(conn_established):
    c = conn_established
    actions = _persist_run(c, 16, False, lambda rx: c.snapshot(srtt=0.1, rttvar=0.05, last_rx=0.0))
    assert kinds(actions) == ["Probe"] * 15 + ["RemoveFlow", "Reset"]
    assert actions[-1].errno == "ETIMEDOUT"


def test_established_window_opened_resets_persist(conn_established):
    c = conn_established
    snap = c.snapshot(srtt=0.1, rttvar=0.05)
    for _ in range(3):
        c.stack.timeout(c.id, "persist", snap, c.net.now)
    c.net.take()
    c.stack.window_opened(c.id, c.net.now)
    c.stack.timeout(c.id, "persist", snap, c.net.now)
    assert c.net.take() == [Probe(c.id, "zero_window", pytest.approx(0.6))]


# --- keepalive (RFC 9293 §3.8.4, Linux defaults) ------------------------------------

def _driver(c, last_rx):
    """Answer every QueryActivity with `last_rx(now)`; return the other actions
    with their times."""
    out = []
    while (t := c.stack.poll_at()) is not None and t < c.net.now + 20000:
        c.net.now = t
        c.stack.poll(t)
        for a in c.net.take():
            if isinstance(a, QueryActivity):
                c.stack.keepalive_check(a.conn_id, last_rx(t), t)
                out += [(t, b) for b in c.net.take()]
            else:
                out.append((t, a))
    return out


def test_established_keepalive_idle_queries_activity(conn_established):
    c = conn_established
    t0 = c.net.now
    c.stack.set_keepalive(c.id, True, now=t0)
    assert c.stack.poll_at() == pytest.approx(t0 + 7200)
    assert c.net.wait(7200) == [QueryActivity(c.id)]
    # The flow saw traffic 100 s ago: no probe, next look 7200 s after it.
    c.stack.keepalive_check(c.id, c.net.now - 100, c.net.now)
    assert c.net.take() == []
    assert c.stack.poll_at() == pytest.approx(c.net.now - 100 + 7200)


def test_established_keepalive_unanswered_probes_then_etimedout(conn_established):
    c = conn_established
    t0 = c.net.now
    c.stack.set_keepalive(c.id, True, now=t0)
    out = _driver(c, lambda t: t0)
    probes = [(t, a) for t, a in out if isinstance(a, Probe)]
    assert [round(t - t0) for t, _ in probes] == [7200 + 75 * k for k in range(9)]
    assert all(a.kind == "keepalive" and a.next == 75 for _, a in probes)
    (t_rm, rm), (_, reset) = out[-2:]
    assert rm == RemoveFlow(c.id, rst=True) and reset == Reset(OWNER, c.id, "ETIMEDOUT")
    assert t_rm - t0 == pytest.approx(7200 + 75 * 9)
    assert c.stack.stats["keepalive_probes"] == 9 and c.stack.stats["keepalive_aborts"] == 1


def test_established_keepalive_answered_probe_resets(conn_established):
    c = conn_established
    t0 = c.net.now
    c.stack.set_keepalive(c.id, True, idle=100, intvl=10, cnt=3, now=t0)
    answered_at = t0 + 100 + 10 + 1       # the peer answers the second probe

    def last_rx(t):
        return answered_at if t >= answered_at else t0

    out = [(round(t - t0), type(a).__name__) for t, a in _driver(c, last_rx)]
    # probes at 100, 110; answered at 111; idle again from 111: 211, 221, 231; give up at 241
    assert out == [(100, "Probe"), (110, "Probe"), (211, "Probe"), (221, "Probe"),
                   (231, "Probe"), (241, "RemoveFlow"), (241, "Reset")]


def test_established_keepalive_user_timeout_replaces_count(conn_established):
    c = conn_established
    t0 = c.net.now
    c.stack.set_user_timeout(c.id, 130)
    c.stack.set_keepalive(c.id, True, idle=100, intvl=10, cnt=100, now=t0)
    out = [(round(t - t0), type(a).__name__) for t, a in _driver(c, lambda t: t0)]
    assert out[-2:] == [(130, "RemoveFlow"), (130, "Reset")]
    assert [t for t, k in out if k == "Probe"] == [100, 110, 120]


def test_established_keepalive_off_cancels(conn_established):
    c = conn_established
    c.stack.set_keepalive(c.id, True, now=c.net.now)
    c.stack.set_keepalive(c.id, False)
    assert c.stack.poll_at() is None
    assert c.net.wait(10000) == []


def test_syn_sent_keepalive_armed_at_install(conn_syn_sent):
    c = conn_syn_sent
    c.stack.set_keepalive(c.id, True, idle=50)
    assert c.stack.poll_at() == 1.0                     # only the SYN timer
    c.net.wait(0.5)
    c.net.recv(synack_for(c))
    assert c.stack.poll_at() == pytest.approx(50.5)


def test_established_keepalive_bad_arguments(conn_established):
    c = conn_established
    for kw in ({"idle": 0}, {"intvl": -1}, {"cnt": 0}):
        with pytest.raises(TcpError) as e:
            c.stack.set_keepalive(c.id, True, **kw)
        assert e.value.errno == "EINVAL"


def test_established_poll_at_none_when_idle(conn_established):
    assert conn_established.stack.poll_at() is None

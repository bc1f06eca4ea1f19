"""Closing, in every order (RFC 9293 §3.6): the state names the slowpath keeps
from the worker's flow events, flow removal, and the owner's Closed/Reset
notifications. The worker's FIN segments are not ours: these dialogues are
made of flow events."""

import pytest

from tasd.slowpath.tcp import (Accepted, Closed, RemoveFlow, Reset, State, TcpConfig, TcpError)
from test_tcp_support import (  # noqa: F401  (fixtures)
    LINUX_OPTIONS, OWNER, A, F, Net, R, S, conn_close_wait, conn_closing, conn_established,
    conn_established_active, conn_fin_wait_1, conn_fin_wait_2, conn_last_ack, conn_syn_sent,
    established, kinds, listening, net, of_type, only_sent, syn_received, synack_for)


def _remove_and_finish(c, **snapshot):
    """The worker answers the RemoveFlow; returns the actions that follow."""
    c.stack.flow_removed(c.id, c.snapshot(**snapshot), None, c.net.now)
    return c.net.take()


# --- active close: ESTABLISHED → FIN_WAIT_1 → FIN_WAIT_2 → TIME_WAIT ----------------

def test_established_fin_sent_fin_wait_1(conn_established):
    c = conn_established
    c.stack.fin_sent(c.id, c.net.now)
    assert c.state is State.FIN_WAIT_1 and c.net.take() == []


def test_fin_wait_1_fin_acked_fin_wait_2(conn_fin_wait_1):
    c = conn_fin_wait_1
    c.stack.fin_acked(c.id, c.net.now)
    assert c.state is State.FIN_WAIT_2 and c.net.take() == []


def test_fin_wait_2_fin_received_time_wait_flow_removed(conn_fin_wait_2):
    c = conn_fin_wait_2
    c.stack.close(c.id, c.net.now)
    c.stack.fin_received(c.id, c.net.now)
    assert c.state is State.TIME_WAIT
    assert c.net.take() == [RemoveFlow(c.id, rst=False)]
    actions = _remove_and_finish(c, sent=10, received=20, fin_sent=True, fin_received=True)
    assert actions == [Closed(OWNER, c.id)]
    tw = c.stack.time_wait(c.key)
    assert tw.snd_nxt == c.iss + 12 and tw.rcv_nxt == c.irs + 22
    assert c.stack.stats["time_wait"] == 1


def test_fin_wait_2_fin_received_owner_still_open_closed_on_close(conn_fin_wait_2):
    c = conn_fin_wait_2
    c.stack.fin_received(c.id, c.net.now)
    c.net.take()
    assert _remove_and_finish(c, fin_sent=True, fin_received=True) == []
    assert c.state is State.TIME_WAIT                   # the owner still holds it
    c.stack.close(c.id, c.net.now)
    assert c.net.take() == [Closed(OWNER, c.id)]
    assert c.stack.time_wait(c.key) is not None         # TIME_WAIT goes on without it


def test_fin_wait_1_fin_received_closing(conn_fin_wait_1):
    c = conn_fin_wait_1
    c.stack.fin_received(c.id, c.net.now)
    assert c.state is State.CLOSING and c.net.take() == []


def test_closing_fin_acked_time_wait(conn_closing):
    c = conn_closing
    c.stack.fin_acked(c.id, c.net.now)
    assert c.state is State.TIME_WAIT
    assert c.net.take() == [RemoveFlow(c.id, rst=False)]


@pytest.mark.parametrize("events", [("fin_acked", "fin_received"), ("fin_received", "fin_acked")])
def test_fin_wait_1_fin_ack_and_fin_together_time_wait(conn_fin_wait_1, events):
    # < F. 1:1(0) ack 2   (the peer's FIN acknowledges ours: the worker reports both)
    c = conn_fin_wait_1
    for event in events:
        getattr(c.stack, event)(c.id, c.net.now)
    assert c.state is State.TIME_WAIT
    assert c.net.take() == [RemoveFlow(c.id, rst=False)]


# --- passive close: ESTABLISHED → CLOSE_WAIT → LAST_ACK → CLOSED ---------------

def test_established_fin_received_close_wait(conn_established):
    c = conn_established
    c.stack.fin_received(c.id, c.net.now)
    assert c.state is State.CLOSE_WAIT and c.net.take() == []


def test_close_wait_fin_sent_last_ack(conn_close_wait):
    c = conn_close_wait
    c.stack.fin_sent(c.id, c.net.now)
    assert c.state is State.LAST_ACK and c.net.take() == []


def test_last_ack_fin_acked_closed(conn_last_ack):
    c = conn_last_ack
    c.stack.close(c.id, c.net.now)
    assert c.net.take() == []
    c.stack.fin_acked(c.id, c.net.now)
    assert c.state is State.CLOSED
    assert c.net.take() == [RemoveFlow(c.id, rst=False)]
    assert _remove_and_finish(c, fin_sent=True, fin_received=True) == [Closed(OWNER, c.id)]
    assert c.stack.time_wait(c.key) is None
    assert c.stack.state(c.id) is None


def test_last_ack_fin_acked_owner_open_closed_on_close(conn_last_ack):
    c = conn_last_ack
    c.stack.fin_acked(c.id, c.net.now)
    c.net.take()
    assert _remove_and_finish(c) == []
    c.stack.close(c.id, c.net.now)
    assert c.net.take() == [Closed(OWNER, c.id)]
    with pytest.raises(TcpError) as e:
        c.stack.close(c.id, c.net.now)
    assert e.value.errno == "EBADF"


def test_last_ack_segment_while_removing_dropped(conn_last_ack):
    c = conn_last_ack
    c.stack.fin_acked(c.id, c.net.now)
    c.net.take()
    assert c.recv(A, seq=2, ack=2) == []          # the worker will answer after removal
    assert c.stack.stats["segments_dropped"] == 1


def test_established_close_then_full_close_closed_once(conn_established):
    c = conn_established
    c.stack.close(c.id, c.net.now)                # recorded; the FIN is the worker's
    assert c.net.take() == [] and c.state is State.ESTABLISHED
    for event in ("fin_sent", "fin_received", "fin_acked"):
        getattr(c.stack, event)(c.id, c.net.now)
    assert c.net.take() == [RemoveFlow(c.id, rst=False)]
    assert _remove_and_finish(c) == [Closed(OWNER, c.id)]


# --- FIN_WAIT_2 timeout (Linux tcp_fin_timeout) ---------------------------------

def test_fin_wait_2_close_fin_timeout_removed(conn_fin_wait_2):
    c = conn_fin_wait_2
    c.stack.close(c.id, c.net.now)
    assert c.net.wait(59.9) == []
    assert c.net.wait(0.1) == [RemoveFlow(c.id, rst=False)]   # silently, as Linux
    assert c.state is State.CLOSED
    assert _remove_and_finish(c) == [Closed(OWNER, c.id)]
    assert c.stack.stats["fin_wait_2_timeouts"] == 1


def test_fin_wait_2_owner_open_no_timeout(conn_fin_wait_2):
    c = conn_fin_wait_2
    assert c.net.wait(1000) == [] and c.state is State.FIN_WAIT_2


def test_fin_wait_1_close_timeout_starts_in_fin_wait_2(conn_fin_wait_1):
    c = conn_fin_wait_1
    c.stack.close(c.id, c.net.now)
    assert c.net.wait(30) == []
    c.stack.fin_acked(c.id, c.net.now)
    assert c.net.wait(59) == []
    assert c.net.wait(1) == [RemoveFlow(c.id, rst=False)]


def test_fin_wait_2_fin_received_cancels_fin_timeout():
    c = established(Net(TcpConfig(fin_timeout=10.0)))
    c.stack.fin_sent(c.id, c.net.now)
    c.stack.fin_acked(c.id, c.net.now)
    c.stack.close(c.id, c.net.now)
    c.net.wait(5)
    c.stack.fin_received(c.id, c.net.now)
    assert c.net.take() == [RemoveFlow(c.id, rst=False)]
    assert c.net.wait(20) == []


# --- resets and aborts -------------------------------------------------------

def test_established_reset_received_econnreset(conn_established):
    c = conn_established
    c.stack.reset_received(c.id, c.net.now)
    assert c.net.take() == [RemoveFlow(c.id, rst=False), Reset(OWNER, c.id, "ECONNRESET")]
    assert c.state is State.CLOSED
    assert _remove_and_finish(c) == []
    c.stack.close(c.id, c.net.now)
    assert c.net.take() == [Closed(OWNER, c.id)]
    assert c.stack.stats["resets_received"] == 1


def test_close_wait_reset_received_epipe(conn_close_wait):
    c = conn_close_wait
    c.stack.reset_received(c.id, c.net.now)
    assert Reset(OWNER, c.id, "EPIPE") in c.net.take()


@pytest.mark.parametrize("fixture", ["conn_fin_wait_1", "conn_fin_wait_2", "conn_closing",
                                     "conn_last_ack"])
def test_closing_states_reset_received_closed(fixture, request):
    c = request.getfixturevalue(fixture)
    c.stack.close(c.id, c.net.now)
    c.stack.reset_received(c.id, c.net.now)
    assert c.net.take() == [RemoveFlow(c.id, rst=False)]     # owner closed: no Reset
    assert _remove_and_finish(c) == [Closed(OWNER, c.id)]


def test_established_abort_remove_flow_rst(conn_established):
    c = conn_established
    c.stack.abort(c.id, c.net.now)
    assert c.net.take() == [RemoveFlow(c.id, rst=True)]
    assert c.state is State.CLOSED
    assert c.stack.stats["resets_sent"] == 1            # the worker's RST
    assert _remove_and_finish(c) == [Closed(OWNER, c.id)]


def test_fin_wait_2_orphan_abort_reset(conn_fin_wait_2):
    # The owner closed (an orphan finishing), then went away: its buffers go, so
    # the flow is reset now.
    c = conn_fin_wait_2
    c.stack.close(c.id, c.net.now)
    c.stack.abort(c.id, c.net.now)
    assert c.net.take() == [RemoveFlow(c.id, rst=True)]
    c.stack.abort(c.id, c.net.now)                       # again: nothing more
    assert c.net.take() == []
    assert _remove_and_finish(c) == [Closed(OWNER, c.id)]


def test_established_undelivered_abort_leaves_accept_queue():
    # The driver cannot run a flow it was asked to install (no buffer slot).
    net = Net()
    lid = listening(net, credit=0)
    c = syn_received(net, lid=lid)
    c.recv(A)
    c.stack.abort(c.id, net.now)
    assert net.take() == [RemoveFlow(c.id, rst=True)]
    net.stack.accept_credit(lid, 1)
    assert net.take() == []
    assert _remove_and_finish(c) == []                   # nobody held it
    assert net.stack.connection(c.id) is None


def test_established_abort_then_events_stale(conn_established):
    c = conn_established
    c.stack.abort(c.id, c.net.now)
    c.net.take()
    c.stack.fin_received(c.id, c.net.now)
    c.stack.reset_received(c.id, c.net.now)
    assert c.net.take() == []
    assert c.stack.stats["stale_events"] == 2


def test_established_fin_acked_unexpected_ignored(conn_established):
    c = conn_established
    c.stack.fin_acked(c.id, c.net.now)
    assert c.state is State.ESTABLISHED and c.net.take() == []
    assert c.stack.stats["unexpected_events"] == 1


def test_established_flow_removed_unasked_econnaborted(conn_established):
    c = conn_established
    assert _remove_and_finish(c) == [Reset(OWNER, c.id, "ECONNABORTED")]
    assert c.stack.stats["flows_lost"] == 1


def test_closed_flow_removed_unknown_stale(net):
    listening(net)
    net.stack.flow_removed(999, None, None, net.now)
    assert net.take() == [] and net.stack.stats["stale_events"] == 1


def test_established_undelivered_reset_never_delivered():
    net = Net()
    lid = listening(net, credit=0)
    c = syn_received(net, lid=lid)
    c.recv(A)
    c.stack.reset_received(c.id, net.now)
    assert net.take() == [RemoveFlow(c.id, rst=False)]
    net.stack.accept_credit(lid, 1)
    assert net.take() == []
    _remove_and_finish(c)
    assert net.stack.gauges()["connections"] == 0


def test_close_wait_undelivered_still_delivered():
    net = Net()
    lid = listening(net, credit=0)
    c = syn_received(net, lid=lid)
    c.recv(A | F)
    c.stack.fin_received(c.id, net.now)
    net.stack.accept_credit(lid, 1)
    assert of_type(net.take(), Accepted)[0].conn_id == c.id
    assert c.state is State.CLOSE_WAIT


# --- before the flow exists ---------------------------------------------------

@pytest.mark.parametrize("how", ["close", "abort"])
def test_syn_sent_close_silently_dropped(conn_syn_sent, how):
    c = conn_syn_sent
    getattr(c.stack, how)(c.id, c.net.now)
    assert c.net.take() == [Closed(OWNER, c.id)]          # no RST: the peer has only a SYN
    assert c.net.wait(200) == []                          # no more SYNs
    # A late SYN-ACK finds no connection: RST <SEQ=SEG.ACK>.
    rst = only_sent(c.net.recv(synack_for(c)))
    assert rst.flags == R and rst.seq == c.iss + 1


@pytest.mark.parametrize("how", ["close", "abort"])
def test_syn_received_simultaneous_close_reset(conn_syn_sent, how):
    c = conn_syn_sent
    c.net.recv(c.seg(S, seq=0, options=LINUX_OPTIONS))
    getattr(c.stack, how)(c.id, c.net.now)
    actions = c.net.take()
    assert kinds(actions) == ["SendSegment", "Closed"]
    rst = actions[0].seg
    assert rst.flags == R | A and rst.seq == c.iss + 1 and rst.ack == c.irs + 1


def test_syn_sent_connect_failed_then_close_closed(conn_syn_sent):
    c = conn_syn_sent
    c.recv(R | A, seq=0, ack=1, options=())
    c.net.take()
    c.stack.close(c.id, c.net.now)
    assert c.net.take() == [Closed(OWNER, c.id)]


def test_closed_close_unknown_ebadf(net):
    for call in (lambda: net.stack.close(42, 0.0), lambda: net.stack.abort(42, 0.0),
                 lambda: net.stack.set_keepalive(42, True),
                 lambda: net.stack.set_user_timeout(42, 1)):
        with pytest.raises(TcpError) as e:
            call()
        assert e.value.errno == "EBADF"


def test_established_active_full_close(conn_established_active):
    c = conn_established_active
    for event in ("fin_received", "fin_sent", "fin_acked"):
        getattr(c.stack, event)(c.id, c.net.now)
    assert c.net.take() == [RemoveFlow(c.id, rst=False)]
    c.stack.close(c.id, c.net.now)
    assert _remove_and_finish(c) == [Closed(OWNER, c.id)]
    # The local port is free for a new connection to the same peer.
    assert c.stack.find(c.key) is None

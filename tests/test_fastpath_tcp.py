"""The fastpath's TCP through cffi: frames in, frames, app updates and
slowpath events out, on a fake clock (tests/tcp_rig.py).  Names follow
test_<state>_<stimulus>[_<outcome>]; the flow is established unless said."""
from __future__ import annotations

import pytest

from tasd.fastpath.binding import lib
from tasd.wire import Mss, Sack, SeqNum, TcpFlags
from tasd.wire.ipv4 import Ecn

from tcp_rig import MS, Rig

A, P, F, R, S = TcpFlags.ACK, TcpFlags.PSH, TcpFlags.FIN, TcpFlags.RST, TcpFlags.SYN
MSS = 1448  # 1460 less the timestamp option


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.close()


@pytest.fixture
def est(rig):
    """An established flow, nothing in flight; quick ACKs used up."""
    rig.add_flow()
    rig.flow().quickacks  # noqa: B018
    return rig


def kinds(events):
    return [e["kind"] for e in events]


# ---- receiving -----------------------------------------------------------------

def test_established_data_in_order_delivered_and_acked(est):
    out = est.rx(est.peer_segment(payload=b"hello", flags=A | P))
    assert len(out) == 1 and out[0].ack == SeqNum(5001 + 5) and out[0].flags == A
    assert est.app_updates() == [dict(type=lib.TAS_QE_FLOW_UPDATE, flow=0, gen=1, flags=0, rx_bytes=5, tx_acked=0)]
    assert est.app_read(0, 5) == b"hello"
    assert est.flow().rx_bytes == 5


def test_established_data_after_quickacks_acks_every_second_segment(est):
    seq = 5001
    acks = 0
    for i in range(16 + 6):
        out = est.rx(est.peer_segment(seq=seq, payload=bytes(MSS)))
        seq += MSS
        acks += len(out)
        est.app_read(0, MSS)
    # 16 quick ACKs, then one ACK per two full segments
    assert acks == 16 + 3


def test_established_small_segment_delayed_ack_timer(est):
    for _ in range(16):  # use up the quick ACKs
        est.rx(est.peer_segment(payload=b"x"))
    assert est.rx(est.peer_segment(payload=b"y")) == []
    est.advance(39)
    assert est.out() == []
    est.advance(2)
    (ack,) = est.out()
    assert ack.ack == SeqNum(5001 + 17)


def test_established_out_of_order_sack_then_hole_filled(est):
    out = est.rx(est.peer_segment(seq=5001 + 100, payload=b"b" * 100))
    (dup,) = out
    assert dup.ack == SeqNum(5001)
    sack = dup.seg.option(Sack)
    assert sack.blocks == ((SeqNum(5101), SeqNum(5201)),)
    assert est.app_updates() == []
    out = est.rx(est.peer_segment(seq=5001, payload=b"a" * 100))
    (ack,) = out
    assert ack.ack == SeqNum(5201) and ack.seg.option(Sack) is None
    (upd,) = est.app_updates()
    assert upd["rx_bytes"] == 200
    assert est.app_read(0, 200) == b"a" * 100 + b"b" * 100


def test_established_many_holes_sack_blocks_newest_first(est):
    for k in (1, 3, 5):
        est.rx(est.peer_segment(seq=5001 + 100 * k, payload=b"z" * 100))
    out = est.rx(est.peer_segment(seq=5001 + 700, payload=b"z" * 100))
    blocks = out[-1].seg.option(Sack).blocks
    assert blocks[0] == (SeqNum(5701), SeqNum(5801))
    assert len(blocks) == 3  # with timestamps, three blocks fit


def test_established_old_duplicate_answered_with_ack(est):
    est.rx(est.peer_segment(payload=b"x" * 10))
    out = est.rx(est.peer_segment(seq=5001, payload=b"x" * 10))
    assert len(out) == 1 and out[0].ack == SeqNum(5011)
    assert est.flow().dup_segs == 1


def test_established_data_beyond_window_trimmed(rig):
    rig.add_flow(rx_size=4096, wscale=0)
    out = rig.rx(*[rig.peer_segment(seq=5001 + 1000 * i, payload=bytes(1000)) for i in range(4)])
    assert out[-1].window == 96
    out = rig.rx(rig.peer_segment(seq=5001 + 4000, payload=bytes(1000)))  # only 96 fit
    assert out[-1].ack == SeqNum(5001 + 4096) and out[-1].window == 0
    assert sum(u["rx_bytes"] for u in rig.app_updates()) == 4096


def test_established_zero_window_then_app_reads_window_update(rig):
    rig.add_flow(rx_size=4096, wscale=0)
    out = rig.rx(*[rig.peer_segment(seq=5001 + 1024 * i, payload=bytes(1024)) for i in range(4)])
    assert out[-1].window == 0
    rig.app_read(0, 1000)  # too little to tell
    assert rig.out() == []
    rig.app_read(0, 3096)
    (upd,) = rig.out()
    assert upd.window == 4096 and upd.seg.payload == b""


def test_established_paws_old_timestamp_dropped(est):
    est.rx(est.peer_segment(payload=b"x", tsval=500))
    assert est.flow().ts_recent == 500
    out = est.rx(est.peer_segment(payload=b"y", tsval=400))
    assert len(out) == 1 and out[0].ack == SeqNum(5002)  # answered, not accepted
    assert est.region.stats()["tcp_rx_unacceptable"] == 1


def test_established_out_of_window_segment_acked_and_dropped(est):
    out = est.rx(est.peer_segment(seq=5001 + (1 << 30), payload=b"x"))
    assert len(out) == 1 and out[0].ack == SeqNum(5001)
    assert est.app_updates() == []


def test_established_ack_for_unsent_data_dropped(est):
    out = est.rx(est.peer_segment(ack=1001 + 500, payload=b"x"))
    assert len(out) == 1 and est.app_updates() == []


def test_established_rst_exact_kills_flow(est):
    assert est.rx(est.peer_segment(flags=R)) == []
    (ev,) = est.events()
    assert ev["kind"] == lib.TAS_FEV_RESET
    assert est.flow().state == lib.TAS_FLOW_DEAD


def test_established_rst_in_window_challenge_ack(est):
    (ack,) = est.rx(est.peer_segment(seq=5001 + 10, flags=R))
    assert ack.flags == A and ack.ack == SeqNum(5001)
    assert est.flow().state == lib.TAS_FLOW_ACTIVE and est.events() == []


def test_established_rst_out_of_window_ignored(est):
    assert est.rx(est.peer_segment(seq=5001 + (1 << 30), flags=R)) == []
    assert est.flow().state == lib.TAS_FLOW_ACTIVE


def test_established_syn_challenge_ack(est):
    (ack,) = est.rx(est.peer_segment(seq=123, flags=S, options=(Mss(1460),)))
    assert ack.flags == A and ack.ack == SeqNum(5001)
    assert est.region.stats()["challenge_acks"] == 1


def test_established_challenge_acks_rate_limited(est):
    acks = 0
    for _ in range(11):
        for _ in range(100):
            est.dev.inject(est.peer_segment(seq=5001 + 10, flags=R))
        acks += len(est.rx())
    assert acks == 1000
    est.advance(1000)  # a new second
    assert len(est.rx(est.peer_segment(seq=5001 + 10, flags=R))) == 1


def test_established_fin_received_event_and_app_told(est):
    (ack,) = est.rx(est.peer_segment(payload=b"bye", flags=A | F))
    assert ack.ack == SeqNum(5001 + 4)
    assert kinds(est.events()) == [lib.TAS_FEV_FIN_RECEIVED]
    (upd,) = est.app_updates()
    assert upd["rx_bytes"] == 3 and upd["flags"] == lib.TAS_QF_FIN


def test_established_fin_out_of_order_waits_for_data(est):
    est.rx(est.peer_segment(seq=5011, flags=A | F))
    assert est.events() == []
    est.rx(est.peer_segment(seq=5001, payload=b"0123456789"))
    assert kinds(est.events()) == [lib.TAS_FEV_FIN_RECEIVED]
    assert est.flow().rcv_nxt == 5012


# ---- sending ------------------------------------------------------------------------

def test_established_app_send_segments_at_mss_within_initial_window(est):
    est.app_send(0, bytes(20 * MSS))
    out = est.out()
    assert [len(o.payload) for o in out] == [MSS] * 10  # initial window: 10 segments
    assert [int(o.seq) for o in out] == [1001 + i * MSS for i in range(10)]
    assert out[-1].flags == A  # not the end of the data: no PSH


def test_established_ack_frees_tx_and_grows_cwnd(est):
    est.app_send(0, bytes(20 * MSS))
    est.out()
    cwnd = est.flow().cwnd
    est.advance(1)
    out = est.rx(est.peer_segment(ack=1001 + 4 * MSS))
    assert est.flow().cwnd == cwnd + 2 * MSS  # slow start, L = 2
    assert len(out) == 4 + 2  # the window slid by 4 and grew by 2
    (upd,) = est.app_updates()
    assert upd["tx_acked"] == 4 * MSS
    assert est.flow().srtt_us == 1000  # one sample: 1 ms


def test_established_peer_window_limits_sending(est):
    est.rx(est.peer_segment(window=2 * MSS // 128))  # scaled by 128
    est.app_send(0, bytes(10 * MSS))
    out = est.out()
    assert sum(len(o.payload) for o in out) <= 2 * MSS


def test_established_zero_window_persist_event_and_probe(est):
    est.rx(est.peer_segment(window=0))
    est.app_send(0, b"x" * 100)
    assert est.out() == []
    est.advance(1001)
    assert kinds(est.events()) == [lib.TAS_FEV_PERSIST]
    est.command(lib.TAS_MSG_FLOW_PROBE, 0, lib.TAS_PROBE_ZERO_WINDOW, 2_000_000)
    (probe,) = est.out()
    assert probe.seq == SeqNum(1000) and probe.payload == b""  # one below snd_una
    (data,) = est.rx(est.peer_segment(window=100))
    assert data.payload == b"x" * 100


def test_established_three_dupacks_fast_retransmit(rig):
    rig.add_flow(sack=False)
    rig.app_send(0, bytes(10 * MSS))
    rig.out()
    for _ in range(3):
        out = rig.rx(rig.peer_segment(ack=1001))
    (retx,) = out
    assert retx.seq == SeqNum(1001) and len(retx.payload) == MSS
    f = rig.flow()
    assert f.fast_retx == 1 and f.fl & lib.TAS_FL_RECOVERY
    # a partial ACK retransmits the next hole (NewReno)
    (retx2,) = [o for o in rig.rx(rig.peer_segment(ack=1001 + MSS)) if len(o.payload)]
    assert retx2.seq == SeqNum(1001 + MSS)
    rig.rx(rig.peer_segment(ack=1001 + 10 * MSS))
    assert not rig.flow().fl & lib.TAS_FL_RECOVERY


def test_established_sack_recovery_resends_only_holes(est):
    est.app_send(0, bytes(10 * MSS))
    est.out()
    base = 1001
    # segments 0 and 3 lost; the peer SACKs 1-2 and 4-9
    blocks = ((SeqNum(base + MSS), SeqNum(base + 3 * MSS)), (SeqNum(base + 4 * MSS), SeqNum(base + 10 * MSS)))
    out = []
    for _ in range(3):
        out += est.rx(est.peer_segment(ack=base, options=(Sack(blocks),)))
    resent = sorted(int(o.seq) for o in out if o.payload)
    assert resent == [base, base + 3 * MSS]


def test_established_rto_event_then_retransmit_command(est):
    est.app_send(0, bytes(3 * MSS))
    est.out()
    est.advance(999)
    assert est.events() == []
    est.advance(2)
    (ev,) = est.events()
    assert ev["kind"] == lib.TAS_FEV_RTO and ev["snd_una"] == 1001
    est.command(lib.TAS_MSG_FLOW_RETRANSMIT, 0, timeout_us=2_000_000)
    (retx,) = est.out()  # cwnd of one segment
    assert retx.seq == SeqNum(1001) and len(retx.payload) == MSS
    assert est.flow().cwnd == MSS and est.flow().rtos == 1
    est.advance(2001)  # lost again: reported again, backed off by the slowpath
    assert kinds(est.events()) == [lib.TAS_FEV_RTO]
    est.command(lib.TAS_MSG_FLOW_RETRANSMIT, 0, timeout_us=4_000_000)
    (retx,) = est.out()
    assert retx.seq == SeqNum(1001) and est.flow().rtos == 2
    out = est.rx(est.peer_segment(ack=1001 + MSS))
    assert kinds(est.events()) == [lib.TAS_FEV_ACK_PROGRESS]
    assert len(out) == 2  # cwnd grew: the rest goes


def test_established_app_shutdown_fin_after_data_and_acked(est):
    est.app_send(0, b"last words")
    est.app_msg(0, lib.TAS_QE_SHUT_WR)
    out = est.out()
    assert out[-1].flags & F and out[-1].seq + len(out[-1].payload) == SeqNum(1001 + 10)
    assert kinds(est.events()) == [lib.TAS_FEV_FIN_SENT]
    est.rx(est.peer_segment(ack=1001 + 11))
    assert kinds(est.events()) == [lib.TAS_FEV_FIN_ACKED]


def test_established_fin_retransmitted_after_rto(est):
    est.app_msg(0, lib.TAS_QE_SHUT_WR)
    (fin,) = est.out()
    assert fin.flags & F and fin.seq == SeqNum(1001)
    est.events()
    est.advance(1001)
    assert kinds(est.events()) == [lib.TAS_FEV_RTO]
    est.command(lib.TAS_MSG_FLOW_RETRANSMIT, 0, timeout_us=2_000_000)
    (fin2,) = est.out()
    assert fin2.flags & F and fin2.seq == SeqNum(1001)


def test_established_remove_with_rst(est):
    est.app_send(0, b"abc")
    est.out()
    est.command(lib.TAS_MSG_FLOW_REMOVE, 0, lib.TAS_FLOW_CMD_RST)
    (rst,) = est.out()
    assert rst.flags & R and rst.seq == SeqNum(1004)
    (ev,) = est.events()
    assert ev["kind"] == lib.TAS_FEV_REMOVED and ev["snd_nxt"] == 1004
    assert est.flow().state == lib.TAS_FLOW_FREE
    # later segments for it are the slowpath's
    est.rx(est.peer_segment(payload=b"x", seq=5001, ack=1004))
    assert [e.get("arg") for e in est.events()] == [lib.TAS_EXC_TCP_NOFLOW]


# ---- ECN ------------------------------------------------------------------------------

def test_established_ecn_ce_echoed_until_cwr(rig):
    rig.add_flow(ecn=True)
    (ack,) = rig.rx(rig.peer_segment(payload=b"x", ecn=Ecn.CE))
    assert ack.flags & TcpFlags.ECE
    (ack,) = rig.rx(rig.peer_segment(payload=b"y"))
    assert ack.flags & TcpFlags.ECE
    (ack,) = rig.rx(rig.peer_segment(payload=b"z", flags=A | TcpFlags.CWR))
    assert not ack.flags & TcpFlags.ECE
    assert rig.flow().ce_bytes == 1


def test_established_ece_reduces_cwnd_once_and_sets_cwr(rig):
    rig.add_flow(ecn=True)
    rig.app_send(0, bytes(4 * MSS))
    out = rig.out()
    assert all(o.ecn == Ecn.ECT0 for o in out)
    cwnd = rig.flow().cwnd
    rig.rx(rig.peer_segment(ack=1001 + MSS, flags=A | TcpFlags.ECE))  # grows by MSS, then halves
    assert rig.flow().ssthresh == (cwnd + MSS) // 2
    rig.rx(rig.peer_segment(ack=1001 + 2 * MSS, flags=A | TcpFlags.ECE))  # same window: once only
    assert rig.flow().ssthresh == (cwnd + MSS) // 2 and rig.flow().cwnd > rig.flow().ssthresh
    rig.app_send(0, bytes(MSS))
    new = [o for o in rig.out() if o.payload]
    assert new and new[0].flags & TcpFlags.CWR


# ---- applications cannot reach what is not theirs ---------------------------------------

@pytest.mark.parametrize("change, counter", [
    (dict(gen=99), "app_bad_msgs"),                         # another generation
    (dict(flow=lib.tas_flow_id(0, 5)), "app_stale_msgs"),   # a free slot
    (dict(flow=lib.tas_flow_id(3, 0)), "app_bad_msgs"),     # another worker's flow
    (dict(flow=0xffffffff), "app_bad_msgs"),                # nonsense
])
def test_app_message_for_wrong_flow_rejected(est, change, counter):
    est.app_msg(0, lib.TAS_QE_TX, bump_len=10, **change)
    assert est.region.stats()[counter] == 1
    assert est.out() == []


def test_app_tx_bump_beyond_buffer_rejected(est):
    est.app_msg(0, lib.TAS_QE_TX, bump_len=(1 << 16) + 1)
    assert est.region.stats()["app_bad_msgs"] == 1 and est.out() == []


def test_app_rx_freed_more_than_received_rejected(est):
    est.rx(est.peer_segment(payload=b"abc"))
    est.app_msg(0, lib.TAS_QE_RX_FREED, bump_len=4)
    assert est.region.stats()["app_bad_msgs"] == 1
    assert est.flow().rx_avail == (1 << 16) - 3


def test_app_of_another_id_rejected(rig):
    rig.add_flow()
    rig.flow().app_id  # noqa: B018
    # a second app whose messages name the first app's flow
    rig.worker.attach_ctx(rig.APP_ID, 1)
    rig.app.push(1, lib.TAS_RING_APP2FP, lib.TAS_QE_TX, rig.flow_id(0), 1, bump_len=5)
    rig.poll()
    # same app, other context: allowed (any thread may use any socket)
    assert rig.region.stats()["app_bad_msgs"] == 0


def test_flows_are_independent(rig):
    rig.add_flow(0, remote_port=40000)
    rig.add_flow(1, remote_port=40001)
    rig.rx(rig.peer_segment(0, payload=b"zero"), rig.peer_segment(1, payload=b"one"))
    ups = {u["flow"]: u["rx_bytes"] for u in rig.app_updates()}
    assert ups == {rig.flow_id(0): 4, rig.flow_id(1): 3}


def test_fin_acked_no_second_fin(est):
    est.app_send(0, b"bye")
    est.app_msg(0, lib.TAS_QE_SHUT_WR)
    est.out()
    assert est.rx(est.peer_segment(ack=1001 + 4)) == []  # acks data and FIN: nothing more to send
    est.app_msg(0, lib.TAS_QE_RX_FREED, bump_len=0)
    est.advance(50)
    assert est.out() == []


def test_established_ooo_intervals_full_new_hole_dropped_not_forgotten(est):
    """Intervals once SACKed are never forgotten; a segment that needs one
    more interval is dropped (the peer resends it)."""
    n = lib.TAS_OOO_MAX
    for k in range(n):
        est.rx(est.peer_segment(seq=5001 + 200 * (k + 1), payload=b"z" * 100))
    assert est.flow().ooo_n == n
    est.rx(est.peer_segment(seq=5001 + 200 * (n + 1), payload=b"z" * 100))
    assert est.flow().ooo_n == n and est.flow().ooo_drops == 1
    # filling every hole in order brings in everything that was SACKed
    for k in range(n + 1):
        est.rx(est.peer_segment(seq=5001 + 200 * k, payload=b"a" * 100))
        est.rx(est.peer_segment(seq=5001 + 200 * k + 100, payload=b"b" * 100))
    assert est.flow().rcv_nxt == 5001 + 200 * (n + 1)


def test_flow_slot_reused_while_queued_keeps_the_lists_whole(rig):
    """A flow removed while queued for transmission, its slot reused at once:
    the flows queued behind it still get their turn."""
    rig.add_flow(0, remote_port=40000)
    rig.add_flow(1, remote_port=40001)
    rig.add_flow(2, remote_port=40002)
    # queue 0, 1, 2 for TX in one iteration, remove 1 and reuse its slot in the same one
    for i in (0, 1, 2):
        f = rig.flows[i]
        rig.app.push(0, lib.TAS_RING_APP2FP, lib.TAS_QE_TX, rig.flow_id(i), f["gen"], bump_len=0)
    c = lib.TAS_MSG_FLOW_REMOVE
    from tasd.fastpath.binding import ffi
    cmd = ffi.new("struct tas_flow_cmd *")
    cmd.index, cmd.gen = 1, rig.flows[1]["gen"]
    rig.region.send(c, cmd)
    rig.worker.poll(rig.now)
    rig.events()
    rig.add_flow(1, remote_port=40003)
    for i in (0, 1, 2):
        rig.app_send(i, b"x" * 10)
    sent = {o.seg.dst_port for o in rig.out() if o.payload}
    assert sent == {40000, 40003, 40002}


def test_established_holes_while_sending_segments_shrink_for_sack_blocks(est):
    """Full-size data while SACK blocks ride along: the payload shrinks so the
    frame stays within the MTU (it used to be dropped, and the flow stalled)."""
    est.rx(est.peer_segment(seq=5001 + 100, payload=b"b" * 100))  # a hole: SACK from now on
    est.app_send(0, bytes(3 * MSS))
    out = [o for o in est.out() if o.payload]
    assert out and all(len(o.payload) == MSS - 12 for o in out[:-1])
    assert sum(len(o.payload) for o in out) == 3 * MSS
    assert all(o.seg.option(Sack) for o in out)
    assert est.region.stats()["tx_errors"] == 0


def test_established_tail_loss_probe_before_rto(est):
    """A loss at the tail draws no duplicate ACKs: after two round trips a
    probe resends the last segment (RFC 8985 7), long before the RTO."""
    est.app_send(0, bytes(4 * MSS))
    est.out()
    est.advance(5)
    est.rx(est.peer_segment(ack=1001 + 2 * MSS))  # an RTT sample of 5 ms; the last two segments are lost
    assert est.flow().srtt_us == 5000
    est.advance(9)
    assert est.out() == []
    est.advance(2)  # PTO: 2 * srtt after the ACK
    (probe,) = est.out()
    assert probe.seq == SeqNum(1001 + 3 * MSS) and len(probe.payload) == MSS
    assert est.flow().tlps == 1 and est.events() == []  # no RTO event
    est.advance(20)
    assert est.out() == []  # one probe only


def test_established_tail_loss_probe_one_segment_waits_for_delayed_ack(est):
    """With one segment out the peer may hold its ACK (Linux: up to 40 ms):
    the probe waits that much longer."""
    est.app_send(0, bytes(2 * MSS))
    est.out()
    est.advance(5)
    est.rx(est.peer_segment(ack=1001 + MSS))
    est.advance(49)
    assert est.out() == []
    est.advance(2)  # 2 * srtt + 40 ms
    (probe,) = est.out()
    assert probe.seq == SeqNum(1001 + MSS) and est.flow().tlps == 1


def test_established_limited_transmit_on_first_dupacks(rig):
    rig.add_flow(sack=False)
    rig.app_send(0, bytes(12 * MSS))
    assert len([o for o in rig.out() if o.payload]) == 10  # initial window
    out = rig.rx(rig.peer_segment(ack=1001))  # dupack 1: one new segment beyond cwnd
    assert [int(o.seq) for o in out if o.payload] == [1001 + 10 * MSS]
    out = rig.rx(rig.peer_segment(ack=1001))  # dupack 2: one more
    assert [int(o.seq) for o in out if o.payload] == [1001 + 11 * MSS]


def test_established_tail_loss_probe_sends_two_new_segments(est):
    """With data waiting, the probe is two new segments: a delayed-ACK
    receiver answers two at once, whether the tail or its ACK was lost."""
    est.app_send(0, bytes(30 * MSS))
    assert len([o for o in est.out() if o.payload]) == 10
    est.advance(5)
    out = est.rx(est.peer_segment(ack=1001 + MSS))  # srtt 5 ms; slow start opens two more
    assert [(int(o.seq) - 1001) // MSS for o in out if o.payload] == [10, 11]
    est.advance(11)  # PTO: 2 * srtt
    probe = [(int(o.seq) - 1001) // MSS for o in est.out() if o.payload]
    assert probe == [12, 13] and est.flow().tlps == 1


def sack_of(*segs):
    """SACK blocks for segment index ranges [a, b) of MSS-sized segments from 1001."""
    return Sack(tuple((SeqNum(1001 + a * MSS), SeqNum(1001 + b * MSS)) for a, b in segs))


def sent(out):
    return [(int(o.seq) - 1001) // MSS for o in out if o.payload]


def test_established_sack_recovery_lost_retransmission_found_by_time(est):
    """RACK (RFC 8985): a retransmission is lost once data sent after it is
    SACKed and a round trip plus a reordering window have passed -- no need
    to wait for three segments' worth, which a small window may never send."""
    est.app_send(0, bytes(30 * MSS))
    est.out()
    out = []
    for k in (2, 3, 4):  # segment 0 lost; limited transmit sends 10 and 11
        out += est.rx(est.peer_segment(ack=1001, options=(sack_of((1, k)),)))
    assert sent(out) == [10, 11, 0] and est.flow().fl & lib.TAS_FL_RECOVERY  # fast retransmit
    out = est.rx(est.peer_segment(ack=1001, options=(sack_of((1, 12)),)))  # the pipe drains: new data
    assert sent(out)[0] == 12
    # the retransmission of 0 is lost too; segment 12, sent after it, arrives
    assert 0 not in sent(est.rx(est.peer_segment(ack=1001, options=(sack_of((1, 13)),))))
    assert est.flow().lost_rexmits == 0
    est.advance(3)  # srtt (none yet: 1 ms) + reordering window (1 ms), a timer tick late
    assert 0 in sent(est.out())
    assert est.flow().lost_rexmits == 1


def test_established_sack_recovery_probe_when_acks_stop(est):
    """In recovery with everything else SACKed, the ACK of the resent head
    (or the resend itself) lost: a probe resends it before the RTO."""
    est.app_send(0, bytes(5 * MSS))
    est.out()
    est.advance(5)
    est.rx(est.peer_segment(ack=1001 + MSS))  # srtt 5 ms
    out = []
    for k in (2, 3, 4, 5):  # segment 1 lost, 2-4 SACKed
        out += est.rx(est.peer_segment(ack=1001 + MSS, options=(sack_of((2, k)),)))
    assert 1 in sent(out) and est.flow().fl & lib.TAS_FL_RECOVERY
    est.advance(9)
    assert sent(est.out()) == []
    est.advance(3)  # PTO: 2 * srtt, far sooner than the RTO
    assert sent(est.out()) == [1]
    assert est.flow().tlps == 1 and est.events() == []

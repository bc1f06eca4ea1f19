"""One TCP connection as the slowpath keeps it.

The slowpath runs the handshake itself (SYN_SENT, SYN_RECEIVED: RFC 9293
§3.10.7.3–4 with RFC 5961 and RFC 7323) and, once the flow is installed in a
worker, only follows the state names that the worker's flow events imply
(`FLOW_TRANSITIONS`); the worker has the sequence numbers from then on.

A `Connection` sends its own segments through its `ConnHost` (the stack) and
tells the stack the outcome of a segment; the stack keeps the tables, the
listeners, the flow lifecycle and the notifications to owners.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto
from typing import Callable, Hashable, NamedTuple

from tasd.wire import SeqNum, TcpFlags, TcpSegment, Timestamps

from .actions import FlowParams
from .addr import FourTuple
from .config import TcpConfig
from .isn import tsval
from .options import (ECN_SETUP_SYN, ECN_SETUP_SYNACK, Agreed, SynOptions, agree,
                      is_ecn_setup_syn, is_ecn_setup_synack, syn_options)
from .rto import PersistBackoff, RetransmitBackoff, backed_off, initial_rto
from .timewait import ts_before


class State(Enum):
    """RFC 9293 §3.3.2. LISTEN belongs to listeners, TIME_WAIT to the TIME_WAIT
    table once the flow is gone; a Connection passes through both names."""

    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"


# What each fastpath flow event does to an installed connection (RFC 9293 Figure 5).
FLOW_TRANSITIONS: dict[tuple[str, State], State] = {
    ("fin_sent", State.ESTABLISHED): State.FIN_WAIT_1,
    ("fin_sent", State.CLOSE_WAIT): State.LAST_ACK,
    ("fin_received", State.ESTABLISHED): State.CLOSE_WAIT,
    ("fin_received", State.FIN_WAIT_1): State.CLOSING,
    ("fin_received", State.FIN_WAIT_2): State.TIME_WAIT,
    ("fin_acked", State.FIN_WAIT_1): State.FIN_WAIT_2,
    ("fin_acked", State.CLOSING): State.TIME_WAIT,
    ("fin_acked", State.LAST_ACK): State.CLOSED,
}


class Outcome(Enum):
    """What a handshake segment did, for the stack to act on."""

    NONE = auto()           # nothing the stack needs to do
    ESTABLISHED = auto()    # handshake complete: install the flow
    RESET = auto()          # acceptable RST: the connection is dead
    REPLAY = auto()         # completes the handshake of a flow installed early: its worker's


class ConnHost(NamedTuple):
    """The stack as a connection sees it."""

    cfg: TcpConfig
    send: Callable[[Connection, TcpSegment], None]
    challenge_ack: Callable[[Connection, float], None]
    count: Callable[[str], None]


@dataclass
class Keepalive:
    """RFC 9293 §3.8.4 / RFC 1122 4.2.3.6 settings and probe state."""

    on: bool
    idle: float
    intvl: float
    cnt: int
    probes: int = 0                     # unanswered probes
    first_probe_at: float | None = None
    query_pending: bool = False


def _ts_of(seg: TcpSegment) -> Timestamps | None:
    return seg.option(Timestamps)


class Connection:
    def __init__(self, host: ConnHost, conn_id: int, key: FourTuple, owner: Hashable, *,
                 passive: bool, iss: SeqNum, ts_offset: int, listener_id: int | None = None,
                 cookie: object = None) -> None:
        cfg = host.cfg
        self.host = host
        self.cfg = cfg
        self.id = conn_id
        self.key = key
        self.owner = owner
        self.cookie = cookie
        self.listener_id = listener_id
        self.passive = passive
        self.state = State.CLOSED

        self.iss = iss
        self.irs = SeqNum(0)
        self.snd_una = iss
        self.snd_nxt = iss
        self.rcv_nxt = SeqNum(0)
        self.snd_wnd = 0
        self.snd_wl1 = SeqNum(0)
        self.snd_wl2 = SeqNum(0)
        self.peer: SynOptions | None = None
        self.agreed: Agreed | None = None
        self.ecn_requested = False      # our SYN asked for ECN
        self.ecn = False
        self.ts_offset = ts_offset
        self.ts_recent = 0
        self.last_oow_ack = float("-inf")

        # Handshake (re)transmission.
        self.first_sent_at: float | None = None
        self.retransmits = 0            # by the timer
        self.resent = False             # any second copy of our SYN (Karn)
        self.rtx_at: float | None = None

        # After the handshake.
        self.rto = cfg.rto_initial
        self.srtt: float | None = None
        self.rttvar: float | None = None
        self.installed = False          # InstallFlow sent, flow_removed not yet seen
        self.early = False              # installed with the SYN-ACK: the worker establishes it
        self.removing = False           # RemoveFlow sent
        self.done = False               # nothing left on the network
        self.rtx_backoff = RetransmitBackoff()
        self.persist = PersistBackoff()
        self.user_timeout: float | None = None
        self.keepalive = Keepalive(False, cfg.keepalive_time, cfg.keepalive_intvl,
                                   cfg.keepalive_probes)
        self.fw2_at: float | None = None
        self.ka_at: float | None = None

        # The owner's side.
        self.app_handle = not passive   # the owner knows this conn id
        self.app_closed = False

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.state.name} {self.key}>"

    # --- segments we build ---------------------------------------------------

    def tsval(self, now: float) -> int:
        return tsval(now, self.ts_offset)

    @property
    def timestamps(self) -> bool:
        return self.agreed is not None and self.agreed.timestamps

    def _window_field(self, syn: bool) -> int:
        """RFC 7323 §2.2: the window of a SYN or SYN-ACK is never scaled."""
        if self.agreed is None:
            return min(self.cfg.rcv_wnd, 65535)
        if syn:
            return min(self.agreed.rcv_wnd, 65535)
        return min(self.agreed.rcv_wnd >> self.agreed.rcv_wscale, 65535)

    def syn_segment(self, now: float) -> TcpSegment:
        """Our SYN (SYN_SENT) or SYN-ACK (SYN_RECEIVED), first copy or again."""
        if self.state is State.SYN_SENT:
            flags = TcpFlags.SYN
            # RFC 3168 §6.1.1.1 allows, and Linux (tcp_ecn_fallback) does, sending
            # a retransmitted SYN without ECN setup, in case a middlebox drops them.
            if self.ecn_requested and not self.retransmits:
                flags |= ECN_SETUP_SYN
            return TcpSegment(self.key.local_port, self.key.remote_port, seq=self.iss,
                              flags=flags, window=self._window_field(True),
                              options=syn_options(self.cfg, self.tsval(now)))
        flags = TcpFlags.SYN | TcpFlags.ACK
        if self.ecn:
            flags |= ECN_SETUP_SYNACK
        return TcpSegment(self.key.local_port, self.key.remote_port, seq=self.iss,
                          ack=self.rcv_nxt, flags=flags, window=self._window_field(True),
                          options=syn_options(self.cfg, self.tsval(now), self.ts_recent,
                                              self.peer))

    def ack_segment(self, now: float) -> TcpSegment:
        """<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>: handshake ACK, challenge ACK, and
        the answer to an unacceptable segment."""
        options = (Timestamps(self.tsval(now), self.ts_recent),) if self.timestamps else ()
        return TcpSegment(self.key.local_port, self.key.remote_port, seq=self.snd_nxt,
                          ack=self.rcv_nxt, flags=TcpFlags.ACK,
                          window=self._window_field(False), options=options)

    def rst_segment(self) -> TcpSegment:
        """Our RST for a connection the peer knows: <SEQ=SND.NXT><CTL=RST>, with
        ACK=RCV.NXT as Linux sends it (a peer still in SYN-SENT only accepts a RST
        that acknowledges its SYN)."""
        return TcpSegment(self.key.local_port, self.key.remote_port, seq=self.snd_nxt,
                          ack=self.rcv_nxt, flags=TcpFlags.RST | TcpFlags.ACK)

    # --- opening -------------------------------------------------------------

    def open_active(self, now: float) -> None:
        """CLOSED → SYN_SENT: send <SEQ=ISS><CTL=SYN> with our options."""
        self.state = State.SYN_SENT
        self.ecn_requested = self.cfg.ecn
        self.snd_nxt = self.iss + 1
        self._send_syn(now)

    def open_passive(self, syn: TcpSegment, now: float) -> None:
        """LISTEN + SYN → SYN_RECEIVED: send <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>.
        Data on the SYN is not acknowledged (Linux, without TCP Fast Open): the
        peer sends it again."""
        self.state = State.SYN_RECEIVED
        self._take_peer_syn(syn)
        self.ecn = self.cfg.ecn and is_ecn_setup_syn(syn.flags)
        self.snd_nxt = self.iss + 1
        self._send_syn(now)

    def _take_peer_syn(self, syn: TcpSegment) -> None:
        self.irs = syn.seq
        self.rcv_nxt = syn.seq + 1
        self.snd_wnd = syn.window
        self.peer = SynOptions.of(syn)
        self.agreed = agree(self.cfg, self.peer)
        if self.agreed.timestamps:
            self.ts_recent = self.peer.tsval or 0

    def _send_syn(self, now: float) -> None:
        if self.first_sent_at is None:
            self.first_sent_at = now
            self.rtx_at = now + self.cfg.rto_initial
        self.host.send(self, self.syn_segment(now))

    def on_rtx_timer(self, now: float) -> bool:
        """The SYN or SYN-ACK went unanswered: send it again with the timeout
        doubled (1, 2, 4 … s), or return False when the retries are spent
        (syn_retries for our SYN, synack_retries for a SYN-ACK to a SYN that
        reached a listener)."""
        limit = self.cfg.synack_retries if self.passive else self.cfg.syn_retries
        self.rtx_at = None
        if self.retransmits >= limit:
            return False
        self.retransmits += 1
        self.resent = True
        self.host.count("synack_retransmits" if self.state is State.SYN_RECEIVED
                        else "syn_retransmits")
        self.host.send(self, self.syn_segment(now))
        self.rtx_at = now + backed_off(self.cfg.rto_initial, self.retransmits, self.cfg)
        return True

    # --- handshake segments --------------------------------------------------

    def on_segment(self, seg: TcpSegment, now: float, may_establish: bool = True) -> Outcome:
        """A segment for this connection in SYN_SENT or SYN_RECEIVED. With
        `may_establish` False (the listener's accept queue is full) a segment that
        would complete the handshake is dropped instead."""
        if self.state is State.SYN_SENT:
            return self._on_syn_sent(seg, now)
        if self.state is State.SYN_RECEIVED:
            return self._on_syn_received(seg, now, may_establish)
        raise AssertionError(f"handshake segment in {self.state}")

    def _on_syn_sent(self, seg: TcpSegment, now: float) -> Outcome:
        """RFC 9293 §3.10.7.3."""
        flags = seg.flags
        rst = TcpFlags.RST in flags
        if TcpFlags.ACK in flags:
            # Acceptable iff ISS < SEG.ACK =< SND.NXT, i.e. it acknowledges our SYN.
            if seg.ack != self.snd_nxt or self._bad_synack_echo(seg, now):
                if not rst:
                    self.host.send(self, TcpSegment(
                        self.key.local_port, self.key.remote_port, seq=seg.ack,
                        flags=TcpFlags.RST))
                return Outcome.NONE
            if rst:
                return Outcome.RESET            # connection refused
        elif rst:
            return Outcome.NONE                 # a RST must acknowledge our SYN
        if TcpFlags.SYN not in flags:
            return Outcome.NONE
        self._take_peer_syn(seg)
        if TcpFlags.ACK in flags:
            # SYN-ACK. Its data and FIN are not taken (as Linux without Fast
            # Open): the peer sends them again.
            self.snd_una = seg.ack
            self.snd_wl1, self.snd_wl2 = seg.seq, seg.ack
            self.ecn = self.ecn_requested and is_ecn_setup_synack(flags)
            self._establish(seg, now)
            self.host.send(self, self.ack_segment(now))
            return Outcome.ESTABLISHED
        # Simultaneous open: SYN_RECEIVED, send <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>;
        # the retransmission timer runs on, now for the SYN-ACK.
        self.state = State.SYN_RECEIVED
        self.ecn = self.ecn_requested and is_ecn_setup_syn(flags)
        self.resent = True          # a second copy of our SYN: no RTT by the clock
        self.host.send(self, self.syn_segment(now))
        return Outcome.NONE

    def _bad_synack_echo(self, seg: TcpSegment, now: float) -> bool:
        """Linux (PAWSActiveRejected): a SYN-ACK whose TSecr echoes no TSval we
        can have sent between our first SYN and now is forged or stale."""
        ts = _ts_of(seg)
        if (not self.cfg.timestamps or ts is None or not ts.tsecr
                or self.first_sent_at is None):
            return False
        first = self.tsval(self.first_sent_at)
        return (ts.tsecr - first) & 0xFFFFFFFF > (self.tsval(now) - first) & 0xFFFFFFFF

    def _acceptable(self, seg: TcpSegment) -> bool:
        """RFC 9293 §3.10.7.4 first check, against the window our SYN-ACK
        announced, plus PAWS (RFC 7323 §5.3, RSTs exempt as in Linux)."""
        ts = _ts_of(seg)
        if (self.timestamps and ts is not None and TcpFlags.RST not in seg.flags
                and ts_before(ts.tsval, self.ts_recent)):
            return False
        wnd = self._window_field(True)
        length = seg.seq_len
        start = seg.seq - self.rcv_nxt
        if length == 0:
            return start == 0 if wnd == 0 else 0 <= start < wnd
        if wnd == 0:
            return False
        return 0 <= start < wnd or 0 <= start + length - 1 < wnd

    def _on_syn_received(self, seg: TcpSegment, now: float, may_establish: bool) -> Outcome:
        """RFC 9293 §3.10.7.4 in SYN-RECEIVED, with RFC 5961 §3–4."""
        flags = seg.flags
        syn, ack, rst = (TcpFlags.SYN in flags, TcpFlags.ACK in flags, TcpFlags.RST in flags)
        if syn and not ack and not rst and seg.seq == self.irs:
            # The peer's SYN again: our SYN-ACK was lost. Send it again (Linux).
            ts = _ts_of(seg)
            if self.timestamps and ts is not None and not ts_before(ts.tsval, self.ts_recent):
                self.ts_recent = ts.tsval
            self.resent = True
            self.host.count("synack_retransmits")
            self.host.send(self, self.syn_segment(now))
            return Outcome.NONE
        # Linux: after a simultaneous open the peer's SYN-ACK (its SYN again, now
        # acknowledging ours) completes the handshake although its seq is below
        # RCV.NXT; RFC 793 Figure 8 line 6.
        simultaneous_synack = (not self.passive and syn and ack and not rst
                               and seg.seq == self.irs and seg.ack == self.snd_nxt)
        if not simultaneous_synack:
            if not self._acceptable(seg):
                if not rst:
                    self._oow_ack(seg, now)
                return Outcome.NONE
            if rst:
                # RFC 5961 §3.2: only a RST at exactly RCV.NXT is taken.
                if seg.seq == self.rcv_nxt:
                    return Outcome.RESET
                self.host.challenge_ack(self, now)
                return Outcome.NONE
            if syn:
                self.host.challenge_ack(self, now)      # RFC 5961 §4.2
                return Outcome.NONE
        if not ack:
            return Outcome.NONE
        if seg.ack != self.snd_nxt:
            # SND.UNA < SEG.ACK =< SND.NXT fails: <SEQ=SEG.ACK><CTL=RST>.
            self.host.send(self, TcpSegment(self.key.local_port, self.key.remote_port,
                                            seq=seg.ack, flags=TcpFlags.RST))
            return Outcome.NONE
        if self.early:
            # the flow waits in its worker, which takes this segment (it may
            # have come before the worker had the flow)
            return Outcome.REPLAY
        if not may_establish:
            # Linux with tcp_abort_on_overflow=0: ignore the ACK; our SYN-ACK
            # timer makes the peer send it again.
            self.host.count("listen_overflows")
            return Outcome.NONE
        self.snd_una = seg.ack
        self.snd_wnd = seg.window if syn else seg.window << self.agreed.snd_wscale
        self.snd_wl1, self.snd_wl2 = seg.seq, seg.ack
        ts = _ts_of(seg)
        if self.timestamps and ts is not None:
            self.ts_recent = ts.tsval
        self._establish(seg, now)
        return Outcome.ESTABLISHED

    def _oow_ack(self, seg: TcpSegment, now: float) -> None:
        """The ACK that answers an unacceptable segment; those of bare ACKs and
        SYNs limited to one per invalid_ratelimit (Linux tcp_oow_rate_limited)."""
        if seg.seq_len == 0 or TcpFlags.SYN in seg.flags:
            if now - self.last_oow_ack < self.cfg.invalid_ratelimit:
                return
            self.last_oow_ack = now
        self.host.send(self, self.ack_segment(now))

    def _establish(self, seg: TcpSegment, now: float) -> None:
        sample = self._handshake_rtt(seg, now)
        self.rto, self.srtt, self.rttvar = initial_rto(sample, self.retransmits > 0, self.cfg)
        self.state = State.ESTABLISHED
        self.rtx_at = None

    def _handshake_rtt(self, seg: TcpSegment, now: float) -> float | None:
        """RTT of the handshake: by the clock if our SYN (or SYN-ACK) left only
        once (Karn's rule), else from the echoed timestamp, which names the copy
        that was answered (RFC 7323 §4)."""
        if not self.resent and self.first_sent_at is not None:
            return max(now - self.first_sent_at, 0.0)
        ts = _ts_of(seg)
        if self.timestamps and ts is not None and ts.tsecr:
            ms = (self.tsval(now) - ts.tsecr) & 0xFFFFFFFF
            if ms <= self.cfg.rto_max * 1000:
                return ms / 1000
        return None

    def flow_params(self) -> FlowParams:
        """For InstallFlow: once established, or in SYN_RECEIVED with its
        SYN-ACK sent (early install: sequence state before the ACK)."""
        a = self.agreed
        return FlowParams(
            local_ip=self.key.local_ip, local_port=self.key.local_port,
            remote_ip=self.key.remote_ip, remote_port=self.key.remote_port,
            owner=self.owner, iss=self.iss, irs=self.irs, snd_una=self.snd_una,
            snd_nxt=self.snd_nxt, rcv_nxt=self.rcv_nxt, snd_wnd=self.snd_wnd,
            snd_wl1=self.snd_wl1, snd_wl2=self.snd_wl2, snd_wscale=a.snd_wscale,
            rcv_wscale=a.rcv_wscale, rcv_wnd=a.rcv_wnd, mss=a.mss,
            timestamps=a.timestamps, ts_recent=self.ts_recent if a.timestamps else 0,
            ts_offset=self.ts_offset, sack=a.sack, ecn=self.ecn, rto=self.rto,
            srtt=self.srtt, rttvar=self.rttvar, passive=self.passive,
            syn_received=self.state is State.SYN_RECEIVED)

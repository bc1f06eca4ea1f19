"""`TcpStack`: the slowpath's TCP for one local address, sans-I/O.

Inputs are method calls carrying `now` (seconds on the clock the fastpath shares);
outputs are actions (see `actions.py`), drained with `take_actions()`. Nothing
here reads a clock, draws randomness other than from the injected `rng`, or does
I/O. `poll(now)` runs timers; `poll_at()` says when it next needs to run.

Who handles a segment that reaches the slowpath, in order:
1. a connection with its 4-tuple: the handshake (SYN_SENT, SYN_RECEIVED, also
   when its flow was installed with the SYN-ACK: then the segment completing
   it is replayed to the worker, which establishes), or a replay into its
   worker if its flow is installed (the worker had not got the InstallFlow yet
   when the segment came in); dropped while the flow is being removed (the
   peer will send again);
2. a TIME_WAIT entry (timewait.py);
3. a listener on the port (RFC 9293 §3.10.7.2);
4. nothing: RFC 9293 §3.10.7.1, a RST unless the segment is one.
"""

from __future__ import annotations

import itertools
from collections import Counter
from ipaddress import IPv4Address
from typing import Hashable

from tasd.wire import Ecn, SeqNum, TcpFlags, TcpSegment

from .actions import (Accepted, Action, Closed, ConnectFailed, Connected, FlowSnapshot,
                      InstallFlow, ListenerClosed, Probe, QueryActivity, RemoveFlow,
                      ReplaySegment, Reset, Retransmit, SendSegment)
from .addr import FourTuple, is_unicast
from .config import TcpConfig
from .conn import FLOW_TRANSITIONS, Connection, ConnHost, Outcome, State
from .errors import TcpError
from .isn import KeyedHash
from .listener import Listener
from .ports import EphemeralPorts
from .ratelimit import ChallengeAckLimiter
from .rto import snapshot_rto
from .timers import Timers
from .timewait import TimeWait, TwVerdict

# Counters, all cumulative. resets_sent includes the RSTs we ask workers to send
# (RemoveFlow with rst); time_wait counts entries made (gauges() has the current
# number).
STAT_NAMES = (
    "segments_received", "segments_dropped", "segments_replayed",
    "active_opens", "passive_opens", "syn_rcvd", "syn_dropped_backlog",
    "listen_overflows", "syn_retransmits", "synack_retransmits",
    "connect_timeouts", "synack_timeouts", "connects_refused",
    "resets_sent", "resets_received", "challenge_acks", "challenge_acks_suppressed",
    "timeouts", "timeout_aborts", "persist_timeouts", "keepalive_probes",
    "keepalive_aborts", "fin_wait_2_timeouts",
    "time_wait", "time_wait_acks", "time_wait_killed", "time_wait_reused",
    "flows_lost", "stale_events", "unexpected_events", "early_installs", "early_declined",
    "established_in_worker",
)

# Timer kinds: the connection attribute holding each deadline.
_CONN_TIMERS = {"rtx": "rtx_at", "fw2": "fw2_at", "ka": "ka_at"}


class TcpStack:
    def __init__(self, local_ip: IPv4Address, *, secret: bytes, rng,
                 config: TcpConfig = TcpConfig()) -> None:
        self.local_ip = IPv4Address(local_ip)
        self.config = config
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)
        self._hash = KeyedHash(secret)
        self._ports = EphemeralPorts(config.ephemeral_ports, self._hash)
        self._challenge = ChallengeAckLimiter(config.challenge_ack_limit, rng)
        self._host = ConnHost(config, self._conn_send, self._challenge_ack, self._count)
        self._timers = Timers()
        self._actions: list[Action] = []
        self._conns: dict[int, Connection] = {}
        self._by_tuple: dict[FourTuple, Connection] = {}
        self._listeners: dict[int, Listener] = {}
        self._by_port: dict[int, list[Listener]] = {}
        self._tw: dict[FourTuple, TimeWait] = {}
        self._active_ports: Counter[int] = Counter()
        self._conn_ids = itertools.count(1)
        self._listener_ids = itertools.count(1)
        self._now = 0.0

    # --- outputs -----------------------------------------------------------------

    def reconfigure(self, config: TcpConfig) -> None:
        """Settings for connections made from now on; those that exist keep
        theirs. The ephemeral port range stays as it was at start."""
        self.config = config
        self._host = self._host._replace(cfg=config)

    def take_actions(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    def poll_at(self) -> float | None:
        return self._timers.next_deadline()

    # --- introspection (tests, tasctl) ------------------------------------------

    def state(self, conn_id: int) -> State | None:
        conn = self._conns.get(conn_id)
        return conn.state if conn is not None else None

    def connection(self, conn_id: int) -> Connection | None:
        return self._conns.get(conn_id)

    def find(self, key: FourTuple) -> Connection | None:
        """The connection that segments of `key` reach, if any."""
        return self._by_tuple.get(key)

    def time_wait(self, key: FourTuple) -> TimeWait | None:
        return self._tw.get(key)

    def gauges(self) -> dict[str, int]:
        return {"connections": len(self._conns), "listeners": len(self._listeners),
                "time_wait": len(self._tw),
                "syn_received": sum(len(l.syn_received) for l in self._listeners.values()),
                "accept_queue": sum(len(l.accept_queue) for l in self._listeners.values())}

    # --- listeners ---------------------------------------------------------------

    def listen(self, owner: Hashable, port: int, backlog: int, *, reuseport: bool = False) -> int:
        """A listener on `port`; raises TcpError EINVAL (bad port or backlog) or
        EADDRINUSE: the port has a listener and not both use reuseport, or a
        connection we opened uses it. TIME_WAIT entries do not block it (as if
        SO_REUSEADDR, which servers set). The backlog is capped at somaxconn."""
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise TcpError("EINVAL", f"port {port!r}")
        if not isinstance(backlog, int) or backlog < 0:
            raise TcpError("EINVAL", f"backlog {backlog!r}")
        existing = self._by_port.get(port, [])
        if any(not (lst.reuseport and reuseport) for lst in existing):
            raise TcpError("EADDRINUSE", f"port {port} has a listener")
        if self._active_ports[port]:
            raise TcpError("EADDRINUSE", f"port {port} is bound by a connection")
        lst = Listener(next(self._listener_ids), owner, port,
                       min(backlog, self.config.somaxconn), reuseport)
        self._listeners[lst.id] = lst
        self._by_port.setdefault(port, []).append(lst)
        return lst.id

    def unlisten(self, listener_id: int, now: float) -> None:
        """Close a listener. Its SYN_RECEIVED connections are reset (RST to the
        peer), its undelivered established ones reset by their worker."""
        self._tick(now)
        lst = self._listener(listener_id)
        del self._listeners[listener_id]
        group = self._by_port[lst.port]
        group.remove(lst)
        if not group:
            del self._by_port[lst.port]
        for conn_id in sorted(lst.syn_received):
            conn = self._conns[conn_id]
            if conn.state is State.SYN_RECEIVED:  # (not one already ending through its flow)
                self._conn_send(conn, conn.rst_segment())
                self._end_handshake(conn)
        for conn in list(lst.accept_queue):
            conn.state = State.CLOSED
            self._remove_flow(conn, rst=True)
        lst.accept_queue.clear()
        lst.syn_received.clear()
        self._emit(ListenerClosed(lst.owner, lst.id))

    def accept_credit(self, listener_id: int, n: int) -> None:
        """The owner can take `n` more connections (Accepted actions)."""
        if not isinstance(n, int) or n < 0:
            raise TcpError("EINVAL", f"credit {n!r}")
        lst = self._listener(listener_id)
        lst.credit += n
        self._deliver(lst)

    def withdraw_credit(self, listener_id: int, n: int) -> None:
        """Credit given for a taker that is gone (a process of the owner that
        died): connections beyond the rest wait in the accept queue."""
        lst = self._listeners.get(listener_id)
        if lst is not None:
            lst.credit = max(0, lst.credit - n)

    # --- active open ---------------------------------------------------------------

    def connect(self, owner: Hashable, dst: IPv4Address, dst_port: int, now: float, *,
                src_port: int = 0, cookie=None) -> int:
        """Open a connection: SYN_SENT, SYN sent. Raises TcpError EINVAL (bad
        address or port), EADDRINUSE (`src_port` taken by a listener, or the
        4-tuple by a connection or TIME_WAIT entry) or EADDRNOTAVAIL (no
        ephemeral port left for this destination)."""
        self._tick(now)
        dst = IPv4Address(dst)
        if not is_unicast(dst) or not isinstance(dst_port, int) or not 1 <= dst_port <= 65535:
            raise TcpError("EINVAL", f"destination {dst}:{dst_port}")
        if not isinstance(src_port, int) or not 0 <= src_port <= 65535:
            raise TcpError("EINVAL", f"source port {src_port!r}")
        key = FourTuple(self.local_ip, src_port, dst, dst_port)
        if src_port:
            if not self._port_usable(key):
                raise TcpError("EADDRINUSE", f"{key} is in use")
        else:
            port = self._ports.allocate(
                key, lambda p: self._port_usable(key._replace(local_port=p)))
            if port is None:
                raise TcpError("EADDRNOTAVAIL", f"no ephemeral port left for {dst}:{dst_port}")
            key = key._replace(local_port=port)
        conn = self._new_conn(key, owner, passive=False, iss=self._hash.isn(key, now),
                              cookie=cookie)
        self._active_ports[key.local_port] += 1
        self._count("active_opens")
        conn.open_active(now)
        self._arm(conn)
        return conn.id

    def _port_usable(self, key: FourTuple) -> bool:
        return (key.local_port not in self._by_port and key not in self._by_tuple
                and key not in self._tw)

    # --- the owner ends a connection -------------------------------------------

    def close(self, conn_id: int, now: float) -> None:
        """The owner is done with the connection (its FIN, if any, is the
        worker's). Before the flow exists: SYN_SENT is dropped silently (Linux);
        SYN_RECEIVED (after a simultaneous open) is reset, where Linux and RFC
        9293 would send a FIN: without a flow we have no data path to finish on.
        An installed flow goes on; in FIN_WAIT_2 the fin_timeout starts. `Closed`
        follows once the connection is gone."""
        self._tick(now)
        conn = self._owned(conn_id)
        conn.app_closed = True
        if conn.installed:
            if conn.state is State.FIN_WAIT_2 and not conn.removing:
                conn.fw2_at = now + self.config.fin_timeout
                self._arm(conn)
            return
        self._drop_unsynchronized(conn)

    def abort(self, conn_id: int, now: float) -> None:
        """Reset the connection now: SO_LINGER 0, or the owner went away, or the
        driver cannot run the flow it was asked to install. Unlike close(), this
        takes any connection the stack knows: one the owner already closed (an
        orphan still finishing; its buffers are about to go), or one not yet
        delivered (then it leaves the accept queue and nobody is told). Only an
        unknown id is EBADF."""
        self._tick(now)
        conn = self._conns.get(conn_id)
        if conn is None:
            raise TcpError("EBADF", f"no connection {conn_id!r}")
        if not conn.app_handle:
            self._leave_accept_queue(conn)
        if conn.app_closed and (conn.done or conn.removing):
            return                  # already on its way out; Closed follows or came
        conn.app_closed = True
        if conn.installed:
            if not conn.removing:
                conn.state = State.CLOSED
                self._remove_flow(conn, rst=True)
            return
        self._drop_unsynchronized(conn)

    def _drop_unsynchronized(self, conn: Connection) -> None:
        """close/abort of a connection without a flow. In SYN_SENT the peer has
        at most our SYN: no RST (Linux; its SYN-ACK will meet one)."""
        if conn.state is State.SYN_RECEIVED:
            self._conn_send(conn, conn.rst_segment())
        if not conn.done:
            conn.state = State.CLOSED
        self._finish(conn)

    # --- per-connection options ---------------------------------------------------

    def set_user_timeout(self, conn_id: int, seconds: float | None) -> None:
        """TCP_USER_TIMEOUT (RFC 9293 §3.8.3): give up on unacknowledged data,
        unanswered zero-window probes or keepalives after `seconds`, instead of
        counting retries. None or 0 restores the retry counts."""
        conn = self._owned(conn_id)
        if seconds is not None and seconds < 0:
            raise TcpError("EINVAL", f"user timeout {seconds!r}")
        conn.user_timeout = seconds or None

    def set_keepalive(self, conn_id: int, on: bool, idle: float | None = None,
                      intvl: float | None = None, cnt: int | None = None, *,
                      now: float | None = None) -> None:
        """SO_KEEPALIVE with TCP_KEEPIDLE/KEEPINTVL/KEEPCNT. The first check comes
        `idle` after `now` (default: the latest time the stack was given) or after
        the flow is installed. See `keepalive_check` for the protocol."""
        conn = self._owned(conn_id)
        for name, value in (("idle", idle), ("intvl", intvl), ("cnt", cnt)):
            if value is not None and value <= 0:
                raise TcpError("EINVAL", f"keepalive {name} {value!r}")
        ka = conn.keepalive
        ka.idle = idle if idle is not None else ka.idle
        ka.intvl = intvl if intvl is not None else ka.intvl
        ka.cnt = cnt if cnt is not None else ka.cnt
        ka.on = bool(on)
        ka.probes, ka.first_probe_at = 0, None
        if now is not None:
            self._tick(now)
        if ka.on and self._live_flow(conn) and not ka.query_pending:
            conn.ka_at = self._now + ka.idle
        elif not ka.on:
            conn.ka_at = None
        self._arm(conn)

    # --- segments ----------------------------------------------------------------

    def segment(self, src: IPv4Address, dst: IPv4Address, seg: TcpSegment, ecn: Ecn,
                now: float) -> None:
        """A segment the fastpath did not handle."""
        self._tick(now)
        self._count("segments_received")
        if (dst != self.local_ip or not is_unicast(src) or seg.src_port == 0
                or seg.dst_port == 0):
            self._count("segments_dropped")
            return
        key = FourTuple(dst, seg.dst_port, src, seg.src_port)
        conn = self._by_tuple.get(key)
        if conn is not None:
            self._conn_segment(conn, src, dst, seg, ecn, now)
            return
        tw = self._tw.get(key)
        if tw is not None:
            self._time_wait_segment(tw, seg, now)
            return
        lst = self._listener_for(key)
        if lst is not None:
            self._listen_segment(lst, key, seg, now)
            return
        self._reset_for(key, seg)

    def _conn_segment(self, conn: Connection, src, dst, seg: TcpSegment, ecn: Ecn,
                      now: float) -> None:
        if conn.installed and conn.state is not State.SYN_RECEIVED:
            if conn.removing:
                self._count("segments_dropped")
            else:
                self._replay(conn, src, dst, seg, ecn)
            return
        if conn.removing:  # installed early, ended before its ACK
            self._count("segments_dropped")
            return
        lst = self._listeners.get(conn.listener_id) if conn.passive else None
        may_establish = lst is None or not lst.accept_queue_full()
        outcome = conn.on_segment(seg, now, may_establish)
        if outcome is Outcome.ESTABLISHED:
            self._established(conn, src, dst, seg, ecn, now)
        elif outcome is Outcome.REPLAY:
            self._replay(conn, src, dst, seg, ecn)
        elif outcome is Outcome.RESET:
            self._count("resets_received")
            if not conn.passive:
                self._count("connects_refused")
                self._notify_connect_failed(conn, "ECONNREFUSED")
            self._end_handshake(conn)
        self._arm(conn)

    def _established(self, conn: Connection, src, dst, seg: TcpSegment, ecn: Ecn,
                     now: float) -> None:
        conn.installed = True
        self._emit(InstallFlow(conn.id, conn.flow_params()))
        # The handshake's last segment may carry data or a FIN: the worker takes
        # it from here. (A SYN-ACK's data was refused: see Connection.)
        if TcpFlags.SYN not in seg.flags and seg.seq_len > 0:
            self._replay(conn, src, dst, seg, ecn)
        self._opened(conn, now)

    def flow_established(self, conn_id: int, snap: FlowSnapshot, now: float) -> None:
        """The worker of a flow installed with its SYN-ACK took the ACK that
        completes the handshake (and went on with what came with it)."""
        self._tick(now)
        conn = self._conns.get(conn_id)
        if conn is None or not conn.early or conn.state is not State.SYN_RECEIVED or conn.removing:
            self._count("stale_events")
            return
        self._count("established_in_worker")
        conn.snd_una = snap.snd_una
        conn.srtt, conn.rttvar = snap.srtt or None, snap.rttvar or None
        conn.state = State.ESTABLISHED
        conn.rtx_at = None
        self._opened(conn, now)
        self._arm(conn)

    def decline_early(self, conn_id: int) -> None:
        """The driver could not install the flow with the SYN-ACK (no MAC
        or slot yet): the connection goes on as without early install (its
        flow installed at the ACK)."""
        conn = self._conns.get(conn_id)
        if conn is not None and conn.early and conn.state is State.SYN_RECEIVED and not conn.removing:
            conn.installed = conn.early = False
            self._count("early_declined")

    def _opened(self, conn: Connection, now: float) -> None:
        """Established, with its flow: to the accept queue, or Connected."""
        if conn.passive:
            self._count("passive_opens")
            lst = self._listeners[conn.listener_id]
            lst.syn_received.discard(conn.id)
            lst.accept_queue.append(conn)
            self._deliver(lst)
        else:
            self._emit(Connected(conn.owner, conn.id, conn.cookie, conn.key.local_port))
        if conn.keepalive.on:
            conn.ka_at = now + conn.keepalive.idle

    def _replay(self, conn: Connection, src, dst, seg: TcpSegment, ecn: Ecn) -> None:
        self._count("segments_replayed")
        self._emit(ReplaySegment(conn.id, src, dst, seg, ecn))

    def _deliver(self, lst: Listener) -> None:
        while lst.credit > 0 and lst.accept_queue:
            conn = lst.accept_queue.popleft()
            lst.credit -= 1
            conn.app_handle = True
            self._emit(Accepted(lst.owner, lst.id, conn.id, conn.key.remote_ip,
                                conn.key.remote_port, conn.key.local_port))

    def _listen_segment(self, lst: Listener, key: FourTuple, seg: TcpSegment, now: float,
                        iss: SeqNum | None = None) -> None:
        """RFC 9293 §3.10.7.2."""
        flags = seg.flags
        if TcpFlags.RST in flags:
            return
        if TcpFlags.ACK in flags:
            self._reset_for(key, seg)
            return
        if TcpFlags.SYN not in flags or TcpFlags.FIN in flags:
            # Linux drops SYN+FIN at a listener.
            self._count("segments_dropped")
            return
        if lst.accept_queue_full() or lst.syn_queue_full(self.config):
            self._count("syn_dropped_backlog")
            return
        conn = self._new_conn(key, lst.owner, passive=True,
                              iss=iss if iss is not None else self._hash.isn(key, now),
                              listener_id=lst.id)
        lst.syn_received.add(conn.id)
        self._count("syn_rcvd")
        conn.open_passive(seg, now)
        if self.config.early_install and len(lst.syn_received) <= self.config.early_install_max:
            self._count("early_installs")
            conn.installed = conn.early = True
            self._emit(InstallFlow(conn.id, conn.flow_params()))
        self._arm(conn)

    def _listener_for(self, key: FourTuple) -> Listener | None:
        group = self._by_port.get(key.local_port)
        if not group:
            return None
        return group[0] if len(group) == 1 else group[self._hash.pick(key, len(group))]

    def _reset_for(self, key: FourTuple, seg: TcpSegment) -> None:
        """RFC 9293 §3.10.7.1: never a RST for a RST; <SEQ=SEG.ACK><CTL=RST> for
        a segment with ACK, else <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>."""
        if TcpFlags.RST in seg.flags:
            return
        if TcpFlags.ACK in seg.flags:
            rst = TcpSegment(key.local_port, key.remote_port, seq=seg.ack, flags=TcpFlags.RST)
        else:
            rst = TcpSegment(key.local_port, key.remote_port, seq=SeqNum(0),
                             ack=seg.seq + seg.seq_len, flags=TcpFlags.RST | TcpFlags.ACK)
        self._send(key, rst)

    # --- TIME_WAIT -------------------------------------------------------------------

    def _time_wait_segment(self, tw: TimeWait, seg: TcpSegment, now: float) -> None:
        verdict = tw.on_segment(seg, now, self.config)
        if verdict is TwVerdict.KILL:
            self._count("time_wait_killed")
            self._drop_time_wait(tw)
            return
        if verdict is TwVerdict.REUSE:
            lst = self._listener_for(tw.key)
            if lst is not None:
                self._count("time_wait_reused")
                self._drop_time_wait(tw)
                self._listen_segment(lst, tw.key, seg, now, iss=tw.reuse_iss)
                return
            verdict = TwVerdict.ACK     # no listener: answered like any old SYN (Linux)
        if verdict is TwVerdict.ACK:
            self._count("time_wait_acks")
            self._send(tw.key, tw.ack(now))
        self._timers.set(("tw", tw.key), tw.expires)

    def _drop_time_wait(self, tw: TimeWait) -> None:
        del self._tw[tw.key]
        self._timers.cancel(("tw", tw.key))

    def _enter_time_wait(self, conn: Connection, final: FlowSnapshot,
                         ts_recent: int | None, now: float) -> None:
        a = conn.agreed
        if a.timestamps:
            ts_recent = ts_recent if ts_recent is not None else conn.ts_recent
        else:
            ts_recent = None
        tw = TimeWait(conn.key, SeqNum(final.snd_nxt), SeqNum(final.rcv_nxt), ts_recent,
                      conn.ts_offset, min(a.rcv_wnd >> a.rcv_wscale, 65535),
                      now + 2 * self.config.msl)
        self._tw[conn.key] = tw
        self._timers.set(("tw", conn.key), tw.expires)
        self._count("time_wait")

    # --- fastpath flow events ----------------------------------------------------

    def fin_sent(self, conn_id: int, now: float) -> None:
        """Our FIN left (the owner shut down writing)."""
        self._flow_event(conn_id, "fin_sent", now)

    def fin_received(self, conn_id: int, now: float) -> None:
        """The peer's FIN was consumed in order."""
        self._flow_event(conn_id, "fin_received", now)

    def fin_acked(self, conn_id: int, now: float) -> None:
        """The peer acknowledged our FIN."""
        self._flow_event(conn_id, "fin_acked", now)

    def _flow_event(self, conn_id: int, event: str, now: float) -> None:
        self._tick(now)
        conn = self._flow_conn(conn_id)
        if conn is None:
            return
        nxt = FLOW_TRANSITIONS.get((event, conn.state))
        if nxt is None:
            self._count("unexpected_events")
            return
        conn.state = nxt
        if nxt is State.FIN_WAIT_2 and conn.app_closed:
            conn.fw2_at = now + self.config.fin_timeout
        elif nxt in (State.TIME_WAIT, State.CLOSED):
            self._remove_flow(conn, rst=False)
        self._arm(conn)

    def reset_received(self, conn_id: int, now: float) -> None:
        """The worker took an acceptable RST (RFC 5961 checked): CLOSED. The
        owner hears ECONNRESET, or EPIPE in CLOSE_WAIT (Linux tcp_reset)."""
        self._tick(now)
        conn = self._flow_conn(conn_id)
        if conn is None:
            return
        self._count("resets_received")
        errno = "EPIPE" if conn.state is State.CLOSE_WAIT else "ECONNRESET"
        conn.state = State.CLOSED
        self._remove_flow(conn, rst=False)
        self._notify_reset(conn, errno)

    def timeout(self, conn_id: int, kind: str, snap: FlowSnapshot, now: float) -> None:
        """The worker's retransmission ("rto") or persist ("persist") timer
        expired. RFC 6298 §5.5–5.7: back off and retransmit, or give up (RST,
        ETIMEDOUT) after retries2 backoffs (orphan_retries once the owner closed,
        as Linux) or the user timeout."""
        self._tick(now)
        if kind not in ("rto", "persist"):
            raise ValueError(f"timer kind {kind!r}")
        conn = self._flow_conn(conn_id)
        if conn is None:
            return
        cfg = self.config
        limit = min(cfg.retries2, cfg.orphan_retries) if conn.app_closed else cfg.retries2
        base = snapshot_rto(snap.srtt, snap.rttvar, conn.rto, cfg)
        if kind == "rto":
            self._count("timeouts")
            rto = conn.rtx_backoff.expire(base, now, limit, conn.user_timeout, cfg)
            if rto is None:
                self._give_up(conn, "timeout_aborts")
            else:
                self._emit(Retransmit(conn.id, rto))
        else:
            self._count("persist_timeouts")
            nxt = conn.persist.expire(base, snap.last_rx, now, limit, conn.user_timeout, cfg)
            if nxt is None:
                self._give_up(conn, "timeout_aborts")
            else:
                self._emit(Probe(conn.id, "zero_window", nxt))

    def ack_progress(self, conn_id: int, now: float) -> None:
        """New data was acknowledged after a timeout: the backoff episode ends."""
        self._tick(now)
        conn = self._flow_conn(conn_id)
        if conn is not None:
            conn.rtx_backoff.progress()

    def window_opened(self, conn_id: int, now: float) -> None:
        """The peer's zero window opened: zero-window probing ends."""
        self._tick(now)
        conn = self._flow_conn(conn_id)
        if conn is not None:
            conn.persist.window_opened()

    def keepalive_check(self, conn_id: int, last_rx: float, now: float) -> None:
        """The driver's answer to QueryActivity: when the flow last received
        anything. Linux's keepalive timer: probe when idle for `idle`, then every
        `intvl`; a segment from the peer since the first probe resets the count;
        after `cnt` unanswered probes (or the user timeout) RST and ETIMEDOUT."""
        self._tick(now)
        conn = self._flow_conn(conn_id)
        if conn is None or not conn.keepalive.on:
            return
        ka = conn.keepalive
        ka.query_pending = False
        if ka.probes and last_rx >= ka.first_probe_at:
            ka.probes, ka.first_probe_at = 0, None
        idle_for = now - last_rx
        if not ka.probes and idle_for < ka.idle:
            conn.ka_at = last_rx + ka.idle
            self._arm(conn)
            return
        if conn.user_timeout is not None:
            give_up = ka.probes > 0 and idle_for >= conn.user_timeout
        else:
            give_up = ka.probes >= ka.cnt
        if give_up:
            self._give_up(conn, "keepalive_aborts")
            return
        if not ka.probes:
            ka.first_probe_at = now
        ka.probes += 1
        self._count("keepalive_probes")
        self._emit(Probe(conn.id, "keepalive", ka.intvl))
        conn.ka_at = now + ka.intvl
        self._arm(conn)

    def flow_removed(self, conn_id: int, final: FlowSnapshot, ts_recent: int | None,
                     now: float) -> None:
        """The worker has let go of the flow; `final` is its last sequence state,
        `ts_recent` the peer's last TSval (None without timestamps). Ends the
        close, or starts TIME_WAIT with it. A removal we did not ask for (a
        worker lost) aborts the connection: ECONNABORTED."""
        self._tick(now)
        conn = self._conns.get(conn_id)
        if conn is None or not conn.installed:
            self._count("stale_events")
            return
        conn.installed = False
        if not conn.removing:
            self._count("flows_lost")
            conn.state = State.CLOSED
            self._notify_reset(conn, "ECONNABORTED")
        conn.removing = False
        self._finish(conn)
        if conn.state is State.TIME_WAIT:
            self._enter_time_wait(conn, final, ts_recent, now)

    # --- timers -------------------------------------------------------------------

    def poll(self, now: float) -> None:
        self._tick(now)
        while (key := self._timers.pop_due(now)) is not None:
            kind, ident = key
            if kind == "tw":
                self._tw.pop(ident, None)
                continue
            conn = self._conns.get(ident)
            if conn is None:
                continue
            setattr(conn, _CONN_TIMERS[kind], None)
            if kind == "rtx":
                self._rtx_due(conn, now)
            elif kind == "fw2":
                self._fin_wait_2_due(conn)
            else:
                self._keepalive_due(conn)
            self._arm(conn)

    def _rtx_due(self, conn: Connection, now: float) -> None:
        if conn.state not in (State.SYN_SENT, State.SYN_RECEIVED) or conn.done:
            return
        if conn.on_rtx_timer(now):
            return
        if conn.passive:
            self._count("synack_timeouts")     # dropped silently, as Linux
        else:
            self._count("connect_timeouts")
            self._notify_connect_failed(conn, "ETIMEDOUT")
        self._end_handshake(conn)

    def _fin_wait_2_due(self, conn: Connection) -> None:
        """Linux: an orphaned FIN_WAIT_2 lives fin_timeout, then goes silently."""
        if conn.state is State.FIN_WAIT_2 and self._live_flow(conn):
            self._count("fin_wait_2_timeouts")
            conn.state = State.CLOSED
            self._remove_flow(conn, rst=False)

    def _keepalive_due(self, conn: Connection) -> None:
        if conn.keepalive.on and self._live_flow(conn) and not conn.keepalive.query_pending:
            conn.keepalive.query_pending = True
            self._emit(QueryActivity(conn.id))

    def _arm(self, conn: Connection) -> None:
        for kind, attr in _CONN_TIMERS.items():
            self._timers.set((kind, conn.id), None if conn.done else getattr(conn, attr))

    # --- connection lifecycle --------------------------------------------------------

    def _new_conn(self, key: FourTuple, owner: Hashable, *, passive: bool, iss: SeqNum,
                  listener_id: int | None = None, cookie=None) -> Connection:
        conn = Connection(self._host, next(self._conn_ids), key, owner, passive=passive,
                          iss=iss, ts_offset=self._hash.ts_offset(key),
                          listener_id=listener_id, cookie=cookie)
        self._conns[conn.id] = conn
        self._by_tuple[key] = conn
        return conn

    def _remove_flow(self, conn: Connection, rst: bool) -> None:
        if rst:
            self._count("resets_sent")          # sent by the worker
        conn.removing = True
        conn.fw2_at = conn.ka_at = None
        self._arm(conn)
        self._emit(RemoveFlow(conn.id, rst))

    def _end_handshake(self, conn: Connection) -> None:
        """A connection that ends before it is established: gone now, or, if
        its flow was installed with the SYN-ACK, once the worker let it go."""
        conn.state = State.CLOSED
        if not conn.installed:
            self._finish(conn)
        elif not conn.removing:
            self._remove_flow(conn, rst=False)

    def _give_up(self, conn: Connection, stat: str) -> None:
        """Timeouts: RST (the worker sends it), CLOSED, ETIMEDOUT. Linux sends no
        RST after retransmissions run out (only after keepalives); we always do,
        as a peer that can still hear us should not keep a dead connection."""
        self._count(stat)
        conn.state = State.CLOSED
        self._remove_flow(conn, rst=True)
        self._notify_reset(conn, "ETIMEDOUT")

    def _finish(self, conn: Connection) -> None:
        """The connection is off the network (never installed, or flow removed).
        Forget it unless its owner still holds the conn id."""
        conn.done = True
        self._arm(conn)
        if self._by_tuple.get(conn.key) is conn:
            del self._by_tuple[conn.key]
            if not conn.passive:
                self._active_ports[conn.key.local_port] -= 1
                if not self._active_ports[conn.key.local_port]:
                    del self._active_ports[conn.key.local_port]
        lst = self._listeners.get(conn.listener_id) if conn.passive else None
        if lst is not None:
            lst.syn_received.discard(conn.id)
        self._leave_accept_queue(conn)
        if not conn.app_handle:
            del self._conns[conn.id]
        elif conn.app_closed:
            del self._conns[conn.id]
            self._emit(Closed(conn.owner, conn.id))

    def _notify_reset(self, conn: Connection, errno: str) -> None:
        """Tell the owner, if there is one listening; an undelivered connection
        leaves its accept queue instead."""
        if conn.app_handle:
            if not conn.app_closed:
                self._emit(Reset(conn.owner, conn.id, errno))
            return
        self._leave_accept_queue(conn)

    def _leave_accept_queue(self, conn: Connection) -> None:
        lst = self._listeners.get(conn.listener_id) if conn.passive else None
        if lst is not None and not conn.app_handle and conn in lst.accept_queue:  # (delivered: not in it)
            lst.accept_queue.remove(conn)

    def _notify_connect_failed(self, conn: Connection, errno: str) -> None:
        if not conn.app_closed:
            self._emit(ConnectFailed(conn.owner, conn.id, conn.cookie, errno))

    # --- small helpers ---------------------------------------------------------------

    def _tick(self, now: float) -> None:
        self._now = max(self._now, now)

    def _emit(self, action: Action) -> None:
        self._actions.append(action)

    def _count(self, name: str) -> None:
        self.stats[name] += 1

    def _send(self, key: FourTuple, seg: TcpSegment) -> None:
        if TcpFlags.RST in seg.flags:
            self._count("resets_sent")
        self._emit(SendSegment(key.local_ip, key.remote_ip, seg, Ecn.NOT_ECT))

    def _conn_send(self, conn: Connection, seg: TcpSegment) -> None:
        self._send(conn.key, seg)

    def _challenge_ack(self, conn: Connection, now: float) -> None:
        """RFC 5961 §3.2/§4.2, limited host-wide (§7)."""
        if self._challenge.allow(now):
            self._count("challenge_acks")
            self._conn_send(conn, conn.ack_segment(now))
        else:
            self._count("challenge_acks_suppressed")

    def _listener(self, listener_id: int) -> Listener:
        lst = self._listeners.get(listener_id)
        if lst is None:
            raise TcpError("EBADF", f"no listener {listener_id!r}")
        return lst

    def _owned(self, conn_id: int) -> Connection:
        """A connection whose id its owner holds and has not closed."""
        conn = self._conns.get(conn_id)
        if conn is None or not conn.app_handle or conn.app_closed:
            raise TcpError("EBADF", f"no connection {conn_id!r}")
        return conn

    def _live_flow(self, conn: Connection) -> bool:
        return conn.installed and not conn.removing

    def _flow_conn(self, conn_id: int) -> Connection | None:
        """The connection a fastpath event names, if its flow is still live; an
        event that crossed our RemoveFlow is stale and ignored."""
        conn = self._conns.get(conn_id)
        if conn is None or not self._live_flow(conn):
            self._count("stale_events")
            return None
        return conn

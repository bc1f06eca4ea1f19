"""The connection manager: the driver between the sans-I/O TCP (tcp/), the
fastpath workers, the applications and ARP.

Inputs: TCP segments the workers hand over (exceptions), flow events from the
workers, requests from the apps' app2sp rings, apps that go away, and time.
Outputs: frames and commands to workers, answers on the apps' sp2app rings.
Flow indices are the slowpath's to allocate (one free list per worker, with a
generation per slot); flow buffers come from the owning app's region.
"""
from __future__ import annotations

import errno as errno_mod
import logging
from collections import deque
from dataclasses import dataclass
from ipaddress import IPv4Address

from tasd.fastpath.binding import ffi, ipv4_be, lib
from tasd.wire import EthernetFrame, EtherType, IpProtocol, Ipv4Packet, MacAddr, SeqNum, TcpFlags, TcpSegment, as_ipv4

from .apps import App, AppContext, AppRegistry
from .arp import ArpTable
from .tcp import (Accepted, Closed, ConnectFailed, Connected, FlowSnapshot, InstallFlow, ListenerClosed, Probe,
                  QueryActivity, RemoveFlow, ReplaySegment, Reset, Retransmit, SendSegment, TcpError, TcpStack)

log = logging.getLogger("tasd")

EVENT_KINDS = {lib.TAS_FEV_FIN_RECEIVED: "fin_received", lib.TAS_FEV_FIN_SENT: "fin_sent",
               lib.TAS_FEV_FIN_ACKED: "fin_acked", lib.TAS_FEV_RESET: "reset_received",
               lib.TAS_FEV_RTO: "rto", lib.TAS_FEV_PERSIST: "persist", lib.TAS_FEV_ACK_PROGRESS: "ack_progress",
               lib.TAS_FEV_REMOVED: "removed", lib.TAS_FEV_KEEPALIVE: "keepalive",
               lib.TAS_FEV_ESTABLISHED: "established"}
PENDING_PER_NEIGHBOUR = 32  # frames kept while a neighbour is being resolved


@dataclass
class Flow:
    """Where an installed (or being installed) connection lives."""
    conn_id: int
    worker: int
    index: int
    gen: int
    app: App
    ctx: int
    slot: int                  # buffer slot in the app's region
    params: object = None      # the FlowParams it was installed with
    remote_mac: str = ""
    removing: bool = False
    failed: int = 0            # an errno if it could not be installed
    flow_id: int = 0           # what the app calls it (kept after the worker let it go)
    added: int = 0             # its FLOW_ADD's number among the messages to its worker
    taking: bool = False       # a context took it (TAKE): owed a FLOW_STATE

    def __post_init__(self):
        if self.index >= 0:
            self.flow_id = lib.tas_flow_id(self.worker, self.index)


class FlowSlots:
    """Flow indices of one worker: a free list and a generation per index."""

    def __init__(self, n: int):
        self._free = deque(range(n))
        self._gen = [0] * n

    def alloc(self) -> tuple[int, int] | None:
        if not self._free:
            return None
        i = self._free.popleft()
        self._gen[i] = (self._gen[i] + 1) & 0xffffffff or 1
        return i, self._gen[i]

    def free(self, i: int) -> None:
        self._free.append(i)

    @property
    def in_use(self) -> int:
        return len(self._gen) - len(self._free)


class ConnectionManager:
    def __init__(self, stack: TcpStack, workers: list, apps: AppRegistry, arp: ArpTable, our_mac: str,
                 our_ip: IPv4Address, network, gateway, send_frame, arp_flush, clock):
        self.stack, self.workers, self.apps, self.arp = stack, workers, apps, arp
        self.mac = MacAddr(our_mac)
        self.ip, self.network, self.gateway = IPv4Address(our_ip), network, gateway
        self._send_frame = send_frame          # (frame, worker index)
        self._arp_flush = arp_flush
        self._now = clock
        self.slots = [FlowSlots(w.region.shm.max_flows) for w in workers]
        self.flows: dict[int, Flow] = {}       # conn id -> Flow
        self.by_index: dict[tuple[int, int], Flow] = {}  # (worker, index) -> Flow
        self.by_app_flow: dict[tuple[int, int, int], int] = {}  # (app id, flow id, gen) -> conn id
        self.conn_owner: dict[int, tuple] = {}  # conn id -> (app id, ctx)
        self.listener_owner: dict[int, tuple] = {}
        self.pending: dict[IPv4Address, list] = {}  # neighbour -> frames waiting for its MAC
        self.backlogged: set = set()            # app contexts with answers waiting for room
        self.credit: dict[int, dict] = {}       # listener -> {owner context: connections it may take}
        # processes (registration sockets) holding a connection or listener,
        # once one forked with it: it closes when the last lets go
        self.holders: dict[int, set] = {}
        self.lholders: dict[int, set] = {}
        self.shared: set[int] = set()           # connections a fork shared (their FIN is ours to ask for)
        self.stats = {"app_requests": 0, "app_bad_requests": 0, "app_limit": 0, "no_flow_slot": 0,
                      "arp_unresolved_drops": 0, "sp2app_full": 0, "events": 0}

    # ---- helpers ----------------------------------------------------------------
    def worker_for(self, remote_ip, local_ip, remote_port: int, local_port: int) -> int:
        return lib.tas_flow_worker(int(as_ipv4(remote_ip)), int(as_ipv4(local_ip)), remote_port,
                                   local_port, len(self.workers))

    def next_hop(self, dst: IPv4Address) -> IPv4Address | None:
        if dst in self.network:
            return dst
        return self.gateway

    def _ctx(self, owner) -> AppContext | None:
        app = self.apps.apps.get(owner[0])
        return app.contexts.get(owner[1]) if app else None

    def _answer(self, owner, qe_type: int, **kw) -> None:
        ctx = self._ctx(owner)
        if ctx is None:
            return  # the app is gone
        if not ctx.send(qe_type, **kw):
            self.stats["sp2app_full"] += 1
            log.warning("app %d context %d does not read its queue: dropped an answer", owner[0], owner[1])
        if ctx.backlog:
            self.backlogged.add(ctx)
        ctx.wake()

    def flush(self) -> bool:
        """Answers that waited for room in an app's ring go on; True once none
        waits."""
        for ctx in list(self.backlogged):
            if ctx.flush() or ctx.app.id not in self.apps.apps:
                self.backlogged.discard(ctx)
            ctx.wake()
        return not self.backlogged

    # ---- inputs: the wire ---------------------------------------------------------
    def segment(self, eth: EthernetFrame, now: float) -> None:
        """A TCP frame no worker owns a flow for."""
        ip = Ipv4Packet.parse(eth.payload)
        seg = TcpSegment.parse(ip.payload, ip.src, ip.dst)
        self.stack.segment(ip.src, ip.dst, seg, ip.ecn, now)
        self.run()

    def flow_event(self, worker: int, data: bytes, now: float) -> None:
        ev = ffi.from_buffer("struct tas_flow_event *", data)
        self.stats["events"] += 1
        flow = self.by_index.get((worker, ev.index))
        if flow is None or flow.gen != ev.gen:
            return  # for a flow already forgotten
        kind = EVENT_KINDS.get(ev.kind)
        cid = flow.conn_id
        if kind in ("fin_received", "fin_sent", "fin_acked", "reset_received", "ack_progress"):
            getattr(self.stack, kind)(cid, now)
        elif kind in ("rto", "persist"):
            self.stack.timeout(cid, kind, _snapshot(ev), now)
        elif kind == "established":
            self.stack.flow_established(cid, _snapshot(ev), now)
        elif kind == "removed":
            self._release(flow)
            if flow.taking:  # the worker let it go before telling the taker: what it has is all there is
                flow.taking = False
                owner = self.conn_owner.get(cid)
                if owner is not None:
                    self._answer(owner, lib.TAS_QE_FLOW_STATE, flow=flow.flow_id, gen=flow.gen,
                                 flags=lib.TAS_QF_STALE)
            self.stack.flow_removed(cid, _snapshot(ev), ev.ts_recent if flow.params.timestamps else None, now)
        self.run()
        if kind == "removed":
            self._forget_unheld(cid)

    # ---- inputs: apps ---------------------------------------------------------------
    def app_request(self, ctx: AppContext, e, now: float) -> None:
        self.stats["app_requests"] += 1
        owner = ctx.owner
        app = ctx.app
        t = e.type
        try:
            if t == lib.TAS_QE_LISTEN:
                port = e.u.req.port
                if port < 1024 and app.uid != 0:
                    raise TcpError("EACCES")
                lid = self.stack.listen(owner, port, max(1, e.u.req.n),
                                        reuseport=bool(e.flags & lib.TAS_QF_REUSEPORT))
                self.listener_owner[lid] = owner
                app.listeners.add(lid)
                self._answer(owner, lib.TAS_QE_LISTENED, cookie=e.u.req.cookie, status=0, listener=lid,
                             local_port=port)
            elif t == lib.TAS_QE_CONNECT:
                if len(app.conns) >= app.limits.max_conns:
                    self.stats["app_limit"] += 1
                    raise TcpError("EMFILE")
                dst = IPv4Address(ffi.buffer(ffi.new("uint32_t *", e.u.req.ip))[:])
                if self.next_hop(dst) is None:
                    raise TcpError("ENETUNREACH")
                cid = self.stack.connect(owner, dst, e.u.req.port, now, src_port=e.u.req.lport,
                                         cookie=e.u.req.cookie)
                self.conn_owner[cid] = owner
                app.conns.add(cid)
            elif t == lib.TAS_QE_ACCEPT:
                # any context of the listener's app may take its connections
                # (processes forked from the one that listened share it)
                if self.listener_owner.get(e.flow, (None,))[0] == app.id:
                    credit = self.credit.setdefault(e.flow, {})
                    credit[owner] = credit.get(owner, 0) + e.u.req.n
                    self.stack.accept_credit(e.flow, e.u.req.n)
                else:
                    self.stats["app_bad_requests"] += 1
            elif t == lib.TAS_QE_UNLISTEN:
                if self.listener_owner.get(e.flow, (None,))[0] == app.id:
                    self._unlisten(app, e.flow, app.ctx_proc.get(ctx.index), owner, now)
                else:
                    self.stats["app_bad_requests"] += 1
            elif t == lib.TAS_QE_SETOPT:
                cid = self._conn_of_app(app, e.flow, e.gen)
                if cid is None:
                    self.stats["app_bad_requests"] += 1
                else:
                    o = e.u.opt
                    self.stack.set_user_timeout(cid, o.user_timeout_ms / 1000 if o.user_timeout_ms else None)
                    self.stack.set_keepalive(cid, bool(o.keepalive), o.keepidle_s or None, o.keepintvl_s or None,
                                             o.keepcnt or None, now=now)
            elif t in (lib.TAS_QE_CLOSE, lib.TAS_QE_ABORT):
                cid = self._conn_of_app(app, e.flow, e.gen)
                if cid is None:
                    self.stats["app_bad_requests"] += 1
                else:
                    self._let_go(cid, app.ctx_proc.get(ctx.index), now, abort=t == lib.TAS_QE_ABORT,
                                 requester=owner)
            elif t == lib.TAS_QE_TAKE:
                self._take(app, owner, e.flow, e.gen)
            elif t == lib.TAS_QE_INFO:
                cid = self._conn_of_app(app, e.flow, e.gen)
                self._answer(owner, lib.TAS_QE_INFO_ANSWER, flow=e.flow, gen=e.gen,
                             **(self._info(cid) if cid is not None else {}))
            else:
                self.stats["app_bad_requests"] += 1
        except TcpError as err:
            code = getattr(errno_mod, str(err.args[0] if err.args else err), errno_mod.EINVAL)
            if t == lib.TAS_QE_LISTEN:
                self._answer(owner, lib.TAS_QE_LISTENED, cookie=e.u.req.cookie, status=code)
            elif t == lib.TAS_QE_CONNECT:
                self._answer(owner, lib.TAS_QE_CONNECTED, cookie=e.u.req.cookie, status=code)
        self.run()

    def _conn_of_app(self, app: App, flow_id: int, gen: int) -> int | None:
        """The connection an app names by flow id and generation, if it is one of its own."""
        cid = self.by_app_flow.get((app.id, flow_id, gen))
        f = self.flows.get(cid) if cid in app.conns else None
        return cid if f is not None and f.flow_id == flow_id and f.gen == gen else None

    # ---- connections shared across fork ----------------------------------------------
    def _proc_of(self, owner) -> object:
        app = self.apps.apps.get(owner[0]) if owner else None
        return app.ctx_proc.get(owner[1]) if app else None

    def _holders(self, cid: int) -> set:
        """The processes holding a connection: the one whose context has it,
        until a fork shares it."""
        hs = self.holders.get(cid)
        if hs is None:
            p = self._proc_of(self.conn_owner.get(cid))
            hs = self.holders[cid] = {p} if p is not None else set()
        return hs

    def _lholders(self, lid: int) -> set:
        hs = self.lholders.get(lid)
        if hs is None:
            p = self._proc_of(self.listener_owner.get(lid))
            hs = self.lholders[lid] = {p} if p is not None else set()
        return hs

    def proc_forked(self, app: App, child, holds: list) -> None:
        """A process of app forked: the child holds what the parent listed."""
        for kind, ident, gen in holds:
            if kind == lib.TAS_HOLD_CONN:
                cid = self._conn_of_app(app, ident, gen)
                if cid is not None:
                    self._holders(cid).add(child)
                    self.shared.add(cid)
            elif kind == lib.TAS_HOLD_LISTENER and ident in app.listeners:
                self._lholders(ident).add(child)

    def proc_released(self, app: App, proc, holds: list, now: float) -> None:
        """A process closed what it inherited without using it."""
        for kind, ident, gen in holds:
            if kind == lib.TAS_HOLD_CONN:
                cid = self._conn_of_app(app, ident, gen)
                if cid is not None and proc in self._holders(cid):
                    try:
                        self._let_go(cid, proc, now)
                    except TcpError:
                        pass  # already closing
            elif kind == lib.TAS_HOLD_LISTENER and ident in app.listeners:
                self._unlisten(app, ident, proc, None, now)
        self.run()

    def _let_go(self, cid: int, proc, now: float, abort: bool = False, requester=None) -> None:
        """proc is done with a connection: it closes (or resets) if proc was
        the last holder; else its news go to nobody until a holder takes it.
        The requesting context forgets it either way (CLOSED)."""
        hs = self._holders(cid)
        hs.discard(proc)
        log.debug("conn %d: a holder lets go, %d left", cid, len(hs))
        if not hs:
            self.holders.pop(cid, None)
            if abort:
                self.stack.abort(cid, now)
            elif cid in self.shared:  # its holders closed without a FIN (others held it): the worker's
                self.shared.discard(cid)
                self._shut_and_close(cid, now)
            else:
                self.stack.close(cid, now)
            return
        owner = self.conn_owner.get(cid)
        f = self.flows.get(cid)
        if owner is not None and self._proc_of(owner) is proc:
            self._park(cid)
        if requester is not None and f is not None:
            self._answer(requester, lib.TAS_QE_CLOSED, flow=f.flow_id, gen=f.gen)

    def _info(self, cid: int) -> dict:
        """TCP_INFO's numbers: the worker's, while it has the flow."""
        f = self.flows.get(cid)
        if f is None or f.index < 0:
            return {}
        fl = self.workers[f.worker].region.flows[f.index]
        return dict(rtt_us=fl.srtt_us, rttvar_us=fl.rttvar_us, rto_us=fl.rto_us, cwnd=fl.cwnd, ssthresh=fl.ssthresh,
                    mss=fl.mss, retrans=min(fl.retx_segs, 0xffffffff), snd_wnd=fl.snd_wnd,
                    bytes_acked=fl.tx_bytes, bytes_received=fl.rx_bytes)

    def _close_for_exit(self, cid: int, now: float) -> None:
        """What Linux does to a socket whose last holder ended without
        closing it: close it, a FIN after the data, or a RST if data was left
        unread."""
        f = self.flows.get(cid)
        conn = self.stack.connection(cid)
        if conn is None or f is None:
            return
        try:
            if conn.app_handle and not conn.app_closed and f.index >= 0 and not f.removing:
                fl = self.workers[f.worker].region.flows[f.index]
                if fl.rx_avail == fl.rx_size:
                    self._shut_and_close(cid, now)
                    return
            self.stack.abort(cid, now)
        except TcpError:
            pass  # already on its way out

    def _shut_and_close(self, cid: int, now: float) -> None:
        """Close for an app that sent no SHUT_WR: the worker's FIN after the data."""
        self._flow_cmd(cid, lib.TAS_MSG_FLOW_SHUT, 0, 0)
        self.stack.close(cid, now)

    def _set_owner(self, cid: int, owner) -> None:
        """The context that hears of a connection from now on (its answers and
        the stack's news: reset, closed)."""
        self.conn_owner[cid] = owner
        conn = self.stack.connection(cid)
        if conn is not None:
            conn.owner = owner

    def _park(self, cid: int) -> None:
        """No process uses the connection now (others hold it): its worker
        keeps the news for whoever takes it."""
        self._set_owner(cid, (self.conn_owner[cid][0], -1))
        f = self.flows.get(cid)
        if f is not None and f.index >= 0:
            self._flow_cmd(cid, lib.TAS_MSG_FLOW_MOVE, lib.TAS_CTX_NONE, 0)

    def _take(self, app: App, owner, flow_id: int, gen: int) -> None:
        """A process uses a connection it inherited: its context gets the
        connection's news from now on, starting with where the buffers stand."""
        cid = self._conn_of_app(app, flow_id, gen)
        f = self.flows.get(cid) if cid is not None else None
        log.debug("conn %s: taken by context %s", cid, owner)
        if f is None or self._proc_of(owner) not in self._holders(cid):
            self.stats["app_bad_requests"] += 1
            self._answer(owner, lib.TAS_QE_FLOW_STATE, flow=flow_id, gen=gen, status=errno_mod.EBADF)
            return
        self._set_owner(cid, owner)
        f.ctx = owner[1]
        if f.index >= 0:
            f.taking = True
            self._flow_cmd(cid, lib.TAS_MSG_FLOW_MOVE, owner[1], 0, move_state=True)
        else:  # the worker let it go: what the process has is all there is
            self._answer(owner, lib.TAS_QE_FLOW_STATE, flow=f.flow_id, gen=f.gen, flags=lib.TAS_QF_STALE)

    def _unlisten(self, app: App, lid: int, proc, owner, now: float) -> None:
        """proc closed a listener: it stops listening once no process holds it."""
        hs = self._lholders(lid)
        hs.discard(proc)
        if owner is not None and owner in self.credit.get(lid, {}):
            self.stack.withdraw_credit(lid, self.credit[lid].pop(owner))
        if not hs:
            self.lholders.pop(lid, None)
            self.stack.unlisten(lid, now)
            self.listener_owner.pop(lid, None)
            app.listeners.discard(lid)

    def _closing(self, cid: int) -> bool:
        """Closed by its app, still sending what the app wrote (and its FIN)."""
        conn = self.stack.connection(cid)
        f = self.flows.get(cid)
        return conn is not None and conn.app_closed and f is not None and f.index >= 0 and not f.removing

    def app_gone(self, app: App, now: float, force: bool = False) -> bool:
        """Reset what the app had open: its peers see RSTs, its flows leave
        the workers before the app's region does.  Connections it had closed
        finish as on Linux (their data and FIN still go out, from the region,
        which stays until they are done: True while any is; all are reset
        with force)."""
        for lid in list(app.listeners):
            self.stack.unlisten(lid, now)
            self.listener_owner.pop(lid, None)
        if app.posix and not force:
            for cid in [c for c in app.conns if not self._closing(c)]:
                self._close_for_exit(cid, now)
        closing = set() if force else {cid for cid in app.conns if self._closing(cid)}
        for cid in list(app.conns - closing):
            if self.stack.connection(cid) is not None:
                try:
                    self.stack.abort(cid, now)
                except TcpError:
                    pass  # already on its way out
        self.run()
        # flows the stack did not remove (already closing): take them off now
        for cid in list(app.conns - closing):
            f = self.flows.get(cid)
            if f is not None and not f.removing:
                self._remove(f, rst=True)
        for cid in app.conns - closing:
            self.holders.pop(cid, None)
            self.shared.discard(cid)
        for lid in app.listeners:
            self.lholders.pop(lid, None)
        app.conns &= closing
        app.listeners.clear()
        return bool(app.conns)

    # ---- the stack's actions ------------------------------------------------------------
    def run(self) -> None:
        """Carry out the stack's actions, including those they cause."""
        while actions := self.stack.take_actions():
            for a in actions:
                try:
                    self._act(a)
                except Exception:
                    log.exception("carrying out %r", a)

    def _act(self, a) -> None:
        if isinstance(a, SendSegment):
            self._send_segment(a.src, a.dst, a.seg, a.ecn)
        elif isinstance(a, InstallFlow):
            self._install(a.conn_id, a.params)
        elif isinstance(a, ReplaySegment):
            f = self.flows.get(a.conn_id)
            if f is not None and f.index >= 0:
                frame = self._frame(a.src, a.dst, a.seg, a.ecn, dst_mac=self.mac, src_mac=MacAddr(f.remote_mac))
                self.workers[f.worker].send(lib.TAS_MSG_RX_FRAME, frame)
        elif isinstance(a, RemoveFlow):
            f = self.flows.get(a.conn_id)
            if f is not None and not f.removing:
                self._remove(f, a.rst)
        elif isinstance(a, Retransmit):
            self._flow_cmd(a.conn_id, lib.TAS_MSG_FLOW_RETRANSMIT, 0, a.rto)
        elif isinstance(a, Probe):
            kind = lib.TAS_PROBE_ZERO_WINDOW if a.kind == "zero_window" else lib.TAS_PROBE_KEEPALIVE
            self._flow_cmd(a.conn_id, lib.TAS_MSG_FLOW_PROBE, kind, a.next)
        elif isinstance(a, QueryActivity):
            f = self.flows.get(a.conn_id)
            if f is not None:
                last = self.workers[f.worker].region.flows[f.index].last_rx_ns / 1e9
                self.stack.keepalive_check(a.conn_id, last, self._now())
        elif isinstance(a, Accepted):
            self._deliver_accept(a)
        elif isinstance(a, Connected):
            f = self.flows.get(a.conn_id)
            if f is not None and not f.failed:
                self._answer(a.owner, lib.TAS_QE_CONNECTED, flow=f.flow_id, gen=f.gen, cookie=a.cookie, status=0,
                             after=self._after_install(f),
                             **self._conn_info(f))
            else:
                self._answer(a.owner, lib.TAS_QE_CONNECTED, cookie=a.cookie,
                             status=f.failed if f else errno_mod.ECONNABORTED)
        elif isinstance(a, ConnectFailed):
            # the app never got a handle for it, so it cannot close it: we do
            if self.stack.connection(a.conn_id) is not None:
                self.stack.close(a.conn_id, self._now())
            self._forget(a.conn_id)
            self._answer(a.owner, lib.TAS_QE_CONNECTED, cookie=a.cookie, status=_errno(a.errno))
        elif isinstance(a, Reset):
            f = self.flows.get(a.conn_id)
            if f is not None and not f.failed:
                self._answer(a.owner, lib.TAS_QE_CONN_ERROR, flow=f.flow_id, gen=f.gen, status=_errno(a.errno))
        elif isinstance(a, Closed):
            f = self.flows.get(a.conn_id)
            if f is not None and not f.failed:
                self._answer(a.owner, lib.TAS_QE_CLOSED, flow=f.flow_id, gen=f.gen)
            self._forget(a.conn_id)
        elif isinstance(a, ListenerClosed):
            self.listener_owner.pop(a.listener_id, None)
            self.credit.pop(a.listener_id, None)
            self.lholders.pop(a.listener_id, None)

    def _flow_cmd(self, conn_id: int, msg: int, flags: int, seconds: float, move_state: bool = False) -> None:
        f = self.flows.get(conn_id)
        if f is None:
            return
        c = ffi.new("struct tas_flow_cmd *")
        c.index, c.gen, c.flags = f.index, f.gen, flags
        c.timeout_us = lib.TAS_MOVE_STATE if move_state else min(int(seconds * 1e6), 0xffffffff)
        self.workers[f.worker].send(msg, c)

    def _taker(self, a: Accepted):
        """The context that gets an accepted connection: one that gave the
        listener credit, in turn; the listener's own if none is left."""
        credit = self.credit.get(a.listener_id, {})
        for owner, n in list(credit.items()):
            del credit[owner]  # to the end of the line
            if n > 0 and self._ctx(owner) is not None and not self._ctx(owner).retired:
                if n > 1:
                    credit[owner] = n - 1
                return owner
        ctx = self._ctx(a.owner)
        return a.owner if ctx is not None and not ctx.retired else None

    def _deliver_accept(self, a: Accepted) -> None:
        f = self.flows.get(a.conn_id)
        app = self.apps.apps.get(a.owner[0])
        if f is None or f.failed or app is None:
            return
        owner = self._taker(a)
        if owner is None:  # nobody left to take it (its process is gone, others hold the listener)
            self.stack.abort(a.conn_id, self._now())
            return
        if owner[1] != f.ctx:  # another process's context: the worker notifies it from now on
            self._flow_cmd(a.conn_id, lib.TAS_MSG_FLOW_MOVE, owner[1], 0)
            f.ctx, f.added = owner[1], self.workers[f.worker].queued
        self._set_owner(a.conn_id, owner)
        app.conns.add(a.conn_id)
        self._answer(owner, lib.TAS_QE_ACCEPTED, flow=f.flow_id, gen=f.gen, listener=a.listener_id,
                     after=self._after_install(f), **self._conn_info(f))

    def proc_gone(self, app: App, proc, ctxs: set, now: float) -> None:
        """A process of a multi-process app is gone: what only it held goes
        as if the app had gone (listeners closed, connections reset); what
        others hold stays, news of connections it used going to nobody."""
        for lid, credit in self.credit.items():
            for owner in [o for o in credit if o[0] == app.id and o[1] in ctxs]:
                self.stack.withdraw_credit(lid, credit.pop(owner))
        for lid in list(app.listeners):
            if proc in self._lholders(lid):
                self._unlisten(app, lid, proc, None, now)
        for cid in list(app.conns):
            if self._closing(cid):
                continue  # closed by the app: it finishes on its own
            hs = self._holders(cid)
            if proc not in hs:
                continue
            if cid in self.shared:  # as its last holder closing it (a FIN), or one of them
                try:
                    self._let_go(cid, proc, now)
                except TcpError:
                    pass
                continue
            self.holders.pop(cid, None)
            if app.posix:
                self._close_for_exit(cid, now)
                continue
            if self.stack.connection(cid) is not None:
                try:
                    self.stack.abort(cid, now)
                except TcpError:
                    pass
            app.conns.discard(cid)
        self.run()

    def _conn_info(self, f: Flow) -> dict:
        p = f.params
        rx_off, tx_off = f.app.buffers.offsets(f.slot)
        return dict(rx_off=rx_off, tx_off=tx_off, rx_size=f.app.buffers.rx, tx_size=f.app.buffers.tx,
                    remote_ip=ipv4_be(p.remote_ip), remote_port=p.remote_port, local_port=p.local_port)

    def _install(self, conn_id: int, p) -> None:
        owner = p.owner
        now = self._now()
        app = self.apps.apps.get(owner[0])
        mac = self.arp.lookup(self.next_hop(p.remote_ip) or p.remote_ip, now)
        w = self.worker_for(p.remote_ip, p.local_ip, p.remote_port, p.local_port)
        slot = app.buffers.alloc() if app is not None else None
        index = self.slots[w].alloc() if slot is not None and mac is not None else None
        if index is None and p.syn_received:
            # Installing with the SYN-ACK is an optimisation: without a MAC
            # yet (the SYN-ACK waits for ARP) or a slot, the flow is installed
            # at the ACK, as for any other connection.
            if slot is not None:
                app.buffers.free(slot)
            self.stack.decline_early(conn_id)
            return
        if index is None:
            # Cannot run it (the app is gone or at its limit, no flow slot, no
            # MAC): reset the peer with the handshake's numbers and end it.
            if slot is not None:
                app.buffers.free(slot)
            why = errno_mod.ENOBUFS if app is not None else errno_mod.ECONNABORTED
            self.stats["app_limit" if app is not None and slot is None else "no_flow_slot"] += 1
            self.flows[conn_id] = Flow(conn_id, w, -1, 0, app, owner[1], -1, p, removing=True, failed=why)
            self._send_segment(p.local_ip, p.remote_ip, TcpSegment(p.local_port, p.remote_port, p.snd_nxt,
                                                                    p.rcv_nxt, _RST_ACK), None)
            self.stack.abort(conn_id, now)
            self.stack.flow_removed(conn_id, FlowSnapshot(p.snd_una, p.snd_nxt, p.rcv_nxt, None, None, now),
                                    None, now)
            self._forget_unheld(conn_id)
            return
        index, gen = index
        f = Flow(conn_id, w, index, gen, app, owner[1], slot, p, remote_mac=str(mac))
        self.flows[conn_id] = f
        self.by_index[(w, index)] = f
        self.by_app_flow[(app.id, f.flow_id, gen)] = conn_id
        c = ffi.new("struct tas_flow_params *")
        c.index, c.gen, c.app_id, c.ctx = index, gen, app.id, owner[1]
        c.local_ip, c.remote_ip = ipv4_be(p.local_ip), ipv4_be(p.remote_ip)
        c.local_port, c.remote_port = p.local_port, p.remote_port
        c.remote_mac = list(MacAddr(mac).packed)
        c.mss = p.mss
        c.opts = ((lib.TAS_OPT_TIMESTAMPS if p.timestamps else 0) | (lib.TAS_OPT_SACK if p.sack else 0) |
                  (lib.TAS_OPT_ECN if p.ecn else 0) | (lib.TAS_OPT_WSCALE if p.snd_wscale or p.rcv_wscale else 0))
        c.snd_wscale, c.rcv_wscale = p.snd_wscale, p.rcv_wscale
        c.flags = lib.TAS_FLOW_PARAM_SYN_RCVD if p.syn_received else 0
        if p.syn_received:  # (its SYN-ACK left just now: the worker times the handshake from here)
            c.synack_us = (lib.fp_now_ns() // 1000) & 0xffffffff
        c.snd_una, c.snd_nxt, c.rcv_nxt = int(p.snd_una), int(p.snd_nxt), int(p.rcv_nxt)
        c.snd_wnd = p.snd_wnd
        c.ts_recent, c.ts_offset = p.ts_recent & 0xffffffff, p.ts_offset & 0xffffffff
        c.rto_us = int(p.rto * 1e6)
        c.srtt_us = int(p.srtt * 1e6) if p.srtt else 0
        c.rx_off, c.tx_off = app.buffers.offsets(slot)
        c.rx_size, c.tx_size = app.buffers.rx, app.buffers.tx
        self.workers[w].send(lib.TAS_MSG_FLOW_ADD, c)
        f.added = self.workers[w].queued

    def _after_install(self, f: Flow):
        """For the answer that tells the app of f: none may go before f's
        FLOW_ADD is in its worker's ring (the worker then finds the flow when
        the app's first message comes)."""
        w = self.workers[f.worker]
        return None if w.pushed >= f.added else (lambda: w.pushed >= f.added)

    def _remove(self, f: Flow, rst: bool) -> None:
        f.removing = True
        self._flow_cmd(f.conn_id, lib.TAS_MSG_FLOW_REMOVE, lib.TAS_FLOW_CMD_RST if rst else 0, 0)

    def _release(self, f: Flow) -> None:
        """The worker gave the flow up: its index is free again.  Its buffers
        stay until the app is done with the connection (Closed): unread data
        is still in them."""
        if f.index >= 0:
            self.by_index.pop((f.worker, f.index), None)
            self.slots[f.worker].free(f.index)
            f.index = -1

    def _forget_unheld(self, conn_id: int) -> None:
        """A connection the stack dropped without a Closed (never delivered
        to the app: reset or timed out in the handshake or the accept queue):
        its flow record and buffers go too."""
        if conn_id in self.flows and self.stack.connection(conn_id) is None:
            self._forget(conn_id)

    def _forget(self, conn_id: int) -> None:
        """The app is done with the connection and the worker with its flow."""
        f = self.flows.get(conn_id)
        if f is not None and f.index < 0:
            self.flows.pop(conn_id, None)
            if f.app is not None:
                self.by_app_flow.pop((f.app.id, f.flow_id, f.gen), None)
            if f.slot >= 0 and f.app is not None and self.apps.apps.get(f.app.id) is f.app:  # not if gone
                f.app.buffers.free(f.slot)
                f.slot = -1
        self.holders.pop(conn_id, None)
        self.shared.discard(conn_id)
        owner = self.conn_owner.pop(conn_id, None)
        app = f.app if f is not None else self.apps.apps.get(owner[0]) if owner is not None else None
        if app is not None:
            app.conns.discard(conn_id)
            if not app.conns and self.apps.apps.get(app.id) is not app:  # gone, its closed ones done
                self.apps.linger_done(app)

    # ---- frames ------------------------------------------------------------------------------
    def _frame(self, src, dst, seg: TcpSegment, ecn, dst_mac: MacAddr, src_mac: MacAddr) -> bytes:
        ip = Ipv4Packet(src, dst, IpProtocol.TCP, seg.emit(src, dst), ecn=ecn or 0)
        return EthernetFrame(dst_mac, src_mac, EtherType.IPV4, ip.emit()).emit()

    def _send_segment(self, src, dst, seg: TcpSegment, ecn) -> None:
        hop = self.next_hop(as_ipv4(dst))
        if hop is None:
            return
        w = self.worker_for(dst, src, seg.dst_port, seg.src_port)
        mac = self.arp.lookup(hop, self._now())
        if mac is None:
            q = self.pending.setdefault(hop, [])
            if len(q) < PENDING_PER_NEIGHBOUR:
                q.append((src, dst, seg, ecn, w))
            else:
                self.stats["arp_unresolved_drops"] += 1
            self._arp_flush()
            return
        self._send_frame(self._frame(src, dst, seg, ecn, mac, self.mac), w)

    def neighbour_resolved(self, ip: IPv4Address, mac) -> None:
        for src, dst, seg, ecn, w in self.pending.pop(ip, []):
            self._send_frame(self._frame(src, dst, seg, ecn, MacAddr(mac), self.mac), w)

    def neighbour_unreachable(self, ip: IPv4Address) -> None:
        dropped = self.pending.pop(ip, [])
        self.stats["arp_unresolved_drops"] += len(dropped)

    # ---- stats and listings ------------------------------------------------------------------
    FLOW_FIELDS = ("snd_una", "snd_nxt", "snd_max", "rcv_nxt", "snd_wnd", "rx_avail", "tx_data", "cwnd",
                   "ssthresh", "srtt_us", "rttvar_us", "rto_us", "fl", "dupacks", "sack_n", "ooo_n", "rx_bytes",
                   "tx_bytes", "rx_segs", "tx_segs", "retx_segs", "fast_retx", "tlps", "lost_rexmits", "rtos",
                   "ooo_segs", "ooo_drops", "dup_segs", "ce_bytes")

    def flow_list(self, states: set[str] = frozenset(), port: int | None = None,
                  address: IPv4Address | None = None, app: int | None = None) -> list[dict]:
        """Every connection with its state, and its flow's counters if a
        worker has it; only those in `states` (if any), with `port` or
        `address` at either end, of `app`."""
        out = []
        for cid, f in self.flows.items():
            conn = self.stack.connection(cid)
            p = f.params
            state = conn.state.name if conn else "CLOSED"
            if (states and state not in states or port is not None and port not in (p.local_port, p.remote_port)
                    or address is not None and address not in (p.local_ip, p.remote_ip)
                    or app is not None and (f.app.id if f.app else None) != app):
                continue
            row = {"conn": cid, "state": state, "worker": f.worker,
                   "local": f"{p.local_ip}:{p.local_port}", "remote": f"{p.remote_ip}:{p.remote_port}",
                   "app": f.app.id if f.app else None}
            if f.index >= 0:
                fl = self.workers[f.worker].region.flows[f.index]
                row.update({k: getattr(fl, k) for k in self.FLOW_FIELDS})
                # as ss names them: bytes in the send buffer not yet acked,
                # received and not yet read, acked by the peer, received in order
                row.update(send_q=fl.tx_data, recv_q=fl.rx_size - fl.rx_avail, bytes_acked=fl.tx_bytes,
                           bytes_received=fl.rx_bytes)
            out.append(row)
        return out

    def describe(self) -> dict:
        return {**self.stats, **{f"tcp_{k}": v for k, v in self.stack.stats.items()},
                **{f"tcp_{k}_now": v for k, v in self.stack.gauges().items()},
                "flows_installed": sum(s.in_use for s in self.slots)}


_RST_ACK = TcpFlags.RST | TcpFlags.ACK


def _snapshot(ev) -> FlowSnapshot:
    """The stack's view of a flow, from a worker's event."""
    return FlowSnapshot(SeqNum(ev.snd_una), SeqNum(ev.snd_nxt), SeqNum(ev.rcv_nxt),
                        ev.srtt_us / 1e6 if ev.srtt_us else None, ev.rttvar_us / 1e6 if ev.srtt_us else None,
                        ev.last_rx_ns / 1e9)


def _errno(name: str) -> int:
    return getattr(errno_mod, name, errno_mod.EIO)

"""tasd, the slowpath daemon: wiring and the asyncio driver.

Start-up (blocking, before the event loop): check privileges and the
interface, take the interface lock, open the packet I/O backend, spawn the
fastpath workers and wait until they poll.  Then, on uvloop: the control
socket, the exception rings of the workers, ARP (probe, announce, resolve),
and supervision.  SIGTERM or SIGINT stops the workers, detaches the XDP
program and removes every shared-memory region and socket.

Every start-up failure is one line on stderr and a non-zero exit.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import random
import resource
import signal
import socket
import struct
import sys
import time
from ipaddress import IPv4Address

from tasd import __version__, config
from tasd.fastpath.binding import FastpathError, lib
from tasd.wire import ArpPacket, EtherType, EthernetFrame, MacAddr, WireError

from . import backend as backends
from . import netif, sdnotify, workers
from .apps import AppLimits, AppRegistry
from .arp import ArpTable, Conflict, Resolved, SendArp, Unreachable
from .capture import Captures
from .connections import ConnectionManager
from .control import CommandError, ControlServer, current_client
from .metrics import MetricsServer, exposition
from .tcp import TcpConfig, TcpStack

log = logging.getLogger("tasd")

# A worker refreshes its heartbeat at least every 100 ms, even when idle.
HUNG_AFTER_S = 2.0
CAP_IPC_LOCK, CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN, CAP_BPF = 14, 12, 13, 21, 39
MIN_FRAME = 60  # Ethernet minimum without FCS: short frames are padded
FLUSH_RETRY_S = 0.0005  # how soon messages that found a worker's ring full are tried again
STATUS_EVERY_S = 5.0  # how often systemd's STATUS= line is refreshed

# What a reload (SIGHUP, systemctl reload) changes in the running daemon; the
# other options are fixed at start and a reload only says that they need a
# restart.  poll_us, tcp.rto_min, tcp.rto_max and tcp.delayed_ack apply to
# every flow at once (the workers read them as they run); the other TCP
# settings to connections made after the reload; app limits to apps that
# register after it (max_apps at once).
LIVE_KEYS = {"log_level", "poll_us", "tcp.mss", "tcp.window_scale", "tcp.timestamps", "tcp.sack", "tcp.ecn",
             "tcp.syn_retries", "tcp.synack_retries", "tcp.rto_initial", "tcp.rto_min", "tcp.rto_max",
             "tcp.retries2", "tcp.delayed_ack", "tcp.msl", "tcp.fin_timeout", "tcp.keepalive_time",
             "tcp.keepalive_intvl", "tcp.keepalive_probes", "tcp.max_syn_backlog", "app.max_connections",
             "app.max_apps", "arp.timeout", "arp.retries", "arp.retry_interval", "arp.failed_hold"}


class StartError(Exception):
    """A reason tasd cannot start, worded for the operator."""


def _effective_caps() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def check_privileges(backend: str, nworkers: int, umem_bytes: int) -> None:
    caps = _effective_caps()
    missing = [name for bit, name in ((CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_NET_RAW, "CAP_NET_RAW"))
               if not caps >> bit & 1]
    if (backend == "xdp" or nworkers > 1) and not (caps >> CAP_BPF & 1 or caps >> CAP_SYS_ADMIN & 1):
        missing.append("CAP_BPF")
    if missing:
        raise StartError(f"permission denied: tasd needs {', '.join(missing)} (run it as root)")
    if backend == "xdp" and not caps >> CAP_IPC_LOCK & 1:
        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        if soft != resource.RLIM_INFINITY and soft < umem_bytes:
            raise StartError(f"permission denied: the AF_XDP UMEM pins {umem_bytes} bytes: tasd needs CAP_IPC_LOCK "
                             f"or a memlock limit of at least that (it is {soft})")


def _holder(name: str) -> str:
    """The pid of the process that holds an abstract socket name."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(name)
            pid, _, _ = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            return str(pid)
    except OSError:
        return "?"


def derived_mac(ip: IPv4Address, ifname: str) -> str:
    """A stable, locally administered unicast MAC for the TAP backend."""
    h = hashlib.sha256(f"tasd/{ifname}/{ip}".encode()).digest()
    return ":".join(f"{b:02x}" for b in bytes([0x02]) + h[:5])


class Daemon:
    def __init__(self, cfg: config.Config, config_path: str | None = None, overrides: dict | None = None):
        self.cfg = cfg
        self.config_path, self.overrides = config_path, overrides or {}  # what a reload reads again
        self.notifier = sdnotify.Notifier()
        self.reloads = {"ok": 0, "failed": 0}
        self._sd_timer = None
        self._status_at = 0.0
        self.address = cfg["address"]
        self.ip = self.address.ip
        self.network = self.address.network
        self.workers: list[workers.WorkerProc] = []
        self.backend = None
        self.iface: netif.Interface | None = None
        self.mac = self.mtu = None
        self._lock_sock: socket.socket | None = None
        self.started = time.time()
        self.exit_code = 0
        self.early_signal: int | None = None  # a signal during start-up (main())
        self.stats = {"exceptions": 0, "bad_frames": 0, "icmp_rx": 0, "tx_frames": 0,
                      "tx_ring_full": 0, "bad_messages": 0, "handler_errors": 0}
        self.arp: ArpTable | None = None
        self._arp_timer = None
        self._arp_waiters: dict[IPv4Address, list[asyncio.Future]] = {}
        self._conflict: MacAddr | None = None
        self.conns: ConnectionManager | None = None
        self.apps: AppRegistry | None = None
        self._tcp_handle = None
        self._flush_handle = None
        self._stop: asyncio.Event | None = None
        self._control: ControlServer | None = None
        self._metrics: MetricsServer | None = None

    # ---- start-up, before the event loop ------------------------------------
    def prepare(self) -> None:
        cfg = self.cfg
        nworkers = len(cfg["cores"])
        check_privileges(cfg["backend"], nworkers, cfg["xdp.frames"] * lib.FP_XDP_FRAME_SIZE)
        name = cfg["interface"]
        self.iface = netif.lookup(name)
        if cfg["backend"] == "xdp" and self.iface is None:
            raise StartError(f"no interface named {name!r}")
        if cfg["backend"] == "tap" and self.iface is not None and self.iface.kind != "tun":
            raise StartError(f"interface {name!r} exists and is not a TAP device")
        used_by = netif.local_addresses().get(self.ip)
        if used_by is not None:
            raise StartError(f"address {self.ip} is already configured on interface {used_by!r}: "
                             "tasd must own its address alone")
        self._take_lock(name)
        dev_mtu = self.iface.mtu if self.iface else 1500
        self.mtu = cfg["mtu"] or dev_mtu
        if self.mtu > dev_mtu:
            raise StartError(f"mtu {self.mtu} is larger than the MTU of {name} ({dev_mtu})")
        max_frame = backends.XDP_MAX_FRAME if cfg["backend"] == "xdp" else backends.MAX_FRAME
        if self.mtu + 14 > max_frame:
            what = "an AF_XDP frame" if cfg["backend"] == "xdp" else "tasd's frame buffers"
            raise StartError(f"mtu {self.mtu} does not fit {what}: set mtu to at most {max_frame - 14}")
        if cfg["backend"] == "xdp":
            self.mac = self.iface.mac
            self.backend = backends.XdpBackend(cfg, self.iface, nworkers)
        else:
            self.mac = cfg["mac"] or derived_mac(self.ip, name)
            self.backend = backends.TapBackend(cfg, self.iface, nworkers)
        try:
            self.backend.open()
            self.iface = self.backend.iface
            for i, core in enumerate(cfg["cores"]):
                self.workers.append(workers.WorkerProc(i, core, cfg, self.mac, self.mtu))
            for w in self.workers:
                capture = cfg["capture"]
                if capture and nworkers > 1:
                    capture = f"{capture}.w{w.index}"
                w.spawn(self.backend.worker_fds(w.index), capture)
            workers.wait_running(self.workers)
            for w in self.workers:
                log.info("fastpath worker %d started on CPU %d (pid %d, %s)", w.index, w.core, w.proc.pid,
                         self.backend.name)
        except (FastpathError, workers.WorkerStartError) as e:
            raise StartError(str(e)) from None

    def _take_lock(self, ifname: str) -> None:
        """One tasd per interface and network namespace: an abstract Unix
        socket named after the interface, which the kernel releases when this
        process dies however it dies (and which leaves no file behind)."""
        name = f"\0tasd/{ifname}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(name)
        except OSError as e:
            sock.close()
            if e.errno != errno.EADDRINUSE:
                raise
            raise StartError(f"interface {ifname!r} is already used by another tasd (pid {_holder(name)})") from None
        sock.listen(16)
        self._lock_sock = sock

    # ---- the event loop --------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        if self.early_signal is not None:  # came before these handlers, its exception lost
            raise StartError(f"{signal.Signals(self.early_signal).name} during start-up")
        cfg = self.cfg
        self.arp = ArpTable(MacAddr(self.mac), self.ip, self.network, timeout=cfg["arp.timeout"],
                            retries=cfg["arp.retries"], retry_interval=cfg["arp.retry_interval"],
                            failed_hold=cfg["arp.failed_hold"])
        self._setup_tcp(loop)
        for w in self.workers:
            loop.add_reader(w.fp2sp_efd, self._on_exceptions, w)
            loop.add_reader(w.pidfd, self._on_worker_exit, w)
            self._on_exceptions(w)  # drain what came before, and arm the ring
        self._links = netif.LinkWatcher(self.iface.index)
        self._link_state = "up"
        loop.add_reader(self._links.fileno(), self._on_link_event)
        self.captures = Captures(self.workers, self._flush_tx, cfg["capture"])
        self._control = ControlServer(cfg["control_socket"], {
            "capture_start": self._cmd_capture_start, "capture_stop": self._cmd_capture_stop,
            "capture_status": self._cmd_capture_status,
            "status": self._cmd_status, "stats": self._cmd_stats, "arp": self._cmd_arp,
            "arp_resolve": self._cmd_arp_resolve, "apps": self._cmd_apps, "flows": self._cmd_flows,
            "reload": self._cmd_reload})
        try:
            if cfg["arp.probe"]:
                await self._probe_address()
            self.arp.announce(cfg["arp.announce"], loop.time())
            if cfg["gateway"] is not None:
                self.arp.lookup(cfg["gateway"], loop.time())
            self._arp_flush()
            self._watch_workers()
            if self._stop.is_set():
                return self.exit_code
            await self.apps.start()
            await self._control.start()  # answering on it is what "ready" means
            await self._start_metrics()
            log.info("tasd %s ready: %s on %s (%s), MAC %s, MTU %d, %d worker(s) on CPU %s", __version__,
                     self.address, self.iface.name, self.backend.name, self.mac, self.mtu, len(self.workers),
                     ",".join(map(str, cfg["cores"])))
            self.notifier.ready(self._status_line())
            self._sd_tick()
            if not self._stop.is_set():
                await self._stop.wait()
        finally:
            self.notifier.stopping()
            if self._sd_timer is not None:
                self._sd_timer.cancel()
            await self._shutdown_tcp(loop)
            await self._control.close()
            if self._metrics is not None:
                await self._metrics.close()
            for w in self.workers:
                with contextlib.suppress(Exception):
                    loop.remove_reader(w.fp2sp_efd)
                    loop.remove_reader(w.pidfd)
            if self._arp_timer is not None:
                self._arp_timer.cancel()
            loop.remove_reader(self._links.fileno())
            self._links.close()
        return self.exit_code

    # ---- systemd and reloads ----------------------------------------------------
    def _fastpath_stats(self) -> tuple[list[dict], dict]:
        """Each worker's counters, and their sums."""
        per_worker = [w.region.stats() for w in self.workers]
        return per_worker, _sum_stats(per_worker)

    def _status_line(self) -> str:
        _, fp = self._fastpath_stats()
        return (f"{self.address} on {self.iface.name} ({self.backend.name}), {len(self.workers)} worker(s); "
                f"{len(self.apps.apps)} app(s), {len(self.conns.flows)} connection(s); "
                f"{fp.get('rx_frames', 0)} frames in, {fp.get('tx_frames', 0)} out")

    def _sd_tick(self) -> None:
        """Watchdog pings (only while every worker's loop turns: a hung
        worker stops them, and _watch_workers stops tasd) and the STATUS line."""
        loop = asyncio.get_running_loop()
        n = self.notifier
        if not n.enabled:
            return
        if n.watchdog_s and all(w.heartbeat_age() < HUNG_AFTER_S for w in self.workers):
            n.notify(watchdog=1)
        if loop.time() >= self._status_at:
            n.notify(status=self._status_line())
            self._status_at = loop.time() + STATUS_EVERY_S
        every = min(STATUS_EVERY_S, n.watchdog_s / 2) if n.watchdog_s else STATUS_EVERY_S
        self._sd_timer = loop.call_later(every, self._sd_tick)

    def reload(self) -> dict:
        """Read the configuration again (the same file and command-line
        overrides) and apply what can change while running; say what needs a
        restart.  A bad file changes nothing."""
        self.notifier.reloading()
        try:
            new = config.load(self.config_path, self.overrides)
            changed = [k for k, v in new.values.items() if v != self.cfg.values.get(k)]
            applied = [k for k in changed if k in LIVE_KEYS]
            fixed = [k for k in changed if k not in LIVE_KEYS]
            merged = config.Config({**self.cfg.values, **{k: new.values[k] for k in applied}}, self.cfg.source)
            tcp, limits = self._tcp_config(merged), self._app_limits(merged)  # what does not fit together fails here
        except (config.ConfigError, ValueError) as e:
            self.reloads["failed"] += 1
            log.error("reload failed, configuration unchanged: %s", e)
            self.notifier.ready(f"reload failed: {e}")
            return {"applied": [], "restart_needed": [], "error": str(e)}
        self.cfg.values.update(merged.values)  # in place: others hold this Config
        self._apply_live(tcp, limits)
        self.reloads["ok"] += 1
        log.info("configuration reloaded from %s: %s%s", self.config_path or "the command line",
                 f"changed {', '.join(applied)}" if applied else "nothing changed",
                 f"; needs a restart (running value kept): {', '.join(fixed)}" if fixed else "")
        self.notifier.ready(self._status_line())
        return {"applied": applied, "restart_needed": fixed}

    def _apply_live(self, tcp: TcpConfig, limits: AppLimits) -> None:
        c = self.cfg
        log.setLevel(c["log_level"].upper())
        for w in self.workers:
            w.tune(c)
        self.stack.reconfigure(tcp)
        self.apps.limits = limits
        self.arp.timeout, self.arp.retries = c["arp.timeout"], c["arp.retries"]
        self.arp.retry_interval, self.arp.failed_hold = c["arp.retry_interval"], c["arp.failed_hold"]

    async def _cmd_reload(self, req: dict) -> dict:
        return self.reload()

    # ---- TCP and applications ----------------------------------------------------
    def _tcp_config(self, c: config.Config | None = None) -> TcpConfig:
        c = c or self.cfg
        return TcpConfig(mss=min(c["tcp.mss"], self.mtu - 40), rcv_wscale=c["tcp.window_scale"],
                         rcv_buf=c["app.rx_buffer"], window_scaling=c["tcp.window_scale"] > 0,
                         timestamps=c["tcp.timestamps"], sack=c["tcp.sack"], ecn=c["tcp.ecn"],
                         syn_retries=c["tcp.syn_retries"], synack_retries=c["tcp.synack_retries"],
                         rto_initial=c["tcp.rto_initial"], rto_min=c["tcp.rto_min"], rto_max=c["tcp.rto_max"],
                         retries2=c["tcp.retries2"], msl=c["tcp.msl"], fin_timeout=c["tcp.fin_timeout"],
                         keepalive_time=c["tcp.keepalive_time"], keepalive_intvl=c["tcp.keepalive_intvl"],
                         keepalive_probes=c["tcp.keepalive_probes"], ephemeral_ports=c["tcp.ephemeral_ports"],
                         max_syn_backlog=c["tcp.max_syn_backlog"], early_install=True)

    def _app_limits(self, c: config.Config | None = None) -> AppLimits:
        c = c or self.cfg
        return AppLimits(max_conns=c["app.max_connections"], rx_buffer=c["app.rx_buffer"],
                         tx_buffer=c["app.tx_buffer"], contexts=c["app.contexts"],
                         ring_entries=c["app.ring_entries"], max_apps=c["app.max_apps"])

    def _setup_tcp(self, loop) -> None:
        c = self.cfg
        self.stack = TcpStack(self.ip, secret=os.urandom(32), rng=random.Random(os.urandom(16)),
                              config=self._tcp_config())
        self._sp_doorbell = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.apps = AppRegistry(c["app_socket"], self.workers, self._app_limits(), self._sp_doorbell,
                                on_gone=lambda app, force=False: self.conns.app_gone(app, loop.time(), force),
                                address=self.address, gateway=c["gateway"])
        self.apps.on_proc_gone = lambda app, proc, ctxs: self.conns.proc_gone(app, proc, ctxs, loop.time())
        self.apps.on_fork = lambda app, proc, holds: self.conns.proc_forked(app, proc, holds)
        self.apps.on_release = lambda app, proc, holds: self.conns.proc_released(app, proc, holds, loop.time())
        self.conns = ConnectionManager(self.stack, self.workers, self.apps, self.arp, self.mac, self.ip,
                                       self.network, c["gateway"], self._send, self._arp_flush, loop.time)
        loop.add_reader(self._sp_doorbell, self._on_app_requests)

    def _on_app_requests(self, budget: int = 4096) -> None:
        """The apps rang: serve every context's app2sp ring, then re-arm them."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._sp_doorbell)
        loop = asyncio.get_running_loop()
        now = loop.time()
        again = True
        while again and budget > 0:
            again = False
            for ctx in self.apps.contexts():
                for e in ctx.receive(64):
                    budget -= 1
                    try:
                        self.conns.app_request(ctx, e, now)
                    except Exception:
                        log.exception("app %d request failed", ctx.app.id)
            for ctx in self.apps.contexts():
                if ctx.arm():  # something came in meanwhile
                    again = True
        if budget <= 0:
            loop.call_soon(self._on_app_requests)
        self._arp_flush()
        self._tcp_timer()
        self._flush_tx()

    def _tcp_timer(self) -> None:
        """(Re)schedule the TCP machine's next timer."""
        loop = asyncio.get_running_loop()
        at = self.stack.poll_at()
        if self._tcp_handle is not None:
            if at is not None and self._tcp_handle.when() == at:
                return
            self._tcp_handle.cancel()
            self._tcp_handle = None
        if at is not None:
            self._tcp_handle = loop.call_at(at, self._tcp_tick)

    def _tcp_tick(self) -> None:
        self._tcp_handle = None
        self.stack.poll(asyncio.get_running_loop().time())
        self.conns.run()
        self._arp_flush()
        self._tcp_timer()
        self._flush_tx()

    async def _shutdown_tcp(self, loop) -> None:
        """Reset every connection (peers see RSTs), then let the workers send them."""
        if self.apps is None:
            return
        with contextlib.suppress(Exception):
            loop.remove_reader(self._sp_doorbell)
        await self.apps.close()
        self._flush_tx()
        if self._tcp_handle is not None:
            self._tcp_handle.cancel()
        await asyncio.sleep(0.05)  # the workers drain their rings (RSTs) before they stop
        os.close(self._sp_doorbell)

    def _on_signal(self, sig: int) -> None:
        log.info("%s: shutting down", signal.Signals(sig).name)
        self._stop.set()

    def _watch_workers(self) -> None:
        """A worker whose loop stopped turning is as good as dead."""
        for w in self.workers:
            age = w.heartbeat_age()
            if age > HUNG_AFTER_S:
                log.error("fastpath worker %d (CPU %d) is hung: no heartbeat for %.1f s; stopping",
                          w.index, w.core, age)
                self.exit_code = 1
                self._stop.set()
                return
        asyncio.get_running_loop().call_later(HUNG_AFTER_S / 2, self._watch_workers)

    def _on_link_event(self) -> None:
        for what in self._links.read():
            if what == self._link_state:
                continue
            self._link_state = what
            if what == "removed":
                log.error("interface %s was removed; stopping", self.iface.name)
                self.exit_code = 1
                self._stop.set()
                return
            log.warning("interface %s is %s", self.iface.name, what)

    def _on_worker_exit(self, w: workers.WorkerProc) -> None:
        asyncio.get_running_loop().remove_reader(w.pidfd)
        w.proc.poll()
        log.error("fastpath worker %d (CPU %d) died: %s; stopping", w.index, w.core, w.exit_reason())
        self.exit_code = 1
        self._stop.set()

    async def _probe_address(self) -> None:
        """RFC 5227 probes: refuse to start if another host answers for our address."""
        self.arp.probe(2)
        self._arp_flush()
        await asyncio.sleep(self.cfg["arp.probe_wait"])
        if self._conflict is not None:
            raise StartError(f"address {self.ip} is already used on the link by {self._conflict}")

    # ---- exceptions from the workers -----------------------------------------
    def _on_exceptions(self, w: workers.WorkerProc, budget: int = 1024) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(w.fp2sp_efd)
        now = asyncio.get_running_loop().time()
        more = False
        try:
            while budget > 0:
                msgs = w.region.receive(min(budget, 256))
                budget -= len(msgs)
                for msg_type, arg, data in msgs:
                    self._handle_message(w, msg_type, arg, data, now)
                if not msgs and not w.region.arm():
                    break  # empty, and the worker will signal the next one
            else:
                more = True
        finally:
            if more:  # more waiting: let the loop breathe, then carry on
                asyncio.get_running_loop().call_soon(self._on_exceptions, w)
            self._arp_flush()
            self._tcp_timer()
            self._flush_tx()

    def _handle_message(self, w: workers.WorkerProc, msg_type: int, arg: int, data: bytes, now: float) -> None:
        """One message from a worker; a bug in handling it costs that message only."""
        try:
            if msg_type == lib.TAS_MSG_EXCEPTION:
                self.stats["exceptions"] += 1
                self._handle_exception(w, arg, data, now)
            elif msg_type == lib.TAS_MSG_FLOW_EVENT:
                self.conns.flow_event(w.index, data, now)
            elif msg_type == lib.TAS_MSG_APP_REMOVED:
                pass
            elif msg_type in (lib.TAS_MSG_CAPTURE_STARTED, lib.TAS_MSG_CAPTURE_STOPPED):
                self.captures.answer(w.index, msg_type, arg, data)
            else:
                self.stats["bad_messages"] += 1
        except Exception:
            self.stats["handler_errors"] += 1
            if self.stats["handler_errors"] <= 10:
                log.exception("error handling a message from worker %d", w.index)

    def _handle_exception(self, w: workers.WorkerProc, reason: int, frame: bytes, now: float) -> None:
        try:
            eth = EthernetFrame.parse(frame)
            if reason == lib.TAS_EXC_ARP and eth.ethertype == EtherType.ARP:
                self.arp.receive(ArpPacket.parse(eth.payload), now)
            elif reason == lib.TAS_EXC_ICMP:
                self.stats["icmp_rx"] += 1
            elif reason == lib.TAS_EXC_TCP_NOFLOW and eth.ethertype == EtherType.IPV4:
                self.conns.segment(eth, now)
            else:
                self.stats["bad_frames"] += 1
        except WireError:
            self.stats["bad_frames"] += 1

    # ---- sending ------------------------------------------------------------------
    def _send(self, frame: bytes, worker: int = 0) -> None:
        if len(frame) < MIN_FRAME:
            frame += bytes(MIN_FRAME - len(frame))
        if self.workers[worker].try_send(lib.TAS_MSG_TX_FRAME, frame):
            self.stats["tx_frames"] += 1
        else:
            self.stats["tx_ring_full"] += 1

    def _flush_tx(self) -> None:
        """Wake the workers for what was queued; what waits for room in a
        ring is tried again shortly (the workers do not say when they drain)."""
        waiting = [w for w in self.workers if not w.flush()]
        if self.conns is not None and not self.conns.flush():
            waiting.append(self.conns)
        if waiting and self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_RETRY_S, self._flush_retry)

    def _flush_retry(self) -> None:
        self._flush_handle = None
        self._flush_tx()

    # ---- ARP driver -------------------------------------------------------------
    def _arp_flush(self) -> None:
        loop = asyncio.get_running_loop()
        for a in self.arp.take_actions():
            if isinstance(a, SendArp):
                self._send(EthernetFrame(a.dst, MacAddr(self.mac), EtherType.ARP, a.packet.emit()).emit())
            elif isinstance(a, (Resolved, Unreachable)):
                for fut in self._arp_waiters.pop(a.ip, []):
                    if not fut.done():
                        fut.set_result(a)
                if self.conns is not None:
                    if isinstance(a, Resolved):
                        self.conns.neighbour_resolved(a.ip, a.mac)
                    else:
                        self.conns.neighbour_unreachable(a.ip)
            elif isinstance(a, Conflict):
                if self._conflict is None:
                    log.warning("address conflict: %s also claims %s", a.mac, self.ip)
                self._conflict = a.mac
        self._flush_tx()
        if self._arp_timer is not None:
            self._arp_timer.cancel()
            self._arp_timer = None
        at = self.arp.poll_at()
        if at is not None:
            self._arp_timer = loop.call_at(at, self._arp_tick)

    def _arp_tick(self) -> None:
        self._arp_timer = None
        self.arp.poll(asyncio.get_running_loop().time())
        self._arp_flush()

    # ---- control commands ----------------------------------------------------------
    async def _cmd_status(self, req: dict) -> dict:
        _, fp = self._fastpath_stats()
        return {"version": __version__, "pid": os.getpid(), "uptime_s": round(time.time() - self.started, 3),
                "interface": self.iface.name, "address": str(self.address), "mac": self.mac, "mtu": self.mtu,
                "gateway": str(self.cfg["gateway"]) if self.cfg["gateway"] else None,
                "config": self.cfg.source, "log_level": self.cfg["log_level"], "reloads": dict(self.reloads),
                **self.backend.describe(), "workers": [w.describe() for w in self.workers],
                "apps": len(self.apps.apps), "connections": len(self.conns.flows),
                "listeners": len(self.conns.listener_owner),
                "totals": {k: fp.get(k, 0) for k in ("rx_frames", "rx_bytes", "tx_frames", "tx_bytes",
                                                     "rx_exceptions", "tcp_retx_segs")} |
                {"drops": sum(fp.get("drops", {}).values())}}

    async def _cmd_stats(self, req: dict) -> dict:
        per_worker, total = self._fastpath_stats()
        return {"fastpath": total, "workers": per_worker,
                "slowpath": {**self.stats, "sp2fp_deferred": sum(w.deferred for w in self.workers),
                             "sp2fp_waiting": sum(len(w.backlog) for w in self.workers),
                             "sp2app_waiting": sum(len(c.backlog) for c in self.conns.backlogged),
                             "arp": dict(self.arp.stats), "tcp": self.conns.describe(),
                             "apps": {**self.apps.stats, "registered_now": len(self.apps.apps),
                                      "lingering_now": len(self.apps.lingering),
                                      "memory_bytes": self.apps.memory_bytes()}}}

    async def _cmd_capture_start(self, req: dict) -> dict:
        return await self.captures.start(req, current_client())

    async def _cmd_capture_stop(self, req: dict) -> dict:
        return await self.captures.stop_request(current_client())

    async def _cmd_capture_status(self, req: dict) -> dict:
        return self.captures.status(current_client())

    async def _cmd_flows(self, req: dict) -> dict:
        """Connections, filtered (each filter optional): state (a name, any
        case, or a list), port (local or remote), address (the remote's or
        ours), app (its id)."""
        states = req.get("state") or []
        states = [states] if isinstance(states, str) else states
        if not isinstance(states, list) or not all(isinstance(x, str) for x in states):
            raise CommandError(f"state must be a name or a list of names, not {states!r}")
        states = {x.upper() for x in states}
        port, app, address = req.get("port"), req.get("app"), req.get("address")
        for name, v in (("port", port), ("app", app)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise CommandError(f"{name} must be a number, not {v!r}")
        if address is not None:
            try:
                address = IPv4Address(address)
            except ValueError:
                raise CommandError(f"not an IPv4 address: {address!r}") from None
        return {"flows": self.conns.flow_list(states, port, address, app)}

    async def _cmd_apps(self, req: dict) -> dict:
        return {"apps": [a.describe() for a in self.apps.apps.values()]}

    async def _cmd_arp(self, req: dict) -> dict:
        return {"entries": self.arp.snapshot(asyncio.get_running_loop().time())}

    async def _cmd_arp_resolve(self, req: dict) -> dict:
        try:
            ip = IPv4Address(req.get("ip"))
        except ValueError:
            raise CommandError(f"not an IPv4 address: {req.get('ip')!r}") from None
        if ip not in self.network or ip in (self.ip, self.network.broadcast_address, self.network.network_address):
            raise CommandError(f"{ip} is not a neighbour on {self.network}")
        loop = asyncio.get_running_loop()
        mac = self.arp.lookup(ip, loop.time())
        if mac is None:
            fut = loop.create_future()
            self._arp_waiters.setdefault(ip, []).append(fut)
            self._arp_flush()
            limit = self.cfg["arp.retry_interval"] * (2 ** self.cfg["arp.retries"]) + 1.0
            try:
                outcome = await asyncio.wait_for(fut, limit)
            except asyncio.TimeoutError:
                outcome = Unreachable(ip)
            mac = outcome.mac if isinstance(outcome, Resolved) else None
        else:
            self._arp_flush()
        return {"ip": str(ip), "mac": str(mac) if mac else None}

    # ---- Prometheus metrics (metrics.listen) ------------------------------------------
    async def _start_metrics(self) -> None:
        if self.cfg["metrics.listen"] is None:
            return
        host, port = self.cfg["metrics.listen"]

        async def page() -> str:
            return exposition(await self._cmd_stats({}), await self._cmd_status({}))
        self._metrics = MetricsServer(host, port, page)
        try:
            await self._metrics.start()
        except OSError as e:
            self._metrics = None
            raise StartError(f"metrics.listen: cannot listen on {host}:{port}: "
                             f"{os.strerror(e.errno) if e.errno else e}") from None
        log.info("metrics on http://%s:%d/metrics", host, self._metrics.port)

    # ---- shutdown --------------------------------------------------------------------
    def close(self) -> None:
        """Stop workers, detach, unmap, unlock; safe after a partial start."""
        workers.stop_all(self.workers)
        if self.backend is not None:
            self.backend.close()
        for w in self.workers:
            w.close()
        self.workers = []
        if self._lock_sock is not None:
            self._lock_sock.close()
            self._lock_sock = None


def _sum_stats(per_worker: list[dict]) -> dict:
    total: dict = {}
    for st in per_worker:
        for k, v in st.items():
            if isinstance(v, dict):
                sub = total.setdefault(k, {})
                for kk, vv in v.items():
                    sub[kk] = sub.get(kk, 0) + vv
            else:
                total[k] = total.get(k, 0) + v
    return total


# ---- command line -------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="tasd", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="tasd: TCP acceleration as a Linux service (slowpath daemon).",
        epilog="configuration file keys (TOML; see systemd/tasd.toml):\n" + "\n".join(
            f"  {o.key:<20} {o.doc}" + ("" if o.default is None else f" [default: {o.default}]")
            for o in config.OPTIONS))
    ap.add_argument("-c", "--config", help="TOML configuration file")
    ap.add_argument("--version", action="version", version=f"tasd {__version__}")
    for o in config.OPTIONS:
        if o.cli:
            ap.add_argument(o.flag, dest=o.key, metavar="VALUE", help=f"overrides {o.key!r} from the file")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(handlers=[sdnotify.log_handler()])
    try:
        overrides = {o.key: config.parse_cli_value(o.key, getattr(args, o.key))
                     for o in config.OPTIONS if o.cli and getattr(args, o.key) is not None}
        cfg = config.load(args.config, overrides)
    except config.ConfigError as e:
        print(f"tasd: error: {e}", file=sys.stderr)
        return 2
    log.setLevel(cfg["log_level"].upper())
    daemon = Daemon(cfg, args.config, overrides)

    def interrupted(sig, _frame):
        # raised wherever the program is; if that is a __del__ or a weakref
        # callback, Python swallows it (unraisable): run() looks at the record
        daemon.early_signal = sig
        raise StartError(f"{signal.Signals(sig).name} during start-up")

    def unraisable(u, default=sys.unraisablehook):
        if not isinstance(u.exc_value, StartError):  # that one is handled through the record
            default(u)
    sys.unraisablehook = unraisable
    # until the event loop takes them over: stop cleanly, with one line
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    try:
        daemon.prepare()
        import uvloop
        return uvloop.run(daemon.run())
    except StartError as e:
        print(f"tasd: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"tasd: error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), file=sys.stderr)
        return 1
    finally:
        daemon.close()


if __name__ == "__main__":
    sys.exit(main())

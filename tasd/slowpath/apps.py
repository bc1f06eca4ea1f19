"""Applications: registration over the app socket, their shared regions, their
contexts' queues with the slowpath, and their flow buffers.

An app connects to the app socket (SOCK_SEQPACKET) and says HELLO; tasd makes
its region (a memfd: header, rings, flow buffers), hands it to every worker,
and sends it to the app with the doorbells.  Each context the app opens brings
an eventfd, passed on to the workers.  The app's socket stays open: when it
closes, the app is gone, and the registry says so (on_gone) before it removes
the app from the workers and drops the region (once the connections the app
had closed are done sending: they finish as on Linux).  A process forked from
an app's registers as another process of it (its parent registers it at the
fork, listing what the child holds: docs/sockets.md).

Everything read from an app's rings is copied out first and checked by the
caller; the rings' geometry comes from the header tasd wrote, never re-read.
"""
from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import ctypes
import errno
import logging
import mmap
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tasd.fastpath.binding import ffi, ipv4_be, lib

log = logging.getLogger("tasd")

REG_SIZE = ffi.sizeof("struct tas_reg_msg")
HOLD_SIZE = ffi.sizeof("struct tas_reg_hold")
FALLOC_PUNCH_HOLE = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
# Answers a context may leave unread beyond its ring before they are dropped:
# each connection brings a few (accepted, error, closed), each request one.
BACKLOG_MAX = 1 << 16
LINGER_MAX_S = 120  # a gone app's closed connections may finish for this long (then reset)


@dataclass
class AppLimits:
    max_conns: int = 4096          # connections (and so buffer slots) per app
    rx_buffer: int = 1 << 17       # bytes per connection, powers of two
    tx_buffer: int = 1 << 17
    contexts: int = 64             # context slots per app
    ring_entries: int = 1024       # entries per app ring
    max_apps: int = 256


class AppContext:
    """One context of an app as the slowpath sees it: it consumes app2sp and
    produces sp2app."""

    def __init__(self, app: "App", index: int, efd: int):
        self.app, self.index, self.efd = app, index, efd
        self._in = app.cursor(index, lib.TAS_RING_APP2SP)
        self._out = app.cursor(index, lib.TAS_RING_SP2APP)
        self._published = False
        self.retired = False  # its process is gone
        self.backlog: collections.deque = collections.deque()  # answers waiting for room in sp2app
        lib.tas_ring_cons_arm(self._in)  # the slowpath waits on the doorbell: ring it

    @property
    def owner(self) -> tuple[int, int]:
        return (self.app.id, self.index)

    def receive(self, limit: int = 256) -> list:
        """Entries from the app, copied out of the ring."""
        out = []
        while len(out) < limit:
            slot = lib.tas_ring_cons_slot(self._in)
            if slot == ffi.NULL:
                break
            e = ffi.new("struct tas_qe *")
            ffi.memmove(e, slot, lib.TAS_QE_SIZE)
            lib.tas_ring_cons_release(self._in, slot)
            out.append(e)
        return out

    def arm(self) -> bool:
        return bool(lib.tas_ring_cons_arm(self._in))

    def send(self, qe_type: int, flow: int = 0, gen: int = 0, flags: int = 0, after=None, **res) -> bool:
        """Queue an answer for the app (res: cookie, status, listener, and conn
        fields rx_off, tx_off, rx_size, tx_size, remote_ip, remote_port,
        local_port).  What finds the ring full waits, in order, for flush(),
        as does an answer whose `after` (a callable) says it may not go yet.
        False only if the app has left BACKLOG_MAX answers unread."""
        entry = (qe_type, flow, gen, flags, res, after)
        if self.backlog or not self._put(entry):
            if len(self.backlog) >= BACKLOG_MAX:
                return False
            self.backlog.append(entry)
        return True

    def flush(self) -> bool:
        """Move waiting answers into the ring as the app makes room; True once
        none waits."""
        while self.backlog and self._put(self.backlog[0]):
            self.backlog.popleft()
        return not self.backlog

    def _put(self, entry: tuple) -> bool:
        qe_type, flow, gen, flags, res, after = entry
        if after is not None and not after():
            return False
        slot = lib.tas_ring_prod_slot(self._out)
        if slot == ffi.NULL:
            return False
        e = ffi.cast("struct tas_qe *", slot)
        e.type, e.flow, e.gen, e.flags = qe_type, flow, gen, flags
        ffi.memmove(ffi.addressof(e.u), b"\0" * ffi.sizeof(e.u), ffi.sizeof(e.u))
        for k, v in res.items():
            if qe_type == lib.TAS_QE_FLOW_STATE:
                setattr(e.u.state, k, v)
            elif qe_type == lib.TAS_QE_INFO_ANSWER:
                setattr(e.u.info, k, v)
            elif k in ("cookie", "status", "listener"):
                setattr(e.u.res, k, v)
            else:
                setattr(e.u.res.conn, k, v)
        lib.tas_ring_prod_publish(self._out, slot)
        self._published = True
        return True

    def wake(self) -> None:
        if self._published:
            self._published = False
            if lib.tas_ring_prod_wake_needed(self._out):
                with contextlib.suppress(OSError):
                    os.eventfd_write(self.efd, 1)


class BufferPool:
    """Fixed slots of (rx, tx) buffers in an app's region, the last freed
    taken first.  A freed slot's pages go back to the system (punched out of
    the memfd), except for the WARM most recent ones: a connection that
    follows another one then finds its pages in place (a punch and 64 page
    faults saved per connection where connections come and go)."""

    WARM = 32

    def __init__(self, fd: int, base_off: int, area: int, rx: int, tx: int):
        self.fd, self.base_off, self.rx, self.tx = fd, base_off, rx, tx
        self.slot = rx + tx
        self.nslots = area // self.slot
        self._free = list(range(self.nslots - 1, -1, -1))
        self._warm: set[int] = set()  # free slots whose pages were kept

    def alloc(self) -> int | None:
        if not self._free:
            return None
        slot = self._free.pop()
        self._warm.discard(slot)
        return slot

    def offsets(self, slot: int) -> tuple[int, int]:
        rx_off = self.base_off + slot * self.slot
        return rx_off, rx_off + self.rx

    def free(self, slot: int) -> None:
        if len(self._warm) < self.WARM:
            self._warm.add(slot)
        else:
            _punch_hole(self.fd, self.base_off + slot * self.slot, self.slot)
        self._free.append(slot)

    @property
    def in_use(self) -> int:
        return self.nslots - len(self._free)


_libc = ctypes.CDLL(None, use_errno=True)


def _punch_hole(fd: int, off: int, length: int) -> None:
    """Give the pages of [off, off+length) of a memfd back (Python has no fallocate)."""
    _libc.fallocate(fd, FALLOC_PUNCH_HOLE, ctypes.c_long(off), ctypes.c_long(length))


class App:
    def __init__(self, app_id: int, sock: socket.socket, pid: int, uid: int, name: str, limits: AppLimits,
                 nworkers: int):
        self.id, self.sock, self.pid, self.uid, self.name = app_id, sock, pid, uid, name
        self.command = _cmdline(pid) or name
        self.limits = limits
        self.started = time.time()
        buf_area = limits.max_conns * (limits.rx_buffer + limits.tx_buffer)
        size = lib.fp_app_region_bytes(limits.contexts, nworkers, limits.ring_entries, buf_area)
        self.fd = os.memfd_create(f"tasd-app{app_id}", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        self.size = size
        self._map = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._buf = ffi.from_buffer(self._map)
        self.hdr = ffi.cast("struct tas_app_hdr *", self._buf)
        if lib.fp_app_region_init(self.hdr, size, app_id, limits.contexts, nworkers, limits.ring_entries,
                                  buf_area) != 0:
            raise OSError(errno.EINVAL, "app region layout")
        # a forked child shows it to register as another process of this app:
        # only processes that map the region can read it
        self.hdr.join_secret = int.from_bytes(os.urandom(8), "little") or 1
        self.procs: dict[socket.socket, int] = {sock: pid}  # registration socket -> pid
        self.buffers = BufferPool(self.fd, self.hdr.buf_off, self.hdr.buf_size, limits.rx_buffer, limits.tx_buffer)
        self.contexts: dict[int, AppContext] = {}
        self.ctx_proc: dict[int, socket.socket] = {}  # context -> the process (socket) that opened it
        self.forked: set[socket.socket] = set()  # processes registered by the parent that forked them
        self.posix = False  # the sockets layer's: a process that ends closes its connections (TAS_REG_F_POSIX)
        self.conns: set[int] = set()        # conn ids owned by the app (the connection manager's)
        self.listeners: set[int] = set()

    def cursor(self, ctx: int, which: int):
        c = ffi.new("struct tas_ring_cursor *")
        off = lib.tas_app_ring_off(self.hdr, ctx, which)
        if lib.tas_ring_cursor_init(c, ffi.cast("struct tas_ring *", self._buf + off), lib.TAS_QE_SIZE,
                                    self.size - off) != 0:
            raise OSError(errno.EPROTO, "app ring")
        return c

    @property
    def memory_bytes(self) -> int:
        """Memory the region really uses (pages touched), not its size."""
        try:
            return os.fstat(self.fd).st_blocks * 512
        except OSError:
            return 0

    def describe(self) -> dict:
        return {"app": self.id, "pid": self.pid, "uid": self.uid, "name": self.name, "command": self.command,
                "pids": sorted(self.procs.values()),
                "contexts": len(self.contexts), "connections": len(self.conns), "listeners": len(self.listeners),
                "memory_bytes": self.memory_bytes, "region_bytes": self.size,
                "uptime_s": round(time.time() - self.started, 3)}

    def close(self) -> None:
        for c in self.contexts.values():
            with contextlib.suppress(OSError):
                os.close(c.efd)
        self.contexts.clear()
        if self._buf is not None:
            self.hdr = None
            ffi.release(self._buf)
            self._buf = None
            self._map.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)
        for sock in self.procs:
            with contextlib.suppress(OSError):
                sock.close()


def _reg(msg_type: int, **fields) -> bytes:
    m = ffi.new("struct tas_reg_msg *")
    m.magic, m.abi_version, m.type = lib.TAS_ABI_MAGIC, lib.TAS_ABI_VERSION, msg_type
    for k, v in fields.items():
        if k == "error":
            v = v.encode()[:ffi.sizeof(m.error) - 1]
            ffi.memmove(m.error, v, len(v))
        else:
            setattr(m, k, v)
    return ffi.buffer(m)[:]


class AppRegistry:
    """The app socket and the apps behind it."""

    def __init__(self, path: str, workers: list, limits: AppLimits, sp_doorbell: int,
                 on_gone: Callable[..., bool], mode: int = 0o666, address=None, gateway=None):
        self.path = Path(path)
        # what apps learn of tasd's address at registration (the sockets layer
        # decides with it which connections tasd carries)
        self.identity = {"ip": ipv4_be(address.ip) if address else 0, "gateway": ipv4_be(gateway) if gateway else 0,
                         "prefix_len": address.network.prefixlen if address else 0}
        self.workers = workers
        self.limits = limits
        self.sp_doorbell = sp_doorbell
        self.on_gone = on_gone
        self.mode = mode
        self.apps: dict[int, App] = {}
        self._sock: socket.socket | None = None
        self.stats = {"registered": 0, "refused": 0, "gone": 0, "contexts": 0, "joined": 0}
        # apps gone whose closed connections still send from their regions
        self.lingering: dict[int, App] = {}
        self.on_proc_gone: Callable[[App, socket.socket, set], None] = lambda app, proc, ctxs: None
        # a process forked (its child holds what it listed) or let go of what it held
        self.on_fork: Callable[[App, socket.socket, list], None] = lambda app, proc, holds: None
        self.on_release: Callable[[App, socket.socket, list], None] = lambda app, proc, holds: None

    async def start(self) -> None:
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as probe:
                try:
                    probe.connect(str(self.path))
                    raise OSError(errno.EADDRINUSE, f"app socket {self.path} is in use by another tasd")
                except (ConnectionRefusedError, FileNotFoundError):
                    self.path.unlink()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        s.bind(str(self.path))
        os.chmod(self.path, self.mode)
        s.listen(64)
        self._sock = s
        asyncio.get_running_loop().add_reader(s.fileno(), self._accept)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                return
            conn.setblocking(False)
            asyncio.get_running_loop().add_reader(conn.fileno(), self._on_message, conn, [None, []])

    def _on_message(self, conn: socket.socket, holder: list) -> None:
        """holder[0]: the App once registered; holder[1]: what a forking
        parent said the child holds, until its HELLO."""
        while True:
            try:
                data, anc, _, _ = conn.recvmsg(max(REG_SIZE, HOLD_SIZE), socket.CMSG_SPACE(4 * 4))
            except BlockingIOError:
                return
            except OSError:
                data, anc = b"", []
            fds = _fds(anc)
            if not data:  # closed: the app is gone (or never finished registering)
                for fd in fds:
                    os.close(fd)
                asyncio.get_running_loop().remove_reader(conn.fileno())
                app = holder[0]
                if app is not None and len(app.procs) > 1:
                    self._proc_gone(app, conn)
                elif app is not None:
                    self._gone(app)
                else:
                    conn.close()
                return
            kept = set()
            try:
                kept = self._handle(conn, holder, data, fds)
            except OSError as e:
                self._refuse(conn, e.errno or errno.EPROTO, str(e))
            for fd in fds:
                if fd not in kept:
                    os.close(fd)

    def _refuse(self, conn: socket.socket, err: int, why: str) -> None:
        self.stats["refused"] += 1
        if err == errno.EINVAL and "is not free" in why:  # processes of one app racing for a slot: they retry
            log.debug("app refused: %s", why)
        else:
            log.warning("app refused: %s", why)
        with contextlib.suppress(OSError):
            conn.sendmsg([_reg(lib.TAS_REG_REFUSED, status=err, error=why)])

    def _handle(self, conn: socket.socket, holder: list, data: bytes, fds: list[int]) -> set[int]:
        """Carry out one registration message; returns the fds kept."""
        if len(data) == HOLD_SIZE:
            self._hold_message(conn, holder, data)
            return set()
        if len(data) != REG_SIZE:
            raise OSError(errno.EPROTO, "bad registration message size")
        m = ffi.from_buffer("struct tas_reg_msg *", data)
        if m.magic != lib.TAS_ABI_MAGIC or m.abi_version != lib.TAS_ABI_VERSION:
            raise OSError(errno.EPROTO, f"ABI version {m.abi_version} is not tasd's {lib.TAS_ABI_VERSION}")
        if m.type == lib.TAS_REG_HELLO and holder[0] is None and m.secret:
            holder[0] = self._join(conn, m.app_id, m.secret, holder[1])
            holder[1] = []
            return set()
        if m.type == lib.TAS_REG_HELLO and holder[0] is None:
            holder[0] = self._register(conn, ffi.string(m.name).decode(errors="replace"))
            holder[0].posix = bool(m.flags & lib.TAS_REG_F_POSIX)
            return set()
        if m.type == lib.TAS_REG_CTX_OPEN and holder[0] is not None and len(fds) == 1:
            if m.pid > 0 and conn in holder[0].forked:  # its own pid (the parent connected the socket)
                holder[0].procs[conn] = m.pid
            self._open_context(holder[0], m.ctx, fds[0], conn)
            return {fds[0]}
        raise OSError(errno.EPROTO, "unexpected registration message")

    def _hold_message(self, conn: socket.socket, holder: list, data: bytes) -> None:
        """HOLD (a forking parent, before its child's HELLO) or RELEASE (a
        registered process letting go)."""
        m = ffi.from_buffer("struct tas_reg_hold *", data)
        if m.magic != lib.TAS_ABI_MAGIC or m.abi_version != lib.TAS_ABI_VERSION or m.n > lib.TAS_REG_HOLD_MAX:
            raise OSError(errno.EPROTO, "bad hold message")
        holds = [(m.e[i].kind, m.e[i].id, m.e[i].gen) for i in range(m.n)]
        if m.type == lib.TAS_REG_HOLD and holder[0] is None:
            if len(holder[1]) + len(holds) > 16 * self.limits.max_conns:
                raise OSError(errno.E2BIG, "more held than an app can have")
            holder[1].extend(holds)
        elif m.type == lib.TAS_REG_RELEASE and holder[0] is not None:
            self.on_release(holder[0], conn, holds)
        else:
            raise OSError(errno.EPROTO, "unexpected hold message")

    def _register(self, conn: socket.socket, name: str) -> App:
        if len(self.apps) >= self.limits.max_apps:
            raise OSError(errno.EUSERS, f"too many apps (limit {self.limits.max_apps})")
        pid, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        app_id = next(i for i in range(self.limits.max_apps) if i not in self.apps and i not in self.lingering)
        app = App(app_id, conn, pid, uid, name or _comm(pid), self.limits, len(self.workers))
        for w in self.workers:
            w.send_fd(lib.TAS_MSG_APP_ADD, app.fd, app_id=app_id, size=app.size)
        self.apps[app_id] = app
        fds = [app.fd, self.sp_doorbell] + [w.doorbell_efd for w in self.workers]
        conn.sendmsg([_reg(lib.TAS_REG_WELCOME, app_id=app_id, nctx=self.limits.contexts,
                           nworkers=len(self.workers), region_size=app.size, max_conns=self.limits.max_conns,
                           **self.identity)],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        self.stats["registered"] += 1
        log.info("app %d registered: %s (pid %d, uid %d)", app_id, app.name, pid, uid)
        return app

    def _join(self, conn: socket.socket, app_id: int, secret: int, holds: list) -> App:
        """A process forked from an app's registers as that app's (it has the
        region mapped, so it shows the secret in its header).  With holds,
        its parent registers it at the fork: the child holds those too."""
        app = self.apps.get(app_id)
        pid, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if app is None or secret != app.hdr.join_secret or uid != app.uid:
            raise OSError(errno.EPERM, f"pid {pid} may not join app {app_id}")
        app.procs[conn] = pid
        if holds:
            app.forked.add(conn)
            self.on_fork(app, conn, holds)
        conn.sendmsg([_reg(lib.TAS_REG_WELCOME, app_id=app.id, nctx=self.limits.contexts,
                           nworkers=len(self.workers), region_size=app.size, max_conns=self.limits.max_conns,
                           **self.identity)])
        self.stats["joined"] += 1
        log.info("app %d: pid %d joined (forked from it)", app.id, pid)
        return app

    def _proc_gone(self, app: App, conn: socket.socket) -> None:
        """One of an app's processes is gone: its contexts' connections reset,
        their listeners closed; the app stays for the others."""
        pid = app.procs.pop(conn)
        app.forked.discard(conn)
        ctxs = {i for i, p in app.ctx_proc.items() if p is conn}
        log.info("app %d: pid %d gone (%d context(s))", app.id, pid, len(ctxs))
        self.on_proc_gone(app, conn, ctxs)
        for i in ctxs:
            del app.ctx_proc[i]
            app.contexts[i].retired = True  # its slot is not reused: the workers keep it
        if app.sock is conn:
            app.sock, app.pid = next(iter(app.procs.items()))
        conn.close()

    def _open_context(self, app: App, index: int, efd: int, conn: socket.socket) -> None:
        if index >= app.hdr.nctx or index in app.contexts:
            raise OSError(errno.EINVAL, f"context {index} is not free")
        app.contexts[index] = AppContext(app, index, efd)
        app.ctx_proc[index] = conn
        for w in self.workers:
            w.send_fd(lib.TAS_MSG_CTX_ADD, efd, app_id=app.id, ctx=index)
        conn.sendmsg([_reg(lib.TAS_REG_CTX_OPENED, app_id=app.id, ctx=index)])
        self.stats["contexts"] += 1

    def _gone(self, app: App) -> None:
        self.apps.pop(app.id, None)
        self.stats["gone"] += 1
        log.info("app %d gone: %s (pid %d)", app.id, app.name, app.pid)
        if self.on_gone(app):  # reset its connections, remove its flows first
            # what it had closed still goes out, from its region
            log.info("app %d: %d closed connection(s) still sending", app.id, len(app.conns))
            self.lingering[app.id] = app
            asyncio.get_running_loop().call_later(LINGER_MAX_S, self._linger_expired, app)
            return
        self._remove(app)

    def _remove(self, app: App) -> None:
        for w in self.workers:
            w.send(lib.TAS_MSG_APP_REMOVE, app_id=app.id)
        app.close()

    def linger_done(self, app: App) -> None:
        """The last closed connection of a gone app finished."""
        if self.lingering.get(app.id) is app:
            del self.lingering[app.id]
            self._remove(app)

    def _linger_expired(self, app: App) -> None:
        if self.lingering.get(app.id) is app:
            log.info("app %d: closed connections still not done after %d s: reset", app.id, LINGER_MAX_S)
            self.on_gone(app, force=True)
            self.linger_done(app)

    def contexts(self):
        for app in list(self.apps.values()):
            yield from list(app.contexts.values())

    def memory_bytes(self) -> int:
        """Memory of the apps' regions, gone apps still sending included."""
        return sum(a.memory_bytes for a in [*self.apps.values(), *self.lingering.values()])

    async def close(self) -> None:
        for app in list(self.apps.values()):
            self._gone(app)
        for app in list(self.lingering.values()):
            self.on_gone(app, force=True)
            self.linger_done(app)
        if self._sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def _fds(ancillary) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _cmdline(pid: int, limit: int = 200) -> str:
    """The process's command line, arguments joined by spaces, cut at limit."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return ""
    text = " ".join(a.decode(errors="replace") for a in args)
    return text if len(text) <= limit else text[:limit - 3] + "..."

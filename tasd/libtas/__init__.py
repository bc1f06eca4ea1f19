"""Python binding of libtas's low-level API (libtas/include/tas.h).

Thin: handles wrap the C objects, negative errnos become OSError, events
become Event tuples.  For asyncio, `await ctx.ready()` sleeps on the
context's descriptor with the loop instead of blocking in tas_wait.

    app = App.open(name="echo")
    ctx = app.context()
    ctx.listen(7, backlog=64)
    while True:
        for ev in ctx.poll():
            ...
        ctx.wait()
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import sys
from dataclasses import dataclass

from ._libtas import ffi, lib

EV_LISTENED, EV_ACCEPTED, EV_CONNECTED = lib.TAS_EV_LISTENED, lib.TAS_EV_ACCEPTED, lib.TAS_EV_CONNECTED
EV_DATA, EV_TX_SPACE, EV_FIN = lib.TAS_EV_DATA, lib.TAS_EV_TX_SPACE, lib.TAS_EV_FIN
EV_ERROR, EV_CLOSED = lib.TAS_EV_ERROR, lib.TAS_EV_CLOSED
EVENT_NAMES = {v: k[len("TAS_EV_"):].lower() for k, v in vars(lib).items() if k.startswith("TAS_EV_")}


def _check(rc: int) -> int:
    if rc < 0:
        raise OSError(-rc, os.strerror(-rc))
    return rc


def _ip_be(ip) -> int:
    return int.from_bytes(ipaddress.IPv4Address(ip).packed, sys.byteorder)


class App:
    """A registration with tasd."""

    def __init__(self, ptr):
        self._p = ptr
        self.contexts: list[Context] = []

    @classmethod
    def open(cls, socket_path: str | None = None, name: str = "python") -> "App":
        out = ffi.new("struct tas_app **")
        _check(lib.tas_app_open(socket_path.encode() if socket_path else ffi.NULL, name.encode(), out))
        return cls(out[0])

    @property
    def max_conns(self) -> int:
        return lib.tas_app_max_conns(self._p)

    @property
    def address(self) -> tuple[ipaddress.IPv4Interface, ipaddress.IPv4Address | None]:
        """tasd's address with its network, and its gateway (None if none)."""
        ip, plen, gw = ffi.new("uint32_t *"), ffi.new("uint32_t *"), ffi.new("uint32_t *")
        lib.tas_app_address(self._p, ip, plen, gw)

        def addr(v):
            return ipaddress.IPv4Address(v.to_bytes(4, sys.byteorder))
        return ipaddress.IPv4Interface(f"{addr(ip[0])}/{plen[0]}"), addr(gw[0]) if gw[0] else None

    def context(self) -> "Context":
        out = ffi.new("struct tas_ctx **")
        _check(lib.tas_ctx_open(self._p, out))
        ctx = Context(out[0])
        self.contexts.append(ctx)
        return ctx

    def close(self) -> None:
        if self._p is not None:
            lib.tas_app_close(self._p)
            self._p = None

    def __enter__(self) -> "App":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Listener:
    def __init__(self, ctx: "Context", ptr):
        self.ctx, self._p = ctx, ptr

    @property
    def port(self) -> int:
        return lib.tas_listener_port(self._p)

    def accept(self, n: int = 1) -> None:
        """Let n more connections be accepted (they arrive as events)."""
        _check(lib.tas_accept(self._p, n))

    def close(self) -> None:
        _check(lib.tas_unlisten(self._p))
        self.ctx._listeners.pop(self._p, None)


class Conn:
    def __init__(self, ctx: "Context", ptr):
        self.ctx, self._p = ctx, ptr
        self.fin = False
        self.error = 0
        self.closed = False

    @property
    def peer(self) -> tuple[str, int]:
        ip, port = ffi.new("uint32_t *"), ffi.new("uint16_t *")
        lib.tas_conn_peer(self._p, ip, port)
        return str(ipaddress.IPv4Address(ip[0].to_bytes(4, sys.byteorder))), port[0]

    @property
    def local_port(self) -> int:
        return lib.tas_conn_local_port(self._p)

    @property
    def rx_ready(self) -> int:
        return lib.tas_rx_ready(self._p)

    @property
    def tx_space(self) -> int:
        return lib.tas_tx_space(self._p)

    def send(self, data: bytes) -> int:
        """Bytes taken (maybe fewer than given; 0 if no room now)."""
        rc = lib.tas_send(self._p, data, len(data))
        if rc == -errno.EAGAIN:
            return 0
        return _check(rc)

    def recv(self, n: int = 65536) -> bytes | None:
        """Up to n bytes; b"" at end of stream; None if nothing is there yet."""
        buf = ffi.new("char[]", n)
        rc = lib.tas_recv(self._p, buf, n)
        if rc == -errno.EAGAIN:
            return None
        return ffi.buffer(buf, _check(rc))[:]

    def shutdown(self) -> None:
        _check(lib.tas_shutdown(self._p))

    def close(self) -> None:
        _check(lib.tas_close(self._p))
        self.closed = True

    def abort(self) -> None:
        _check(lib.tas_abort(self._p))
        self.closed = True


@dataclass
class Event:
    type: int
    status: int = 0
    conn: Conn | None = None
    listener: Listener | None = None
    cookie: int = 0
    bytes: int = 0

    @property
    def name(self) -> str:
        return EVENT_NAMES.get(self.type, str(self.type))


class Context:
    """A context: queues to tasd, for one thread at a time."""

    def __init__(self, ptr):
        self._p = ptr
        self._conns: dict = {}       # C pointer -> Conn
        self._listeners: dict = {}
        self._events = ffi.new("struct tas_event[]", 64)

    @property
    def fd(self) -> int:
        return lib.tas_ctx_fd(self._p)

    def listen(self, port: int, backlog: int = 128, reuseport: bool = False, cookie: int = 0) -> None:
        _check(lib.tas_listen(self._p, port, backlog, lib.TAS_LISTEN_REUSEPORT if reuseport else 0, cookie))

    def connect(self, ip, port: int, lport: int = 0, cookie: int = 0) -> None:
        _check(lib.tas_connect(self._p, _ip_be(ip), port, lport, cookie))

    def poll(self) -> list[Event]:
        out = []
        while True:
            n = _check(lib.tas_poll(self._p, self._events, len(self._events)))
            for i in range(n):
                out.append(self._event(self._events[i]))
            if n < len(self._events) - 1:
                return out

    def _event(self, e) -> Event:
        conn = lst = None
        if e.listener != ffi.NULL:
            lst = self._listeners.get(e.listener)
            if lst is None:
                lst = self._listeners[e.listener] = Listener(self, e.listener)
        if e.conn != ffi.NULL:
            conn = self._conns.get(e.conn)
            if conn is None:
                conn = self._conns[e.conn] = Conn(self, e.conn)
        ev = Event(e.type, e.status, conn, lst, e.cookie, e.bytes)
        if e.type == EV_FIN and conn:
            conn.fin = True
        elif e.type == EV_ERROR and conn:
            conn.error = e.status
        elif e.type == EV_CLOSED and conn:
            self._conns.pop(e.conn, None)  # the C handle goes at the next poll
            conn._p = None
        return ev

    def wait(self, timeout_ms: int = -1) -> bool:
        """Block until events may be pending (True) or the timeout (False)."""
        return _check(lib.tas_wait(self._p, timeout_ms)) > 0

    async def ready(self) -> None:
        """Wait with the running asyncio loop until events may be pending."""
        if lib.tas_ctx_arm(self._p):
            return
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        loop.add_reader(self.fd, lambda: fut.done() or fut.set_result(None))
        try:
            await fut
        finally:
            loop.remove_reader(self.fd)
            try:
                os.eventfd_read(self.fd)
            except BlockingIOError:
                pass
            lib.tas_ctx_disarm(self._p)

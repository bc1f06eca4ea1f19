"""Thin Python binding over the fastpath's C module (tasd.fastpath._fastpath).

Converts types and turns C failures into FastpathError; nothing else.
Sizes, layouts, enums and constants come from the C headers through cffi.
"""
from __future__ import annotations

import mmap
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tasd.wire import as_ipv4

from ._fastpath import ffi, lib

BPF_DIR = Path(__file__).resolve().parent / "bpf"
XDP_OBJECT = BPF_DIR / "tasd_xdp.bpf.o"
TAP_STEER_OBJECT = BPF_DIR / "tasd_tap.bpf.o"
_ERRLEN = 256


class FastpathError(RuntimeError):
    """A fastpath setup step failed; the message is one line for operators."""


def _enum_names(ctype: str, prefix: str) -> list[str]:
    """Names of a C enum's values 0..N-1 (without the __COUNT sentinel),
    lower-cased and without the prefix: tasd's counter names."""
    elements = ffi.typeof(ctype).elements
    count = max(v for v, n in elements.items() if n.endswith("__COUNT"))
    return [elements[i][len(prefix):].lower() for i in range(count)]


DROP_REASONS = _enum_names("enum tas_drop", "TAS_DROP_")
EXCEPTION_REASONS = _enum_names("enum tas_exc", "TAS_EXC_")
STATS_FIELDS = [name for name, _ in ffi.typeof("struct tas_fp_stats").fields if name not in ("drops", "exceptions")]


def _call(fn, *args):
    """Call a C function whose last two parameters are (char *err, size_t
    errlen) and that fails with NULL or a negative number."""
    err = ffi.new("char[]", _ERRLEN)
    r = fn(*args, err, _ERRLEN)
    if r == ffi.NULL or (isinstance(r, int) and r < 0):
        raise FastpathError(ffi.string(err).decode(errors="replace"))
    return r


def ipv4_be(addr) -> int:
    """An IPv4 address as the C side's "network byte order" uint32_t: the
    integer whose in-memory bytes are the address's four octets."""
    return int.from_bytes(as_ipv4(addr).packed, sys.byteorder)


def now_ns() -> int:
    return lib.fp_now_ns()


# ---- devices -------------------------------------------------------------

class Device:
    """An fp_dev owned by Python until it is closed or handed to a wrapper."""

    def __init__(self, ptr):
        self.ptr = ptr

    @property
    def kind(self) -> str:
        return ffi.string(lib.fp_dev_kind(self.ptr)).decode()

    def capture(self, path: str | os.PathLike | None = None) -> "Device":
        """Wrap this device in the pcap writer (the wrapper owns it from now):
        capturing every frame to path, or, without one, idle until the
        slowpath starts a capture (TAS_MSG_CAPTURE_START)."""
        if path is None:
            wrapped = Device(_call(lib.fp_dev_capture_wrap, self.ptr))
        else:
            wrapped = Device(_call(lib.fp_dev_pcap_wrap, self.ptr, str(path).encode()))
        self.ptr = None
        return wrapped

    def close(self) -> None:
        if self.ptr is not None:
            lib.fp_dev_close(self.ptr)
            self.ptr = None

    @staticmethod
    def tap(fd: int, mtu: int, nbufs: int = 1024) -> "Device":
        return Device(_call(lib.fp_dev_tap_open, fd, mtu, nbufs))

    @staticmethod
    def xdp(xsk_fd: int, umem_fd: int, shared_fd: int, worker_id: int, mtu: int) -> "Device":
        return Device(_call(lib.fp_dev_xdp_open, xsk_fd, umem_fd, shared_fd, worker_id, mtu))


class MemDevice(Device):
    """In-memory device for tests: inject frames, take what was sent."""

    def __init__(self, nbufs: int = 512, mtu: int = 1500):
        ptr = lib.fp_dev_mem_open(nbufs, mtu)
        if ptr == ffi.NULL:
            raise FastpathError("out of memory for the in-memory device")
        super().__init__(ptr)
        self._mem = ptr  # stays valid under a capture wrapper
        self._out = ffi.new("uint8_t[]", 4096)

    def inject(self, frame: bytes) -> None:
        if lib.fp_dev_mem_inject(self._mem, frame, len(frame)) != 0:
            raise FastpathError("in-memory device: RX queue full or frame too long")

    def take(self) -> bytes | None:
        n = lib.fp_dev_mem_take(self._mem, self._out, len(self._out))
        return None if n < 0 else bytes(ffi.buffer(self._out, n))

    def take_all(self) -> list[bytes]:
        out = []
        while (f := self.take()) is not None:
            out.append(f)
        return out

    @property
    def free_bufs(self) -> int:
        return lib.fp_dev_mem_free_bufs(self._mem)


# ---- capture (slowpath side) -------------------------------------------------

def capture_command(capture_id: int, expr: str, snaplen: int, limit: int = 0):
    """A TAS_MSG_CAPTURE_START message (struct tas_capture_cmd) with expr
    compiled by libpcap; FastpathError with libpcap's reason if it does not
    compile."""
    c = ffi.new("struct tas_capture_cmd *")
    _call(lib.fp_capture_compile, expr.encode(), snaplen, c)
    c.id, c.snaplen, c.limit = capture_id, snaplen, limit
    return c


def capture_file_init(fd: int, snaplen: int) -> None:
    """Truncate fd and write a pcap header (the format's one definition is in C)."""
    _call(lib.fp_capture_file_init, fd, snaplen)


def capture_report(data: bytes) -> dict:
    """The counts in a TAS_MSG_CAPTURE_STARTED/_STOPPED message."""
    r = ffi.new("struct tas_capture_report *")
    ffi.memmove(r, data, min(len(data), ffi.sizeof(r[0])))
    return {name: getattr(r, name) for name, _ in ffi.typeof("struct tas_capture_report").fields}


# ---- TAP and AF_XDP setup (slowpath side) ---------------------------------

def tap_open_queues(ifname: str, nqueues: int) -> list[int]:
    fds = ffi.new("int[]", nqueues)
    _call(lib.fp_tap_open_queues, ifname.encode(), nqueues, fds)
    return list(fds)


def tap_set_steering(fd: int, ip_be: int, nqueues: int) -> None:
    _call(lib.fp_tap_set_steering, fd, str(TAP_STEER_OBJECT).encode(), ip_be, nqueues)


@dataclass
class XdpSockets:
    """The UMEM and one AF_XDP socket per worker, all on one queue."""
    umem_fd: int
    shared_fd: int
    zerocopy: bool
    fds: list[int]
    _c: object = None

    @staticmethod
    def create(ifname: str, queue: int, nsockets: int, nframes: int, ring_size: int,
               zerocopy: bool | None) -> "XdpSockets":
        c = ffi.new("struct fp_xdp_sockets *")
        zc = -1 if zerocopy is None else int(zerocopy)
        _call(lib.fp_xdp_sockets_create, ifname.encode(), queue, nsockets, nframes, ring_size, zc, c)
        return XdpSockets(c.umem_fd, c.shared_fd, bool(c.zerocopy), list(c.fds[0:c.nsockets]), c)

    def close(self) -> None:
        if self._c is not None:
            lib.fp_xdp_sockets_close(self._c)
            self._c = None


XDP_MODES = {"auto": lib.FP_XDP_AUTO, "native": lib.FP_XDP_NATIVE, "skb": lib.FP_XDP_SKB}


class XdpProgram:
    """tasd's XDP program attached to an interface."""

    def __init__(self, ifindex: int, mode: str, ip_be: int, xsk_fds: list[int]):
        fds = ffi.new("int[]", xsk_fds)
        self.ifindex = ifindex
        self._p = _call(lib.fp_xdp_prog_attach, str(XDP_OBJECT).encode(), ifindex, XDP_MODES[mode], ip_be,
                        fds, len(xsk_fds))
        self.mode = "native" if lib.fp_xdp_prog_mode(self._p) == lib.FP_XDP_NATIVE else "skb"
        self.dispatcher = bool(lib.fp_xdp_prog_dispatcher(self._p))

    def detach(self) -> None:
        if self._p is not None:
            p, self._p = self._p, None
            _call(lib.fp_xdp_prog_detach, p)

    @staticmethod
    def remove_stale(ifindex: int) -> int:
        return _call(lib.fp_xdp_prog_remove_stale, ifindex)

    @staticmethod
    def count(ifindex: int) -> int:
        return lib.fp_xdp_prog_count(ifindex)


# ---- the worker region and its rings --------------------------------------

class WorkerRegion:
    """One worker's shared memory: configuration, status, counters, the two
    message rings and the flow table, in a memfd (never a named file)."""

    def __init__(self, fd: int, size: int):
        self.fd = fd
        self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._buf = ffi.from_buffer(self._map)
        self.shm = ffi.cast("struct tas_worker_shm *", self._buf)
        self._sp2fp = self._fp2sp = None

    @classmethod
    def create(cls, name: str, ring_slots: int = 256, max_flows: int = 0) -> "WorkerRegion":
        size = lib.fp_shm_bytes(ring_slots, max_flows)
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        region = cls(fd, size)
        if lib.fp_shm_init(region.shm, size, ring_slots, max_flows) != 0:
            region.close()
            raise FastpathError(f"bad ring size {ring_slots}")
        return region

    @classmethod
    def attach(cls, fd: int) -> "WorkerRegion":
        return cls(fd, os.fstat(fd).st_size)

    def _cursor(self, off: int):
        c = ffi.new("struct tas_ring_cursor *")
        if lib.tas_ring_cursor_init(c, ffi.cast("struct tas_ring *", self._buf + off), ffi.sizeof("struct tas_msg"),
                                    self.shm.size - off) != 0:
            raise FastpathError("worker region ring is not valid")
        return c

    @property
    def flows(self):
        """The flow table (struct tas_flow[max_flows]), read-only by convention."""
        return ffi.cast("struct tas_flow *", self._buf + self.shm.flows_off)

    @property
    def flow_ctl(self):
        return ffi.cast("struct tas_flow_ctl *", self._buf + self.shm.flow_ctl_off)

    # The slowpath's side: producer of sp2fp, consumer of fp2sp.
    def send(self, msg_type: int, data, arg: int = 0) -> bool:
        """Queue a message for the worker (data: bytes or a cdata struct);
        False if the ring is full.  The caller signals the worker's eventfd
        when wake_needed() says so."""
        if self._sp2fp is None:
            self._sp2fp = self._cursor(self.shm.sp2fp_off)
        if isinstance(data, ffi.CData):
            data = ffi.buffer(data)[:]
        return lib.tas_msg_push(self._sp2fp, msg_type, arg, self.shm.worker_id, lib.fp_now_ns(), data,
                                len(data)) == 0

    def wake_needed(self) -> bool:
        return self._sp2fp is not None and bool(lib.tas_ring_prod_wake_needed(self._sp2fp))

    def receive(self, limit: int = 256) -> list[tuple[int, int, bytes]]:
        """Take up to limit messages from the worker: (type, arg, data)."""
        if self._fp2sp is None:
            self._fp2sp = self._cursor(self.shm.fp2sp_off)
        out = []
        while len(out) < limit:
            slot = lib.tas_ring_cons_slot(self._fp2sp)
            if slot == ffi.NULL:
                break
            m = ffi.cast("struct tas_msg *", slot)
            out.append((m.type, m.arg, bytes(ffi.buffer(m.data, min(m.len, lib.TAS_RING_DATA_MAX)))))
            lib.tas_ring_cons_release(self._fp2sp, slot)
        return out

    def arm(self) -> bool:
        """About to wait for the worker's eventfd: True if messages are
        already waiting (do not wait)."""
        if self._fp2sp is None:
            self._fp2sp = self._cursor(self.shm.fp2sp_off)
        return bool(lib.tas_ring_cons_arm(self._fp2sp))

    def disarm(self) -> None:
        if self._fp2sp is not None:
            lib.tas_ring_cons_disarm(self._fp2sp)

    def stats(self) -> dict:
        """A snapshot of the worker's counters."""
        st = self.shm.stats
        out = {name: getattr(st, name) for name in STATS_FIELDS}
        out["drops"] = {name: st.drops[i] for i, name in enumerate(DROP_REASONS)}
        out["exceptions"] = {name: st.exceptions[i] for i, name in enumerate(EXCEPTION_REASONS)}
        return out

    @property
    def error(self) -> str:
        return ffi.string(self.shm.error).decode(errors="replace")

    def set_error(self, message: str) -> None:
        data = message.encode()[: ffi.sizeof(self.shm.error) - 1]
        ffi.memmove(self.shm.error, data + b"\0", len(data) + 1)
        self.shm.state = lib.TAS_WORKER_FAILED

    def close(self) -> None:
        self._sp2fp = self._fp2sp = None
        if self._map is not None:
            self.shm = None
            ffi.release(self._buf)
            self._buf = None
            self._map.close()
            self._map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Worker:
    """The C worker loop bound to a region and a device."""

    def __init__(self, region: WorkerRegion, device: Device, sp2fp_efd: int = -1, fp2sp_efd: int = -1,
                 sock_fd: int = -1, doorbell_efd: int = -1):
        self._w = _call(lib.fp_worker_new, region.shm, device.ptr, sp2fp_efd, fp2sp_efd, sock_fd, doorbell_efd)
        self.region, self.device = region, device

    def poll(self, now_ns: int | None = None) -> int:
        return lib.fp_worker_poll(self._w, lib.fp_now_ns() if now_ns is None else now_ns)

    def run(self) -> bool:
        """The loop, until stopped (True) or until the device fails (False,
        with the reason in the region's error)."""
        return lib.fp_worker_run(self._w) == 0

    def attach_app(self, app_id: int, base, size: int) -> None:
        """Attach an app region mapped by the caller (in-process use)."""
        _call(lib.fp_worker_app_attach, self._w, app_id, ffi.cast("uint8_t *", base), size)

    def attach_ctx(self, app_id: int, ctx: int, efd: int = -1) -> None:
        _call(lib.fp_worker_ctx_attach, self._w, app_id, ctx, efd)

    def next_deadline(self) -> int:
        return lib.fp_worker_next_deadline(self._w)

    def close(self) -> None:
        if self._w is not None:
            lib.fp_worker_free(self._w)
            self._w = None


def worker_process_init(parent_pid: int = 0) -> None:
    _call(lib.fp_worker_process_init, parent_pid)

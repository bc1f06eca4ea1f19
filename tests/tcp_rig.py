"""A fastpath worker on the in-memory device with one application attached,
driven on a fake clock: the harness plays the peer (frames in and out), the
slowpath (messages on sp2fp/fp2sp) and the app (its rings and buffers)."""
from __future__ import annotations

import dataclasses
import mmap
import os
from ipaddress import IPv4Address

from tasd.fastpath.binding import MemDevice, Worker, WorkerRegion, ffi, ipv4_be, lib
from tasd.wire import (EthernetFrame, EtherType, IpProtocol, Ipv4Packet, MacAddr, SeqNum, TcpFlags, TcpSegment,
                       Timestamps)
from tasd.wire.ipv4 import Ecn

US_MAC, US_IP = MacAddr("02:00:00:00:00:02"), IPv4Address("10.0.0.2")
PEER_MAC, PEER_IP = MacAddr("02:00:00:00:00:03"), IPv4Address("10.0.0.3")
MS = 1_000_000  # ns
T0 = 1_000_000 * MS  # the fake clock starts here


@dataclasses.dataclass
class Out:
    """A segment the worker sent, parsed."""
    seg: TcpSegment
    ecn: Ecn

    @property
    def flags(self):
        return self.seg.flags

    def __getattr__(self, name):
        return getattr(self.seg, name)


class AppSide:
    """The app's view of its region: rings and flow buffers (what libtas does in C)."""

    def __init__(self, region_buf, hdr):
        self.buf, self.hdr = region_buf, hdr
        self.cursors = {}

    def cursor(self, ctx: int, which: int):
        key = (ctx, which)
        if key not in self.cursors:
            c = ffi.new("struct tas_ring_cursor *")
            off = lib.tas_app_ring_off(self.hdr, ctx, which)
            assert lib.tas_ring_cursor_init(c, ffi.cast("struct tas_ring *", self.buf + off), lib.TAS_QE_SIZE,
                                            self.hdr.size - off) == 0
            self.cursors[key] = c
        return self.cursors[key]

    def push(self, ctx: int, which: int, qe_type: int, flow: int, gen: int, **fields) -> bool:
        c = self.cursor(ctx, which)
        slot = lib.tas_ring_prod_slot(c)
        if slot == ffi.NULL:
            return False
        e = ffi.cast("struct tas_qe *", slot)
        e.type, e.flow, e.gen, e.flags = qe_type, flow, gen, fields.pop("flags", 0)
        for k, v in fields.items():  # e.g. bump_len=5 -> e.u.bump.len = 5
            part, name = k.split("_", 1)
            setattr(getattr(e.u, part), name, v)
        lib.tas_ring_prod_publish(c, slot)
        return True

    def pop_all(self, ctx: int, which: int) -> list:
        c, out = self.cursor(ctx, which), []
        while (slot := lib.tas_ring_cons_slot(c)) != ffi.NULL:
            e = ffi.cast("struct tas_qe *", slot)
            out.append(dict(type=e.type, flow=e.flow, gen=e.gen, flags=e.flags, rx_bytes=e.u.update.rx_bytes,
                            tx_acked=e.u.update.tx_acked))
            lib.tas_ring_cons_release(c, slot)
        return out


class Rig:
    APP_ID = 3

    def __init__(self, max_flows: int = 8, buf_size: int = 1 << 20, nbufs: int = 1024):
        self.now = T0
        self.region = WorkerRegion.create("test-tcp", 64, max_flows)
        shm = self.region.shm
        shm.worker_id, shm.nworkers = 0, 1
        shm.ip, shm.mtu, shm.mac = ipv4_be(US_IP), 1500, list(US_MAC.packed)
        self.dev = MemDevice(nbufs=nbufs)
        self.worker = Worker(self.region, self.dev)
        size = lib.fp_app_region_bytes(2, 1, 256, buf_size)
        self._fd = os.memfd_create("test-app", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size)
        self.app_buf = ffi.from_buffer(self._map)
        self.hdr = ffi.cast("struct tas_app_hdr *", self.app_buf)
        assert lib.fp_app_region_init(self.hdr, size, self.APP_ID, 2, 1, 256, buf_size) == 0
        self.worker.attach_app(self.APP_ID, self.app_buf, size)
        self.worker.attach_ctx(self.APP_ID, 0)
        self.app = AppSide(self.app_buf, self.hdr)
        self.next_buf = self.hdr.buf_off
        self.flows = {}   # index -> dict(app positions)
        self.gen = 0

    # ---- slowpath side ---------------------------------------------------------
    def add_flow(self, index: int = 0, *, local_port=80, remote_port=40000, iss=1000, irs=5000, snd_wnd=65535 * 128,
                 wscale=7, mss=1460, ts=True, sack=True, ecn=False, rx_size=1 << 16, tx_size=1 << 16,
                 ts_recent=100, rto_us=1_000_000) -> int:
        self.gen += 1
        p = ffi.new("struct tas_flow_params *")
        p.index, p.gen, p.app_id, p.ctx = index, self.gen, self.APP_ID, 0
        p.local_ip, p.remote_ip = ipv4_be(US_IP), ipv4_be(PEER_IP)
        p.local_port, p.remote_port = local_port, remote_port
        p.remote_mac = list(PEER_MAC.packed)
        p.mss = mss
        p.opts = ((lib.TAS_OPT_TIMESTAMPS if ts else 0) | (lib.TAS_OPT_SACK if sack else 0) |
                  (lib.TAS_OPT_ECN if ecn else 0) | (lib.TAS_OPT_WSCALE if wscale else 0))
        p.snd_wscale = p.rcv_wscale = wscale
        p.snd_una = p.snd_nxt = iss + 1
        p.rcv_nxt = irs + 1
        p.snd_wnd = snd_wnd
        p.ts_recent, p.ts_offset = ts_recent, 7
        p.rto_us = rto_us
        p.rx_off, p.rx_size = self.next_buf, rx_size
        p.tx_off, p.tx_size = self.next_buf + rx_size, tx_size
        self.next_buf += rx_size + tx_size
        assert self.region.send(lib.TAS_MSG_FLOW_ADD, p)
        self.poll()
        assert self.flow(index).state == lib.TAS_FLOW_ACTIVE, "flow not installed"
        self.flows[index] = dict(gen=self.gen, rx_off=p.rx_off, rx_size=rx_size, tx_off=p.tx_off, tx_size=tx_size,
                                 rx_pos=0, tx_pos=0, local_port=local_port, remote_port=remote_port,
                                 irs=irs, iss=iss)
        return index

    def command(self, msg_type: int, index: int, flags: int = 0, timeout_us: int = 0):
        c = ffi.new("struct tas_flow_cmd *")
        c.index, c.gen, c.flags, c.timeout_us = index, self.flows[index]["gen"], flags, timeout_us
        assert self.region.send(msg_type, c)
        self.poll()

    def events(self) -> list:
        out = []
        for t, arg, data in self.region.receive():
            if t == lib.TAS_MSG_FLOW_EVENT:
                ev = ffi.from_buffer("struct tas_flow_event *", data)
                out.append(dict(kind=ev.kind, index=ev.index, snd_una=ev.snd_una, snd_nxt=ev.snd_nxt,
                                rcv_nxt=ev.rcv_nxt, fl=ev.fl))
            else:
                out.append(dict(type=t, arg=arg))
        return out

    def flow(self, index: int = 0):
        return self.region.flows[index]

    # ---- the clock and the loop --------------------------------------------------
    def poll(self):
        while self.worker.poll(self.now):
            pass
        self.worker.poll(self.now)  # one more: timers and lists settle

    def advance(self, ms: float):
        self.now += int(ms * MS)
        self.poll()

    # ---- the peer ---------------------------------------------------------------------
    def peer_segment(self, index: int = 0, *, seq=None, ack=None, flags=TcpFlags.ACK, payload=b"", window=65535,
                     tsval=200, tsecr=None, ts=True, options=(), ecn=Ecn.NOT_ECT) -> bytes:
        f = self.flows[index]
        fl = self.flow(index)
        seq = SeqNum(fl.rcv_nxt) if seq is None else SeqNum(seq)
        ack = SeqNum(fl.snd_nxt) if ack is None else SeqNum(ack)
        opts = tuple(options)
        if ts:
            opts = (Timestamps(tsval, fl.ts_recent if tsecr is None else tsecr),) + opts
        seg = TcpSegment(f["remote_port"], f["local_port"], seq, ack, flags, window, options=opts, payload=payload)
        ip = Ipv4Packet(PEER_IP, US_IP, IpProtocol.TCP, seg.emit(PEER_IP, US_IP), ecn=ecn)
        return EthernetFrame(US_MAC, PEER_MAC, EtherType.IPV4, ip.emit()).emit()

    def rx(self, *frames: bytes) -> list[Out]:
        for fr in frames:
            self.dev.inject(fr)
        self.poll()
        return self.out()

    def out(self) -> list[Out]:
        res = []
        for fr in self.dev.take_all():
            eth = EthernetFrame.parse(fr)
            assert (eth.dst, eth.src) == (PEER_MAC, US_MAC)
            ip = Ipv4Packet.parse(eth.payload)
            assert (ip.src, ip.dst) == (US_IP, PEER_IP)
            res.append(Out(TcpSegment.parse(ip.payload, ip.src, ip.dst), ip.ecn))
        return res

    # ---- the app -------------------------------------------------------------------------
    def flow_id(self, index: int) -> int:
        return lib.tas_flow_id(0, index)

    def app_send(self, index: int, data: bytes) -> bool:
        f = self.flows[index]
        size, pos = f["tx_size"], f["tx_pos"]
        for i in range(0, len(data)):  # simple, not fast: tests only
            self.app_buf[f["tx_off"] + (pos + i) % size] = data[i:i + 1]
        f["tx_pos"] = (pos + len(data)) % size
        ok = self.app.push(0, lib.TAS_RING_APP2FP, lib.TAS_QE_TX, self.flow_id(index), f["gen"], bump_len=len(data))
        self.poll()
        return ok

    def app_msg(self, index: int, qe_type: int, *, gen=None, flow=None, **fields):
        f = self.flows[index]
        self.app.push(0, lib.TAS_RING_APP2FP, qe_type, self.flow_id(index) if flow is None else flow,
                      f["gen"] if gen is None else gen, **fields)
        self.poll()

    def app_updates(self) -> list:
        return self.app.pop_all(0, lib.TAS_RING_APP2FP + 1)  # fp2app of worker 0 (one worker)

    def app_read(self, index: int, n: int, free: bool = True) -> bytes:
        f = self.flows[index]
        size, pos = f["rx_size"], f["rx_pos"]
        raw = bytes(ffi.buffer(self.app_buf + f["rx_off"], size))
        data = (raw[pos:] + raw[:pos])[:n]
        f["rx_pos"] = (pos + n) % size
        if free:
            self.app_msg(index, lib.TAS_QE_RX_FREED, bump_len=n)
        return data

    def close(self):
        self.worker.close()
        self.dev.close()
        self.region.close()
        ffi.release(self.app_buf)
        self._map.close()
        os.close(self._fd)

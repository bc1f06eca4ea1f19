"""The fastpath's C engine driven through cffi on the in-memory device:
frames in; frames, ring messages and counters out.  No root needed."""
from __future__ import annotations

import subprocess
from ipaddress import IPv4Address

import pytest

from tasd.fastpath.binding import (DROP_REASONS, FastpathError, MemDevice, Worker, WorkerRegion, ffi, ipv4_be,
                                   lib)
from tasd.wire import (ArpPacket, EthernetFrame, EtherType, IcmpEcho, IcmpMessage, IpProtocol, Ipv4Packet, MacAddr,
                       SeqNum, TcpFlags, TcpSegment, echo_reply_for, inet_checksum, parse_icmp)

OUR_MAC = MacAddr("02:00:00:00:00:02")
OUR_IP = IPv4Address("10.0.0.2")
PEER_MAC = MacAddr("02:00:00:00:00:03")
PEER_IP = IPv4Address("10.0.0.3")


class Engine:
    """A worker on an in-memory device, playing the slowpath's side of the rings."""

    def __init__(self, nbufs=64):
        self.region = WorkerRegion.create("test-worker", 16)
        shm = self.region.shm
        shm.worker_id, shm.nworkers = 0, 1
        shm.ip = ipv4_be(OUR_IP)
        shm.mtu = 1500
        shm.mac = list(OUR_MAC.packed)
        self.nbufs = nbufs
        self.dev = MemDevice(nbufs=nbufs)
        self.worker = Worker(self.region, self.dev)

    def rx(self, *frames: bytes) -> list[bytes]:
        """Receive frames; return what the fastpath sent."""
        for f in frames:
            self.dev.inject(f)
        while self.worker.poll():
            pass
        return self.dev.take_all()

    def stats(self):
        return self.region.stats()

    def exceptions(self):
        return self.region.receive()

    def close(self):
        self.worker.close()
        self.dev.close()
        self.region.close()


@pytest.fixture
def engine():
    e = Engine()
    yield e
    assert e.dev.free_bufs == e.nbufs, "the fastpath leaked device buffers"
    e.close()


def eth(payload: bytes, ethertype=EtherType.IPV4, dst=OUR_MAC, src=PEER_MAC) -> bytes:
    return EthernetFrame(dst, src, ethertype, payload).emit()


def _echo_request(seq, data) -> bytes:
    return IcmpEcho(ident=0x1234, seq=seq, data=data).emit()


def ping(seq=1, data=b"x" * 56, src=PEER_IP, dst=OUR_IP, **ip_kw) -> bytes:
    return eth(Ipv4Packet(src, dst, IpProtocol.ICMP, _echo_request(seq, data), **ip_kw).emit())


def syn(sport=40000, dport=80) -> bytes:
    seg = TcpSegment(sport, dport, seq=SeqNum(1000), flags=TcpFlags.SYN, window=65535)
    return eth(Ipv4Packet(PEER_IP, OUR_IP, IpProtocol.TCP, seg.emit(PEER_IP, OUR_IP)).emit())


def arp_request(tpa=OUR_IP) -> bytes:
    return eth(ArpPacket.request(PEER_MAC, PEER_IP, tpa).emit(), EtherType.ARP, dst=MacAddr.BROADCAST)


def drops(engine) -> dict:
    return {k: v for k, v in engine.stats()["drops"].items() if v}


def test_icmp_echo_reply(engine):
    out = engine.rx(ping(seq=7, data=bytes(range(100))))
    assert len(out) == 1
    reply = EthernetFrame.parse(out[0])
    assert (reply.dst, reply.src, reply.ethertype) == (PEER_MAC, OUR_MAC, EtherType.IPV4)
    ip = Ipv4Packet.parse(reply.payload)  # verifies the header checksum
    assert (ip.src, ip.dst, ip.protocol) == (OUR_IP, PEER_IP, IpProtocol.ICMP)
    echo = parse_icmp(ip.payload)  # verifies the ICMP checksum
    assert echo == echo_reply_for(parse_icmp(_echo_request(7, bytes(range(100)))))
    st = engine.stats()
    assert (st["rx_frames"], st["rx_icmp_echo"], st["tx_frames"]) == (1, 1, 1)


def test_icmp_echo_reply_drops_ethernet_padding(engine):
    frame = ping(data=b"") + bytes(18)  # padded to the 60-byte minimum
    (out,) = engine.rx(frame)
    assert len(out) == 14 + 20 + 8


@pytest.mark.parametrize("frame, reason", [
    (b"\x00" * 13, "runt"),
    (eth(b"\x00" * 1501), "too_big"),
    (eth(b"\x00" * 46, dst=MacAddr("02:99:99:99:99:99")), "mac_not_ours"),
    (eth(b"\x00" * 46, src=MacAddr("01:00:5e:00:00:01")), "mac_bad_source"),
    (eth(b"\x00" * 46, ethertype=0x86DD), "ethertype"),
    (eth(b"\x00" * 20, ethertype=EtherType.ARP), "arp_malformed"),
    (arp_request(tpa=IPv4Address("10.0.0.9")), "arp_not_ours"),
    (eth(b"\x45\x00"), "ip_truncated"),
    (eth(bytes([0x65]) + bytes(19)), "ip_malformed"),
    (ping(dst=IPv4Address("10.0.0.9")), "ip_not_ours"),
    (ping(src=IPv4Address("224.0.0.1")), "ip_bad_source"),
    (ping(src=OUR_IP), "ip_bad_source"),
    (ping(more_frags=True), "ip_fragment"),
    (eth(Ipv4Packet(PEER_IP, OUR_IP, 17, b"\x00" * 8).emit()), "ip_protocol"),
    (eth(Ipv4Packet(PEER_IP, OUR_IP, IpProtocol.ICMP, b"\x08\x00\x00").emit()), "icmp_truncated"),
    (eth(Ipv4Packet(PEER_IP, OUR_IP, IpProtocol.TCP, b"\x00" * 19).emit()), "tcp_truncated"),
])
def test_drop_reasons(engine, frame, reason):
    assert engine.rx(frame) == []
    assert drops(engine) == {reason: 1}


def _flip(frame: bytes, offset: int) -> bytes:
    b = bytearray(frame)
    b[offset] ^= 0x01
    return bytes(b)


def test_bad_checksums_are_dropped(engine):
    p = ping()
    engine.rx(_flip(p, 14 + 8))          # TTL: IPv4 header checksum
    engine.rx(_flip(p, 14 + 20 + 10))    # ICMP payload
    engine.rx(_flip(syn(), 14 + 20 + 4))  # TCP sequence number
    assert drops(engine) == {"ip_checksum": 1, "icmp_checksum": 1, "tcp_checksum": 1}


def test_ip_total_length_beyond_frame(engine):
    frame = bytearray(ping())
    frame[14 + 2:14 + 4] = (len(frame) - 14 + 1).to_bytes(2, "big")  # claims one byte more
    frame[14 + 10:14 + 12] = b"\0\0"
    frame[14 + 10:14 + 12] = inet_checksum(bytes(frame[14:34])).to_bytes(2, "big")
    assert engine.rx(bytes(frame)) == []
    assert drops(engine) == {"ip_truncated": 1}


def test_tcp_data_offset_beyond_segment(engine):
    seg = bytearray(TcpSegment(1, 2, flags=TcpFlags.SYN).emit(PEER_IP, OUR_IP))
    seg[12] = 15 << 4  # 60-byte header in a 20-byte segment
    assert engine.rx(eth(Ipv4Packet(PEER_IP, OUR_IP, IpProtocol.TCP, bytes(seg)).emit())) == []
    assert drops(engine) == {"tcp_malformed": 1}


def test_arp_and_tcp_go_to_the_slowpath(engine):
    a, s = arp_request(), syn()
    assert engine.rx(a, s) == []
    msgs = engine.exceptions()
    assert [(t, r) for t, r, _ in msgs] == [(lib.TAS_MSG_EXCEPTION, lib.TAS_EXC_ARP),
                                           (lib.TAS_MSG_EXCEPTION, lib.TAS_EXC_TCP_NOFLOW)]
    assert [d for _, _, d in msgs] == [a, s]
    st = engine.stats()
    assert st["exceptions"] == {"arp": 1, "icmp": 0, "tcp_noflow": 1}
    assert st["rx_exceptions"] == 2


def test_arp_claiming_our_address_goes_to_the_slowpath(engine):
    """Another host announcing our address (or answering our probe) must be
    seen: it is an address conflict."""
    claim = eth(ArpPacket.announcement(PEER_MAC, OUR_IP).emit(), EtherType.ARP, dst=MacAddr.BROADCAST)
    probe_reply = eth(ArpPacket(2, PEER_MAC, OUR_IP, OUR_MAC, IPv4Address(0)).emit(), EtherType.ARP)
    engine.rx(claim, probe_reply)
    assert [r for _, r, _ in engine.exceptions()] == [lib.TAS_EXC_ARP, lib.TAS_EXC_ARP]


def test_other_icmp_goes_to_the_slowpath(engine):
    unreach = IcmpMessage(3, 3, payload=bytes(28)).emit()
    engine.rx(eth(Ipv4Packet(PEER_IP, OUR_IP, IpProtocol.ICMP, unreach).emit()))
    assert [r for _, r, _ in engine.exceptions()] == [lib.TAS_EXC_ICMP]


def test_exception_ring_full_is_a_counted_drop(engine):
    slots = 16
    engine.rx(*[arp_request() for _ in range(slots + 3)])
    st = engine.stats()
    assert st["rx_exceptions"] == slots
    assert st["drops"]["exc_ring_full"] == 3
    assert len(engine.exceptions()) == slots
    engine.rx(arp_request())  # room again
    assert len(engine.exceptions()) == 1


def test_slowpath_frames_are_sent(engine):
    frame = arp_request()
    assert engine.region.send(lib.TAS_MSG_TX_FRAME, frame)
    assert engine.rx() == [frame]
    assert engine.stats()["sp_tx_frames"] == 1


@pytest.mark.parametrize("msg_type, data", [
    (lib.TAS_MSG_TX_FRAME, b"short"),
    (lib.TAS_MSG_TX_FRAME, b"\x00" * 1515),
    (lib.TAS_MSG_EXCEPTION, b"\x00" * 60),
    (999, b"\x00" * 60),
])
def test_bad_slowpath_messages_are_counted(engine, msg_type, data):
    assert engine.region.send(msg_type, data)
    assert engine.rx() == []
    assert engine.stats()["sp_bad_msgs"] == 1


def test_counters_add_up(engine):
    frames = [ping(), syn(), arp_request(), b"\x00" * 5, ping(dst=IPv4Address("10.0.0.77"))]
    engine.rx(*frames)
    st = engine.stats()
    assert st["rx_frames"] == len(frames)
    assert st["rx_frames"] == st["rx_icmp_echo"] + st["rx_exceptions"] + sum(st["drops"].values())


def test_ring_wraps_around(engine):
    for i in range(100):
        assert engine.region.send(lib.TAS_MSG_TX_FRAME, ping(seq=i))
        assert len(engine.rx()) == 1


def test_drop_reason_names_come_from_the_header():
    elements = ffi.typeof("enum tas_drop").elements
    assert len(DROP_REASONS) == lib.TAS_DROP__COUNT
    assert DROP_REASONS[lib.TAS_DROP_IP_CHECKSUM] == "ip_checksum"
    assert elements[lib.TAS_DROP__COUNT] == "TAS_DROP__COUNT"


def test_flow_hash_is_stable():
    """The steering function gives one worker per flow, spreads flows, and
    is the one the slowpath will use to place connections."""
    n = 2
    owners = [lib.tas_flow_worker(int(PEER_IP), int(OUR_IP), port, 80, n) for port in range(32768, 33768)]
    assert set(owners) == {0, 1}
    assert 400 < owners.count(0) < 600
    assert owners == [lib.tas_flow_worker(int(PEER_IP), int(OUR_IP), p, 80, n) for p in range(32768, 33768)]


def test_pcap_capture_wrapper(tmp_path):
    region = WorkerRegion.create("test-capture", 16)
    shm = region.shm
    shm.ip, shm.mtu, shm.mac = ipv4_be(OUR_IP), 1500, list(OUR_MAC.packed)
    mem = MemDevice()
    dev = mem.capture(tmp_path / "c.pcap")
    worker = Worker(region, dev)
    for i in range(3):
        mem.inject(ping(seq=i))
    while worker.poll():
        pass
    assert len(mem.take_all()) == 3
    worker.close()
    dev.close()
    region.close()
    out = subprocess.run(["tshark", "-r", str(tmp_path / "c.pcap"), "-T", "fields", "-e", "icmp.type",
                          "-e", "icmp.seq"], capture_output=True, text=True, check=True).stdout.split("\n")
    assert [line.split("\t") for line in out if line] == [["8", "0"], ["8", "1"], ["8", "2"],
                                                          ["0", "0"], ["0", "1"], ["0", "2"]]


def test_capture_to_unwritable_path_is_an_error():
    mem = MemDevice()
    with pytest.raises(FastpathError, match="capture file"):
        mem.capture("/nonexistent-dir/x.pcap")
    mem.close()


def test_slowpath_messages_wait_for_room_in_order():
    """What finds the worker's ring full waits in the slowpath's backlog and
    goes, in order, once the worker has made room: a lost flow command would
    leave a connection stuck."""
    from tasd import config
    from tasd.slowpath.workers import WorkerProc
    cfg = config.load(None, {"interface": "lo", "address": "10.0.0.2/24", "cores": [0], "ring_slots": 16})
    proc = WorkerProc(0, 0, cfg, str(OUR_MAC), 1500)
    shm = proc.region.shm
    shm.ip = ipv4_be(OUR_IP)
    dev = MemDevice(nbufs=64)
    worker = Worker(proc.region, dev)
    try:
        for i in range(20):
            proc.send(lib.TAS_MSG_TX_FRAME, ping(seq=i))
        assert (len(proc.backlog), proc.deferred) == (4, 4)
        assert not proc.try_send(lib.TAS_MSG_TX_FRAME, ping(seq=99))  # no overtaking
        proc.send(lib.TAS_MSG_TX_FRAME, ping(seq=20))
        seqs = []
        while True:
            while worker.poll():
                pass
            seqs += [IcmpEcho.parse(Ipv4Packet.parse(EthernetFrame.parse(f).payload).payload).seq
                     for f in dev.take_all()]
            if proc.flush() and len(seqs) == 21:
                break
        assert seqs == list(range(21))
        assert proc.try_send(lib.TAS_MSG_TX_FRAME, ping(seq=21))
    finally:
        worker.close()
        dev.close()
        proc.close()

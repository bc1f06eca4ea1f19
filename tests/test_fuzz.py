"""One million random and mutated frames through the fastpath's RX path,
built with AddressSanitizer and UndefinedBehaviorSanitizer: no crash, no bad
memory access, no leaked buffer, and every frame counted as answered, handed
to the slowpath, or dropped under a named reason."""
from __future__ import annotations

import json
import struct
import subprocess
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tasd.fastpath.binding import DROP_REASONS
from tasd.wire import (ArpOp, ArpPacket, EthernetFrame, EtherType, IcmpEcho, IcmpMessage, IpProtocol, Ipv4Packet,
                       MacAddr, Mss, Sack, SackPermitted, SeqNum, TcpFlags, TcpSegment, Timestamps, WindowScale)

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "tasd/fastpath/csrc"
OUR_MAC, PEER_MAC = MacAddr("02:00:00:00:00:02"), MacAddr("02:00:00:00:00:03")
OUR_IP, PEER_IP = IPv4Address("10.0.0.2"), IPv4Address("10.0.0.3")  # as fuzz_rx.c configures


def seed_frames() -> list[bytes]:
    def ip(proto, payload, **kw):
        return EthernetFrame(OUR_MAC, PEER_MAC, EtherType.IPV4,
                             Ipv4Packet(PEER_IP, OUR_IP, proto, payload, **kw).emit()).emit()

    def tcp(flags, payload=b"", options=()):
        seg = TcpSegment(40000, 80, SeqNum(1), SeqNum(2), flags, 65535, options=options, payload=payload)
        return ip(IpProtocol.TCP, seg.emit(PEER_IP, OUR_IP))

    syn_opts = (Mss(1460), SackPermitted(), Timestamps(1, 0), WindowScale(7))
    return [
        EthernetFrame(MacAddr.BROADCAST, PEER_MAC, EtherType.ARP,
                      ArpPacket.request(PEER_MAC, PEER_IP, OUR_IP).emit()).emit(),
        EthernetFrame(OUR_MAC, PEER_MAC, EtherType.ARP,
                      ArpPacket(ArpOp.REPLY, PEER_MAC, PEER_IP, OUR_MAC, OUR_IP).emit()).emit(),
        ip(IpProtocol.ICMP, IcmpEcho(1, 1, b"x" * 56).emit()),
        ip(IpProtocol.ICMP, IcmpEcho(1, 2, bytes(1400)).emit()),
        ip(IpProtocol.ICMP, IcmpMessage(3, 4, payload=bytes(28)).emit()),
        ip(IpProtocol.ICMP, IcmpEcho(1, 3).emit(), options=b"\x01\x01\x01\x00"),
        tcp(TcpFlags.SYN, options=syn_opts),
        tcp(TcpFlags.SYN | TcpFlags.ACK, options=syn_opts),
        tcp(TcpFlags.ACK | TcpFlags.PSH, payload=b"GET / HTTP/1.1\r\n\r\n"),
        tcp(TcpFlags.ACK, options=(Timestamps(5, 6), Sack(((SeqNum(10), SeqNum(20)),)))),
        tcp(TcpFlags.FIN | TcpFlags.ACK),
        tcp(TcpFlags.RST),
    ]


@pytest.fixture(scope="module")
def fuzz_binary(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fuzz") / "fuzz_rx"
    sources = [ROOT / "tests/fuzz/fuzz_rx.c"] + [CSRC / f for f in ("csum.c", "dev.c", "dev_mem.c", "rx.c", "worker.c", "flow.c",
                                                                 "tcp_in.c", "tcp_out.c", "cc_newreno.c", "app.c")]
    subprocess.run(["gcc", "-std=gnu11", "-O1", "-g", "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-Wall", "-Wextra",
                    "-Wno-unused-parameter", f"-I{ROOT / 'include'}", f"-I{CSRC}", *map(str, sources),
                    "-o", str(out)], check=True)
    return out


def test_fuzz_rx_one_million_frames(fuzz_binary, tmp_path):
    seeds = tmp_path / "seeds.bin"
    seeds.write_bytes(b"".join(struct.pack("<H", len(f)) + f for f in seed_frames()))
    p = subprocess.run([str(fuzz_binary), str(seeds), "1000000", "12345"], capture_output=True, text=True,
                       timeout=600, env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
                                         "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"})
    assert p.returncode == 0, f"fuzz run failed:\n{p.stdout}\n{p.stderr[-4000:]}"
    summary = json.loads(p.stdout)
    assert summary["ok"] and summary["frames"] == summary["rx_frames"] == 1_000_000
    assert summary["answered"] + summary["exceptions"] + summary["dropped"] == 1_000_000
    assert summary["free_bufs"] == 256
    drops = dict(zip(DROP_REASONS, summary["drops"]))
    # the mutations reach deep: answers, exceptions, and drops at every layer
    assert summary["answered"] > 1000 and summary["exceptions"] > 1000
    for reason in ("runt", "mac_not_ours", "ethertype", "arp_malformed", "ip_truncated", "ip_malformed",
                   "ip_checksum", "icmp_checksum", "tcp_checksum"):
        assert drops[reason] > 0, f"no frame reached the {reason} check: {drops}"
    assert summary["sp_bad_msgs"] > 0

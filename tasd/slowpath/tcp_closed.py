"""TCP's answer for a segment that belongs to no connection (RFC 9293
3.10.7.1, state CLOSED): a reset, unless the segment is itself a reset.
Pure function: frame in, frame out."""
from __future__ import annotations

from tasd.wire import EthernetFrame, EtherType, IpProtocol, Ipv4Packet, MacAddr, SeqNum, TcpFlags, TcpSegment


def reset_for(eth: EthernetFrame, our_mac: MacAddr) -> bytes | None:
    """The RST frame answering `eth` (an IPv4/TCP frame to us), or None.
    Raises WireError for a frame that does not parse."""
    ip = Ipv4Packet.parse(eth.payload)
    if ip.protocol != IpProtocol.TCP:
        return None
    seg = TcpSegment.parse(ip.payload, ip.src, ip.dst)
    if TcpFlags.RST in seg.flags:
        return None
    if TcpFlags.ACK in seg.flags:
        rst = TcpSegment(seg.dst_port, seg.src_port, seq=seg.ack, flags=TcpFlags.RST)
    else:
        rst = TcpSegment(seg.dst_port, seg.src_port, seq=SeqNum(0), ack=seg.seq + seg.seq_len,
                         flags=TcpFlags.RST | TcpFlags.ACK)
    out = Ipv4Packet(ip.dst, ip.src, IpProtocol.TCP, rst.emit(ip.dst, ip.src))
    return EthernetFrame(eth.src, our_mac, EtherType.IPV4, out.emit()).emit()

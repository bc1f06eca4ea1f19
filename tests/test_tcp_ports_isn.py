"""Initial sequence numbers (RFC 6528), timestamp clocks (RFC 7323 §7.1) and
ephemeral ports (RFC 6056 §3.3.3)."""

from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from tasd.slowpath.tcp import State, TcpConfig, TcpError
from tasd.slowpath.tcp.addr import FourTuple
from tasd.slowpath.tcp.isn import KeyedHash
from tasd.wire import Timestamps
from test_tcp_support import (  # noqa: F401  (fixtures)
    LOCAL, OWNER, PEER, PEER_PORT, PEER_SYN, PORT, SECRET, A, Net, R, listening, net,
    net_listen, only_sent, syn_sent, synack_for)

KEY = FourTuple(LOCAL, PORT, PEER, PEER_PORT)
H = KeyedHash(SECRET)


# --- ISN ----------------------------------------------------------------------

def test_isn_differs_per_four_tuple():
    keys = [KEY, KEY._replace(remote_port=PEER_PORT + 1), KEY._replace(local_port=PORT + 1),
            KEY._replace(remote_ip=IPv4Address("198.51.100.3")),
            KEY._replace(local_ip=IPv4Address("192.0.2.2"))]
    assert len({int(H.isn(k, 10.0)) for k in keys}) == len(keys)


def test_isn_advances_with_4us_clock():
    assert H.isn(KEY, 1.0) - H.isn(KEY, 0.0) == 250_000
    assert H.isn(KEY, 0.000004) - H.isn(KEY, 0.0) == 1
    # The clock wraps every 4.77 hours; the difference stays a clean multiple.
    assert int(H.isn(KEY, 17179.869184)) == int(H.isn(KEY, 0.0))


def test_isn_depends_on_secret():
    assert H.isn(KEY, 0.0) != KeyedHash(bytes(32)).isn(KEY, 0.0)


def test_isn_short_secret_rejected():
    with pytest.raises(ValueError):
        KeyedHash(b"short")
    KeyedHash(bytes(100))            # long keys are hashed down


def test_listen_syn_synack_isn_per_connection(net_listen):
    net = net_listen
    a = only_sent(net.recv(PEER_SYN))
    b = only_sent(net.recv(replace(PEER_SYN, src_port=PEER_PORT + 1)))
    assert a.seq == H.isn(KEY, 0.0)
    assert b.seq == H.isn(KEY._replace(remote_port=PEER_PORT + 1), 0.0)
    assert a.seq != b.seq


def test_syn_sent_tsval_ms_clock_with_per_tuple_offset(net):
    a = syn_sent(net, dst_port=80)
    syn_a = net.stack.connection(a.id).syn_segment(0.0)
    net.wait(1.5)                                      # the SYN again at +1
    retransmitted = only_sent(net.wait(1.5))           # and at +3
    assert retransmitted.option(Timestamps).tsval - syn_a.option(Timestamps).tsval == 3000
    assert syn_a.option(Timestamps).tsval == H.ts_offset(a.key)     # clock at 0 ms
    b = syn_sent(net, dst_port=81)
    assert net.stack.connection(b.id).ts_offset != net.stack.connection(a.id).ts_offset


def test_syn_sent_tsval_same_offset_for_same_tuple():
    assert H.ts_offset(KEY) == H.ts_offset(KEY)
    assert H.ts_offset(KEY) != H.ts_offset(KEY._replace(remote_port=1))


# --- ephemeral ports -----------------------------------------------------------

def _port(net, cid):
    return net.stack.connection(cid).key.local_port


def test_connect_ephemeral_port_in_range_and_successive(net):
    ids = [net.stack.connect(OWNER, PEER, 443, 0.0) for _ in range(200)]
    ports = [_port(net, i) for i in ids]
    assert all(32768 <= p <= 60999 for p in ports)
    assert len(set(ports)) == 200
    # Algorithm 3: one destination walks the range from its own hashed offset.
    n = 60999 - 32768 + 1
    assert all((b - a) % n == 1 for a, b in zip(ports, ports[1:]))


def test_connect_ephemeral_offset_differs_per_destination():
    starts = set()
    for i in range(5):
        net = Net()
        starts.add(_port(net, net.stack.connect(OWNER, PEER, 1000 + i, 0.0)))
    assert len(starts) == 5


def test_connect_ephemeral_skips_listener_ports():
    net = Net(TcpConfig(ephemeral_ports=(40000, 40009)))
    for port in range(40000, 40005):
        net.stack.listen(OWNER, port, 1)
    ports = {_port(net, net.stack.connect(OWNER, PEER, 443, 0.0)) for _ in range(5)}
    assert ports == set(range(40005, 40010))
    with pytest.raises(TcpError) as e:
        net.stack.connect(OWNER, PEER, 443, 0.0)
    assert e.value.errno == "EADDRNOTAVAIL"


def test_connect_ephemeral_port_shared_across_destinations():
    net = Net(TcpConfig(ephemeral_ports=(40000, 40001)))
    first = {_port(net, net.stack.connect(OWNER, PEER, 443, 0.0)) for _ in range(2)}
    assert first == {40000, 40001}
    # Another destination: the same ports make new 4-tuples.
    other = IPv4Address("198.51.100.9")
    assert _port(net, net.stack.connect(OWNER, other, 443, 0.0)) in first
    with pytest.raises(TcpError) as e:
        net.stack.connect(OWNER, PEER, 443, 0.0)
    assert e.value.errno == "EADDRNOTAVAIL"


def test_connect_ephemeral_skips_time_wait():
    net = Net(TcpConfig(ephemeral_ports=(40000, 40000)))
    c = syn_sent(net)
    # Run that connection into TIME_WAIT.
    net.recv(synack_for(c))
    for event in ("fin_sent", "fin_acked", "fin_received"):
        getattr(net.stack, event)(c.id, net.now)
    net.stack.close(c.id, net.now)
    net.stack.flow_removed(c.id, c.snapshot(fin_sent=True, fin_received=True), None, net.now)
    assert net.stack.time_wait(c.key) is not None
    with pytest.raises(TcpError) as e:
        net.stack.connect(OWNER, PEER, PORT, net.now)
    assert e.value.errno == "EADDRNOTAVAIL"
    net.stack.connect(OWNER, PEER, PORT + 1, net.now)      # another 4-tuple: fine


def test_connect_port_freed_after_failure():
    net = Net(TcpConfig(ephemeral_ports=(40000, 40000)))
    c = syn_sent(net)
    c.recv(R | A, seq=0, ack=1, options=())
    assert c.state is State.CLOSED
    net.stack.connect(OWNER, PEER, PORT, net.now)


def test_connect_explicit_port(net):
    cid = net.stack.connect(OWNER, PEER, 443, 0.0, src_port=5555)
    assert _port(net, cid) == 5555
    with pytest.raises(TcpError) as e:
        net.stack.connect(OWNER, PEER, 443, 0.0, src_port=5555)
    assert e.value.errno == "EADDRINUSE"
    net.stack.connect(OWNER, PEER, 444, 0.0, src_port=5555)     # another 4-tuple


def test_connect_explicit_listener_port_eaddrinuse(net):
    listening(net)
    with pytest.raises(TcpError) as e:
        net.stack.connect(OWNER, PEER, 443, 0.0, src_port=PORT)
    assert e.value.errno == "EADDRINUSE"


@pytest.mark.parametrize("dst, port, src_port", [
    ("224.0.0.5", 80, 0), ("0.0.0.0", 80, 0), ("255.255.255.255", 80, 0),
    ("198.51.100.2", 0, 0), ("198.51.100.2", 65536, 0), ("198.51.100.2", 80, 65536)])
def test_connect_bad_arguments_einval(net, dst, port, src_port):
    with pytest.raises(TcpError) as e:
        net.stack.connect(OWNER, IPv4Address(dst), port, 0.0, src_port=src_port)
    assert e.value.errno == "EINVAL"


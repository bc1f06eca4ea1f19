"""The neighbour table, sans-I/O: packets and a virtual clock in, actions out."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from tasd.slowpath.arp import ArpTable, Conflict, NeighState, Resolved, SendArp, Unreachable
from tasd.wire import ArpOp, ArpPacket, MacAddr

US_MAC, US_IP = MacAddr("02:00:00:00:00:02"), IPv4Address("10.0.0.2")
PEER_MAC, PEER_IP = MacAddr("02:00:00:00:00:03"), IPv4Address("10.0.0.3")
NET = IPv4Network("10.0.0.0/24")


@pytest.fixture
def table():
    return ArpTable(US_MAC, US_IP, NET, timeout=60.0, retries=3, retry_interval=0.2, failed_hold=3.0)


def reply_from(mac=PEER_MAC, ip=PEER_IP) -> ArpPacket:
    return ArpPacket(ArpOp.REPLY, mac, ip, US_MAC, US_IP)


def request_from(mac=PEER_MAC, ip=PEER_IP, tpa=US_IP) -> ArpPacket:
    return ArpPacket.request(mac, ip, tpa)


def sent(actions) -> list[SendArp]:
    return [a for a in actions if isinstance(a, SendArp)]


def test_lookup_unknown_sends_broadcast_request(table):
    assert table.lookup(PEER_IP, 0.0) is None
    (a,) = table.take_actions()
    assert a == SendArp(ArpPacket.request(US_MAC, US_IP, PEER_IP), MacAddr.BROADCAST)
    assert table.entries[PEER_IP].state is NeighState.INCOMPLETE
    assert table.poll_at() == pytest.approx(0.2)


def test_incomplete_reply_resolves(table):
    table.lookup(PEER_IP, 0.0)
    table.take_actions()
    table.receive(reply_from(), 0.05)
    assert table.take_actions() == [Resolved(PEER_IP, PEER_MAC)]
    assert table.lookup(PEER_IP, 0.1) == PEER_MAC
    assert table.take_actions() == []


def test_incomplete_retries_with_backoff_then_unreachable(table):
    table.lookup(PEER_IP, 0.0)
    times = [0.0]
    while (t := table.poll_at()) is not None and t < 100:
        table.poll(t)
        acts = table.take_actions()
        if sent(acts):
            times.append(t)
        if any(isinstance(a, Unreachable) for a in acts):
            break
    # 3 requests at 0, 0.2, 0.6 (doubling), declared unreachable at 1.4
    assert times == pytest.approx([0.0, 0.2, 0.6])
    assert t == pytest.approx(1.4)
    assert table.entries[PEER_IP].state is NeighState.FAILED
    assert table.lookup(PEER_IP, 1.5) is None
    assert table.take_actions() == [Unreachable(PEER_IP)]  # no new requests while failed
    table.poll(1.4 + 3.0)
    assert PEER_IP not in table.entries  # failed_hold over: the next lookup tries again


def test_request_for_us_is_answered_and_learned(table):
    table.receive(request_from(), 1.0)
    (a,) = table.take_actions()
    assert a == SendArp(ArpPacket(ArpOp.REPLY, US_MAC, US_IP, PEER_MAC, PEER_IP), PEER_MAC)
    assert table.lookup(PEER_IP, 1.0) == PEER_MAC


def test_request_for_another_host_teaches_nothing_new(table):
    table.receive(request_from(tpa=IPv4Address("10.0.0.9")), 1.0)
    assert table.take_actions() == []
    assert table.entries == {}


def test_known_sender_is_refreshed_by_any_packet(table):
    table.receive(request_from(), 0.0)
    table.take_actions()
    new_mac = MacAddr("02:00:00:00:00:33")
    table.receive(request_from(mac=new_mac, tpa=IPv4Address("10.0.0.9")), 5.0)
    assert table.lookup(PEER_IP, 5.0) == new_mac


def test_reachable_goes_stale_then_probes_unicast(table):
    table.receive(request_from(), 0.0)
    table.take_actions()
    table.poll(60.0)
    assert table.entries[PEER_IP].state is NeighState.STALE
    assert table.lookup(PEER_IP, 61.0) == PEER_MAC  # still usable while being re-confirmed
    (a,) = table.take_actions()
    assert a.dst == PEER_MAC and a.packet.tpa == PEER_IP
    table.receive(reply_from(), 61.01)
    assert table.entries[PEER_IP].state is NeighState.REACHABLE


def test_probe_without_answer_fails(table):
    table.receive(request_from(), 0.0)
    table.poll(60.0)
    table.lookup(PEER_IP, 61.0)
    table.take_actions()
    while (t := table.poll_at()) is not None and table.entries[PEER_IP].state is NeighState.PROBE:
        table.poll(t)
    assert table.entries[PEER_IP].state is NeighState.FAILED
    assert Unreachable(PEER_IP) in table.take_actions()


def test_conflict_when_another_mac_claims_our_address(table):
    table.receive(ArpPacket.announcement(PEER_MAC, US_IP), 0.0)
    assert table.take_actions() == [Conflict(PEER_MAC)]


def test_our_own_packets_are_ignored(table):
    table.receive(ArpPacket.announcement(US_MAC, US_IP), 0.0)
    assert table.take_actions() == []


def test_probe_from_another_host_is_defended(table):
    probe = ArpPacket(ArpOp.REQUEST, PEER_MAC, IPv4Address(0), MacAddr.ZERO, US_IP)
    table.receive(probe, 0.0)
    (a,) = table.take_actions()
    assert a.packet.oper == ArpOp.REPLY and a.packet.spa == US_IP and a.dst == PEER_MAC
    assert table.entries == {}  # 0.0.0.0 is not learned


@pytest.mark.parametrize("spa", ["10.0.1.3", "10.0.0.255", "0.0.0.0"])
def test_off_link_senders_are_not_learned(table, spa):
    table.receive(request_from(ip=IPv4Address(spa)), 0.0)
    assert table.entries == {}


def test_multicast_sender_mac_is_ignored(table):
    table.receive(request_from(mac=MacAddr("01:00:5e:00:00:01")), 0.0)
    assert table.entries == {} and table.take_actions() == []


def test_announce_sends_gratuitous_arps_spaced(table):
    table.announce(2, 10.0)
    (a,) = table.take_actions()
    assert a.packet.is_gratuitous and a.packet.spa == US_IP and a.dst == MacAddr.BROADCAST
    assert table.poll_at() == pytest.approx(11.0)
    table.poll(11.0)
    assert len(sent(table.take_actions())) == 1
    assert table.poll_at() is None


def test_probe_packets_follow_rfc5227(table):
    table.probe(2)
    acts = table.take_actions()
    assert len(acts) == 2
    for a in acts:
        assert a.packet.is_probe and a.packet.tpa == US_IP and a.packet.sha == US_MAC


def test_table_is_bounded():
    t = ArpTable(US_MAC, US_IP, NET, max_entries=4)
    for i in range(3, 7):
        t.receive(request_from(mac=MacAddr(0x020000000000 + i), ip=IPv4Address(f"10.0.0.{i}")), 0.0)
    assert len(t.entries) == 4
    assert t.lookup(IPv4Address("10.0.0.50"), 1.0) is None
    assert Unreachable(IPv4Address("10.0.0.50")) in t.take_actions()
    assert t.stats["table_full"] == 1
    t.poll(100.0)  # all stale now: room is made from the oldest
    t.lookup(IPv4Address("10.0.0.50"), 101.0)
    assert IPv4Address("10.0.0.50") in t.entries and len(t.entries) == 4

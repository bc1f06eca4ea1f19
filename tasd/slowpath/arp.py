"""ARP: tasd's neighbour table (sans-I/O).

Events and the current time go in (`lookup`, `receive`, `poll`); actions come
out (`take_actions`): ARP packets to send and resolution outcomes.  No
clocks, sockets or sleeps here; the daemon's driver does the I/O and calls
`poll` at `poll_at()`.

States follow Linux's neighbour machine, simplified:

    (none) --lookup--> INCOMPLETE --reply--> REACHABLE --timeout--> STALE
    INCOMPLETE --retries exhausted--> FAILED --failed_hold--> (none)
    STALE --lookup--> PROBE (unicast requests; the old MAC is still used)
    PROBE --reply--> REACHABLE;  PROBE --retries exhausted--> FAILED

Learning follows RFC 826: an ARP packet whose sender is in the table
refreshes that entry; one addressed to us adds its sender.  A packet that
claims our own address from another MAC is a conflict (RFC 5227).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from tasd.wire import ArpOp, ArpPacket, MacAddr, as_ipv4


class NeighState(enum.Enum):
    INCOMPLETE = "incomplete"
    REACHABLE = "reachable"
    STALE = "stale"
    PROBE = "probe"
    FAILED = "failed"


# ---- actions ----------------------------------------------------------------

@dataclass(frozen=True)
class SendArp:
    """Send `packet` in an Ethernet frame to `dst`."""
    packet: ArpPacket
    dst: MacAddr


@dataclass(frozen=True)
class Resolved:
    ip: IPv4Address
    mac: MacAddr


@dataclass(frozen=True)
class Unreachable:
    ip: IPv4Address


@dataclass(frozen=True)
class Conflict:
    """Another host (mac) uses our address."""
    mac: MacAddr


@dataclass
class Neighbour:
    ip: IPv4Address
    state: NeighState
    mac: MacAddr | None = None
    confirmed: float = 0.0      # when the MAC was last confirmed
    tries: int = 0              # requests sent in this INCOMPLETE/PROBE round
    next_at: float | None = None


class ArpTable:
    def __init__(self, mac: MacAddr, ip: IPv4Address, network: IPv4Network, *, timeout: float = 60.0,
                 retries: int = 5, retry_interval: float = 0.2, failed_hold: float = 3.0,
                 max_entries: int = 4096):
        self.mac, self.ip, self.network = MacAddr(mac), IPv4Address(ip), network
        self.timeout, self.retries = timeout, retries
        self.retry_interval, self.failed_hold = retry_interval, failed_hold
        self.max_entries = max_entries
        self.entries: dict[IPv4Address, Neighbour] = {}
        self._actions: list = []
        self._announce_left = 0
        self._announce_at: float | None = None
        self.stats = {"rx": 0, "rx_requests": 0, "rx_replies": 0, "tx_requests": 0, "tx_replies": 0,
                      "tx_announce": 0, "conflicts": 0, "resolved": 0, "unreachable": 0, "table_full": 0}

    # ---- outputs ---------------------------------------------------------
    def take_actions(self) -> list:
        out, self._actions = self._actions, []
        return out

    def poll_at(self) -> float | None:
        times = [e.next_at for e in self.entries.values() if e.next_at is not None]
        if self._announce_at is not None:
            times.append(self._announce_at)
        return min(times, default=None)

    # ---- inputs ------------------------------------------------------------
    def lookup(self, ip: IPv4Address, now: float) -> MacAddr | None:
        """The MAC for on-link `ip`, or None while it is being resolved (a
        Resolved or Unreachable action follows)."""
        ip = as_ipv4(ip)
        e = self.entries.get(ip)
        if e is None:
            if not self._make_room():
                self.stats["table_full"] += 1
                self._actions.append(Unreachable(ip))
                return None
            e = self.entries[ip] = Neighbour(ip, NeighState.INCOMPLETE)
            self._request(e, now, MacAddr.BROADCAST)
            return None
        if e.state is NeighState.STALE:
            e.state, e.tries = NeighState.PROBE, 0
            self._request(e, now, e.mac)
        if e.state is NeighState.FAILED:
            self._actions.append(Unreachable(ip))
        return e.mac if e.state in (NeighState.REACHABLE, NeighState.STALE, NeighState.PROBE) else None

    def receive(self, pkt: ArpPacket, now: float) -> None:
        self.stats["rx"] += 1
        self.stats["rx_requests" if pkt.oper == ArpOp.REQUEST else "rx_replies"] += 1
        if pkt.sha == self.mac:
            return  # our own packet, looped back
        if pkt.spa == self.ip:
            self.stats["conflicts"] += 1
            self._actions.append(Conflict(pkt.sha))
            return
        if pkt.sha.is_multicast or pkt.sha.is_zero:
            return  # not a host's address: learn nothing from it
        learnable = int(pkt.spa) != 0 and pkt.spa in self.network and pkt.spa != self.network.broadcast_address
        e = self.entries.get(pkt.spa)
        if learnable and e is not None:
            self._confirm(e, pkt.sha, now)
        elif learnable and pkt.tpa == self.ip and self._make_room():
            e = self.entries[pkt.spa] = Neighbour(pkt.spa, NeighState.REACHABLE)
            self._confirm(e, pkt.sha, now)
        if pkt.oper == ArpOp.REQUEST and pkt.tpa == self.ip:
            self.stats["tx_replies"] += 1
            self._actions.append(SendArp(ArpPacket.reply_to(pkt, self.mac), pkt.sha))

    def poll(self, now: float) -> None:
        if self._announce_at is not None and now >= self._announce_at:
            self._send_announcement(now)
        for e in list(self.entries.values()):
            if e.next_at is None or now < e.next_at:
                continue
            if e.state is NeighState.REACHABLE:
                e.state, e.next_at = NeighState.STALE, None
            elif e.state in (NeighState.INCOMPLETE, NeighState.PROBE):
                if e.tries < self.retries:
                    self._request(e, now, MacAddr.BROADCAST if e.state is NeighState.INCOMPLETE else e.mac)
                else:
                    e.state, e.mac, e.next_at = NeighState.FAILED, None, now + self.failed_hold
                    self.stats["unreachable"] += 1
                    self._actions.append(Unreachable(e.ip))
            elif e.state is NeighState.FAILED:
                del self.entries[e.ip]

    def announce(self, count: int, now: float, interval: float = 1.0) -> None:
        """Send `count` gratuitous ARPs, the first now, then every interval."""
        self._announce_left, self._announce_interval = count, interval
        if count:
            self._send_announcement(now)

    def probe(self, count: int) -> None:
        """Queue `count` RFC 5227 probes for our address (sender IP 0.0.0.0);
        a host that owns the address answers and shows up as a Conflict."""
        for _ in range(count):
            pkt = ArpPacket(ArpOp.REQUEST, self.mac, IPv4Address(0), MacAddr.ZERO, self.ip)
            self.stats["tx_requests"] += 1
            self._actions.append(SendArp(pkt, MacAddr.BROADCAST))

    def snapshot(self, now: float) -> list[dict]:
        return [{"ip": str(e.ip), "mac": str(e.mac) if e.mac else None, "state": e.state.value,
                 "age": round(now - e.confirmed, 3) if e.mac else None}
                for e in sorted(self.entries.values(), key=lambda e: e.ip)]

    # ---- internals -----------------------------------------------------------
    def _confirm(self, e: Neighbour, mac: MacAddr, now: float) -> None:
        was_waiting = e.state in (NeighState.INCOMPLETE, NeighState.FAILED)
        e.state, e.mac, e.confirmed, e.tries = NeighState.REACHABLE, mac, now, 0
        e.next_at = now + self.timeout
        if was_waiting:
            self.stats["resolved"] += 1
            self._actions.append(Resolved(e.ip, mac))

    def _request(self, e: Neighbour, now: float, dst: MacAddr) -> None:
        self.stats["tx_requests"] += 1
        self._actions.append(SendArp(ArpPacket.request(self.mac, self.ip, e.ip), dst))
        e.next_at = now + self.retry_interval * (2 ** e.tries)
        e.tries += 1

    def _send_announcement(self, now: float) -> None:
        self.stats["tx_announce"] += 1
        self._actions.append(SendArp(ArpPacket.announcement(self.mac, self.ip), MacAddr.BROADCAST))
        self._announce_left -= 1
        self._announce_at = now + self._announce_interval if self._announce_left > 0 else None

    def _make_room(self) -> bool:
        if len(self.entries) < self.max_entries:
            return True
        for state in (NeighState.FAILED, NeighState.STALE):
            victims = [e for e in self.entries.values() if e.state is state]
            if victims:
                del self.entries[min(victims, key=lambda e: e.confirmed).ip]
                return True
        return False

"""Facts about the host's interfaces (in tasd's network namespace), through
rtnetlink (pyroute2)."""
from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from pyroute2 import IPRoute


@dataclass(frozen=True)
class Interface:
    name: str
    index: int
    mac: str
    mtu: int
    kind: str | None  # "veth", "tun", "bridge", ... or None for a plain device


def lookup(name: str) -> Interface | None:
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return None
        link = ipr.get_links(idx[0])[0]
        info = link.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        return Interface(name, idx[0], link.get_attr("IFLA_ADDRESS"), link.get_attr("IFLA_MTU"), kind)


def local_addresses() -> dict[IPv4Address, str]:
    """Every IPv4 address configured on an interface here, with its interface."""
    with IPRoute() as ipr:
        return {IPv4Address(a.get_attr("IFA_ADDRESS")): a.get_attr("IFA_LABEL") or str(a["index"])
                for a in ipr.get_addr(family=socket.AF_INET)}


def set_up(name: str) -> None:
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")


def netns_id() -> int:
    """Identifies this network namespace (its inode)."""
    return os.stat("/proc/self/ns/net").st_ino


class LinkWatcher:
    """Link events of one interface, for an event loop: register fileno()
    with the loop and call read() when it is readable.  A bare rtnetlink
    socket (pyroute2's own event loop cannot run inside ours)."""

    RTMGRP_LINK = 1
    RTM_NEWLINK, RTM_DELLINK = 16, 17
    _NLMSG = struct.Struct("=IHHII")      # nlmsghdr: len, type, flags, seq, pid
    _IFINFO = struct.Struct("=BxHiII")    # ifinfomsg: family, type, index, flags, change

    def __init__(self, index: int):
        self.index = index
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                   socket.NETLINK_ROUTE)
        self._sock.bind((0, self.RTMGRP_LINK))

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self) -> list[str]:
        """What happened to the interface: "removed", "down" or "up" each time."""
        out = []
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return out
            off = 0
            while off + self._NLMSG.size + self._IFINFO.size <= len(data):
                length, mtype, _, _, _ = self._NLMSG.unpack_from(data, off)
                if length < self._NLMSG.size:
                    break
                _, _, index, flags, _ = self._IFINFO.unpack_from(data, off + self._NLMSG.size)
                if index == self.index and mtype == self.RTM_DELLINK:
                    out.append("removed")
                elif index == self.index and mtype == self.RTM_NEWLINK:
                    out.append("up" if flags & 1 else "down")  # IFF_UP
                off += (length + 3) & ~3

    def close(self) -> None:
        self._sock.close()

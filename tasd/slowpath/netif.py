"""Facts about the host's interfaces (in tasd's network namespace), through
rtnetlink (pyroute2)."""
from __future__ import annotations

import os
import socket
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

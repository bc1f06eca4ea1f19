"""Packet I/O resources that tasd's slowpath holds for its workers: the
AF_XDP sockets and XDP program, or the TAP queues.  Set up once at start,
torn down at exit; the workers get file descriptors and do the I/O."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from tasd.fastpath.binding import (FastpathError, XdpProgram, XdpSockets, ipv4_be, lib, tap_open_queues,
                                   tap_set_steering)

from . import netif

log = logging.getLogger("tasd")

# A frame must fit a message slot to the slowpath (exceptions), and with
# AF_XDP a UMEM chunk after the kernel's headroom.
MAX_FRAME = lib.TAS_RING_DATA_MAX
XDP_MAX_FRAME = min(MAX_FRAME, lib.FP_XDP_FRAME_SIZE - lib.FP_XDP_HEADROOM)


class XdpBackend:
    name = "xdp"

    def __init__(self, cfg, iface: netif.Interface, nworkers: int):
        self.cfg, self.iface, self.nworkers = cfg, iface, nworkers
        self.sockets: XdpSockets | None = None
        self.program: XdpProgram | None = None

    def open(self) -> None:
        rxq = len(list(Path(f"/sys/class/net/{self.iface.name}/queues").glob("rx-*")))
        if rxq > 1:
            log.warning("%s has %d RX queues and tasd listens on queue %d only: frames the device puts on "
                        "other queues do not reach tasd (make it one queue: ethtool -L %s combined 1)",
                        self.iface.name, rxq, self.cfg["xdp.queue"], self.iface.name)
        stale = XdpProgram.remove_stale(self.iface.index)
        if stale:
            log.warning("removed %d XDP program(s) left on %s by an earlier tasd", stale, self.iface.name)
        zc = {"auto": None, "on": True, "off": False}[self.cfg["xdp.zerocopy"]]
        self.sockets = XdpSockets.create(self.iface.name, self.cfg["xdp.queue"], self.nworkers,
                                         self.cfg["xdp.frames"], self.cfg["xdp.ring_size"], zc)
        try:
            self.program = XdpProgram(self.iface.index, self.cfg["xdp.mode"], ipv4_be(self.cfg["address"].ip),
                                      self.sockets.fds)
        except FastpathError as e:
            raise FastpathError(f"{self.iface.name}: {e}") from None
        log.info("AF_XDP on %s queue %d: %s mode, %s XDP%s", self.iface.name, self.cfg["xdp.queue"],
                 "zero-copy" if self.sockets.zerocopy else "copy", self.program.mode,
                 " (libxdp dispatcher)" if self.program.dispatcher else "")

    def worker_fds(self, i: int) -> dict[str, int]:
        return {"xsk-fd": self.sockets.fds[i], "umem-fd": self.sockets.umem_fd, "shared-fd": self.sockets.shared_fd}

    def describe(self) -> dict:
        return {"backend": "xdp", "zerocopy": bool(self.sockets and self.sockets.zerocopy),
                "xdp_mode": self.program.mode if self.program else None,
                "dispatcher": bool(self.program and self.program.dispatcher)}

    def close(self) -> None:
        if self.program is not None:
            try:
                self.program.detach()
            except FastpathError as e:
                if netif.lookup(self.iface.name) is not None:  # else it went with the interface
                    log.error("%s", e)
            self.program = None
        if self.sockets is not None:
            self.sockets.close()
            self.sockets = None


class TapBackend:
    name = "tap"

    def __init__(self, cfg, iface: netif.Interface | None, nworkers: int):
        self.cfg, self.iface, self.nworkers = cfg, iface, nworkers
        self.fds: list[int] = []

    def open(self) -> None:
        name = self.cfg["interface"]
        self.fds = tap_open_queues(name, self.nworkers)
        if self.iface is None:  # we created it: it lives as long as our fds
            netif.set_up(name)
            self.iface = netif.lookup(name)
            log.info("created TAP device %s", name)
        if self.nworkers > 1:
            tap_set_steering(self.fds[0], ipv4_be(self.cfg["address"].ip), self.nworkers)

    def worker_fds(self, i: int) -> dict[str, int]:
        return {"tap-fd": self.fds[i]}

    def describe(self) -> dict:
        return {"backend": "tap", "queues": len(self.fds)}

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []

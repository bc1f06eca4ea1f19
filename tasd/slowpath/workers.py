"""Fastpath worker processes: spawned pinned to their cores, each with its
shared-memory region and eventfds, watched through pidfds, stopped on
request."""
from __future__ import annotations

import array
import collections
import logging
import os
import socket
import signal
import subprocess
import sys
import time

from tasd.fastpath.binding import WorkerRegion, ffi, ipv4_be, lib

log = logging.getLogger("tasd")

STATE_NAMES = {lib.TAS_WORKER_INIT: "starting", lib.TAS_WORKER_RUNNING: "running",
               lib.TAS_WORKER_STOPPED: "stopped", lib.TAS_WORKER_FAILED: "failed"}


class WorkerStartError(RuntimeError):
    pass


class WorkerProc:
    """One fastpath worker as the slowpath sees it."""

    def __init__(self, index: int, core: int, cfg, mac: str, mtu: int):
        self.index, self.core = index, core
        self.region = WorkerRegion.create(f"tasd-worker{index}", cfg["ring_slots"], cfg["max_flows"])
        self.tune(cfg)
        shm = self.region.shm
        shm.worker_id = index
        shm.nworkers = len(cfg["cores"])
        shm.ip = ipv4_be(cfg["address"].ip)
        shm.mtu = mtu
        shm.mac = list(bytes.fromhex(mac.replace(":", "")))
        # sp2fp: the slowpath wakes the worker; fp2sp: the worker wakes us;
        # the doorbell: apps wake the worker; the socket carries fds to it
        self.sp2fp_efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.fp2sp_efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.doorbell_efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.sock, self._worker_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.proc: subprocess.Popen | None = None
        self.pidfd = -1
        self.backlog: collections.deque = collections.deque()  # messages waiting for room in sp2fp
        self.deferred = 0  # how many had to wait
        self.queued = self.pushed = 0  # messages sent, and of those in the ring: the k-th is there once pushed >= k

    def tune(self, cfg) -> None:
        """The settings the worker reads as it runs (a reload changes them)."""
        shm = self.region.shm
        shm.poll_us = cfg["poll_us"]
        shm.rto_min_us, shm.rto_max_us = int(cfg["tcp.rto_min"] * 1e6), int(cfg["tcp.rto_max"] * 1e6)
        shm.delack_us = int(cfg["tcp.delayed_ack"] * 1e6)

    def spawn(self, backend_fds: dict[str, int], capture: str | None) -> None:
        fds = {"region-fd": self.region.fd, "sp2fp-efd": self.sp2fp_efd, "fp2sp-efd": self.fp2sp_efd,
               "doorbell-efd": self.doorbell_efd, "sock-fd": self._worker_sock.fileno(), **backend_fds}
        argv = [sys.executable, "-m", "tasd.fastpath.worker", "--backend", backend_name(backend_fds),
                "--core", str(self.core), "--parent-pid", str(os.getpid())]
        argv += [a for k, fd in fds.items() for a in (f"--{k}", str(fd))]
        if capture:
            argv += ["--capture", capture]
        self.proc = subprocess.Popen(argv, pass_fds=list(fds.values()), stdin=subprocess.DEVNULL)
        self.pidfd = os.pidfd_open(self.proc.pid)
        self._worker_sock.close()  # the worker's end lives in the worker

    @property
    def state(self) -> int:
        return self.region.shm.state

    def describe(self) -> dict:
        shm = self.region.shm
        return {"worker": self.index, "core": self.core, "pid": self.proc.pid if self.proc else None,
                "state": STATE_NAMES.get(shm.state, str(shm.state)),
                "heartbeat_age_s": round(self.heartbeat_age(), 3) if shm.heartbeat_ns else None,
                "cpu_s": self.cpu_seconds()}

    def heartbeat_age(self) -> float:
        """Seconds since the worker's loop last said it turns."""
        return max(0, lib.fp_now_ns() - self.region.shm.heartbeat_ns) / 1e9

    def cpu_seconds(self) -> float | None:
        """CPU time the worker process used (user + system), seconds."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, AttributeError, IndexError):
            return None
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)

    def exit_reason(self) -> str:
        err = self.region.error
        if err:
            return err
        rc = self.proc.poll() if self.proc else None
        if rc is None:
            return "still running"
        return f"killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"

    def wake(self) -> None:
        os.eventfd_write(self.sp2fp_efd, 1)

    def send(self, msg_type: int, data=b"", arg: int = 0, **app_cmd) -> None:
        """A message for the worker (app_cmd: fields of struct tas_app_cmd),
        never lost: what finds the ring full waits, in order, in the backlog
        that flush() sends on as the worker makes room."""
        if app_cmd:
            c = ffi.new("struct tas_app_cmd *")
            for k, v in app_cmd.items():
                setattr(c, k, v)
            data = c
        if isinstance(data, ffi.CData):
            data = ffi.buffer(data)[:]
        self.queued += 1
        if self.backlog or not self.region.send(msg_type, data, arg):
            self.backlog.append((msg_type, data, arg))
            self.deferred += 1
            return
        self.pushed += 1
        if self.region.wake_needed():
            self.wake()

    def try_send(self, msg_type: int, data: bytes, arg: int = 0) -> bool:
        """A message that may be dropped (a frame: TCP sends it again): False
        if it cannot go now without overtaking the backlog."""
        if self.backlog or not self.region.send(msg_type, data, arg):
            return False
        self.queued += 1
        self.pushed += 1
        return True

    def flush(self) -> bool:
        """Send on what waits in the backlog, wake the worker if it sleeps;
        True once nothing waits."""
        while self.backlog and self.region.send(*self.backlog[0]):
            self.backlog.popleft()
            self.pushed += 1
        if self.region.wake_needed():
            self.wake()
        return not self.backlog

    def send_fd(self, msg_type: int, fd: int, data=b"", arg: int = 0, **app_cmd) -> None:
        """Hand fd to the worker, then the command that names it (the worker
        reads the fd when it meets the command)."""
        self.sock.sendmsg([b"f"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        self.send(msg_type, data, arg, **app_cmd)

    def request_stop(self) -> None:
        self.region.shm.stop = 1
        self.wake()

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        for fd in (self.sp2fp_efd, self.fp2sp_efd, self.doorbell_efd):
            if fd >= 0:
                os.close(fd)
        self.sp2fp_efd = self.fp2sp_efd = self.doorbell_efd = -1
        self.sock.close()
        self._worker_sock.close()
        self.region.close()


def backend_name(fds: dict[str, int]) -> str:
    return "tap" if "tap-fd" in fds else "xdp"


def wait_running(workers: list[WorkerProc], timeout: float = 15.0) -> None:
    """Block until every worker runs its loop; raise with the first failure."""
    deadline = time.monotonic() + timeout
    while True:
        for w in workers:
            if w.state == lib.TAS_WORKER_FAILED or w.proc.poll() is not None:
                raise WorkerStartError(f"fastpath worker {w.index} (CPU {w.core}) failed to start: "
                                       f"{w.exit_reason()}")
        if all(w.state == lib.TAS_WORKER_RUNNING for w in workers):
            return
        if time.monotonic() > deadline:
            raise WorkerStartError(f"fastpath workers did not start within {timeout:.0f} s")
        time.sleep(0.01)


def stop_all(workers: list[WorkerProc], timeout: float = 3.0) -> None:
    """Ask every worker to stop; kill those that do not within timeout."""
    for w in workers:
        if w.proc is not None and w.proc.poll() is None:
            w.request_stop()
    deadline = time.monotonic() + timeout
    for w in workers:
        if w.proc is None:
            continue
        try:
            w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker %d did not stop in time: killing it", w.index)
            w.proc.send_signal(signal.SIGKILL)
            w.proc.wait()

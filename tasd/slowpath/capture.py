"""Capture on demand (tasctl capture): the frames the fastpath sees, both
ways, into a pcap file, switched on and off while traffic flows.

The workers do all the per-frame work (dev_pcap.c: the filter, the records,
one write() per batch).  This module checks the request, compiles the filter
with libpcap, opens the file and writes its header, hands file and program to
every worker (TAS_MSG_CAPTURE_START) and waits for their answers; it stops
the capture (TAS_MSG_CAPTURE_STOP) when asked, or when the control
connection that started it closes, however its client ended (kill -9
included).

The file: the client creates it (tasctl does, as the user who runs it) and
names it by its absolute path; tasd opens it without following a symbolic
link and writes only to a regular file owned by the client's uid (any, for
root), so that asking tasd to capture gives nobody a way to write where they
could not.

One capture at a time.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import stat
import time
from dataclasses import dataclass, field

from tasd.fastpath.binding import FastpathError, capture_command, capture_file_init, capture_report, lib

from .control import Client, CommandError

ANSWER_TIMEOUT_S = 5.0
SNAPLEN_MAX = 262144  # tcpdump's default: every frame whole


@dataclass
class Capture:
    id: int
    path: str
    filter: str
    snaplen: int
    count: int
    client: Client | None
    base: list[tuple[int, int, int]]  # each worker's capture counters when it started
    started: float = field(default_factory=time.monotonic)
    stopping: asyncio.Future | None = None


class Captures:
    def __init__(self, workers: list, flush, option: str | None = None):
        """workers: the WorkerProcs; flush(): send on what waits for room in
        their rings; option: the capture option's file, if set (it holds
        the writers from start to stop)."""
        self.workers = workers
        self._flush = flush
        self.option = option
        self.active: Capture | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[tuple[int, int, int], asyncio.Future] = {}  # (type, capture, worker) -> answer

    # ---- the workers' answers -------------------------------------------------
    def _expect(self, msg_type: int, capture_id: int, worker: int) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._waiting[(msg_type, capture_id, worker)] = fut
        return fut

    def _unexpect(self, msg_type: int, capture_id: int) -> None:
        """Answers no longer waited for (they came, or the wait timed out)."""
        for w in self.workers:
            self._waiting.pop((msg_type, capture_id, w.index), None)

    def answer(self, worker: int, msg_type: int, capture_id: int, data: bytes) -> None:
        """A TAS_MSG_CAPTURE_STARTED or _STOPPED from a worker."""
        fut = self._waiting.pop((msg_type, capture_id, worker), None)
        if fut is not None and not fut.done():
            fut.set_result(capture_report(data))

    def _counters(self) -> list[tuple[int, int, int]]:
        out = []
        for w in self.workers:
            st = w.region.shm.stats
            out.append((st.capture_frames, st.capture_filtered, st.capture_lost))
        return out

    # ---- requests ---------------------------------------------------------------
    async def start(self, req: dict, client: Client | None) -> dict:
        if self.option:
            raise CommandError(f"the capture option is on (every frame goes to {self.option}, a file per "
                               "worker): one capture at a time")
        if self.active is not None:
            a = self.active
            raise CommandError(f"a capture is already running (pid {a.client.pid if a.client else '?'}, "
                               f"to {a.path})")
        path, expr = req.get("file"), req.get("filter") or ""
        snaplen, count = req.get("snaplen") or SNAPLEN_MAX, req.get("count") or 0
        if not isinstance(path, str) or not os.path.isabs(path):
            raise CommandError("file: an absolute path is needed")
        if not isinstance(expr, str):
            raise CommandError("filter: a string is needed")
        if isinstance(snaplen, bool) or not isinstance(snaplen, int) or not 1 <= snaplen <= SNAPLEN_MAX:
            raise CommandError(f"snaplen: from 1 to {SNAPLEN_MAX}")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count < 2 ** 32:
            raise CommandError("count: a number of frames, 0 for no limit")
        capture_id = next(self._ids)
        try:
            cmd = capture_command(capture_id, expr, snaplen, count)
        except FastpathError as e:
            raise CommandError(f"bad filter: {e}") from None
        fd = _open_file(path, client)
        try:
            try:
                capture_file_init(fd, snaplen)
            except FastpathError as e:
                raise CommandError(f"{path}: {e}") from None
            cap = self.active = Capture(capture_id, path, expr, snaplen, count, client, self._counters())
            answers = [self._expect(lib.TAS_MSG_CAPTURE_STARTED, capture_id, w.index) for w in self.workers]
            try:
                for w in self.workers:
                    w.send_fd(lib.TAS_MSG_CAPTURE_START, fd, cmd, capture_id)
            except OSError as e:  # (the workers that got it stop it again)
                self.stop(cap)
                raise CommandError(f"the capture did not start: {e.strerror or e}") from None
        finally:
            os.close(fd)  # the workers have their own, in flight on their sockets
        self._flush()
        if client is not None:
            client.on_close(lambda: self.stop(cap))
        try:
            done, _ = await asyncio.wait(answers, timeout=ANSWER_TIMEOUT_S)
        finally:
            self._unexpect(lib.TAS_MSG_CAPTURE_STARTED, capture_id)
        failed = [f"worker {w.index}: " + (os.strerror(f.result()["status"]) if f in done else "no answer")
                  for w, f in zip(self.workers, answers) if f not in done or f.result()["status"]]
        if failed:
            await self.stop(cap)
            raise CommandError(f"the capture did not start ({'; '.join(failed)})")
        return {"id": capture_id, "file": path, "filter": expr, "snaplen": snaplen, "count": count,
                "workers": len(self.workers)}

    def stop(self, cap: Capture | None = None) -> asyncio.Future:
        """Stop cap (the one running by default); the future's result is the
        final counts.  Stopping twice waits for the same answers."""
        cap = cap or self.active
        if cap is None:
            raise CommandError("no capture is running")
        if cap.stopping is None:
            cap.stopping = asyncio.ensure_future(self._stop(cap))
        return asyncio.shield(cap.stopping)

    async def _stop(self, cap: Capture) -> dict:
        answers = [self._expect(lib.TAS_MSG_CAPTURE_STOPPED, cap.id, w.index) for w in self.workers]
        for w in self.workers:
            w.send(lib.TAS_MSG_CAPTURE_STOP, b"", cap.id)
        self._flush()
        try:
            done, _ = await asyncio.wait(answers, timeout=ANSWER_TIMEOUT_S)
        finally:
            self._unexpect(lib.TAS_MSG_CAPTURE_STOPPED, cap.id)
            if self.active is cap:
                self.active = None
        reports = [f.result() if f in done else None for f in answers]
        total = {k: sum(r[k] for r in reports if r) for k in ("frames", "filtered", "lost", "bytes")}
        return {"id": cap.id, "file": cap.path, "filter": cap.filter, **total,
                "duration_s": round(time.monotonic() - cap.started, 3),
                "unanswered": [w.index for w, r in zip(self.workers, reports) if r is None]}

    def status(self, client: Client | None) -> dict:
        """The capture this client started, as it goes (the counters lag by
        up to 100 ms)."""
        cap = self.active
        if cap is None or cap.client is not client:
            return {"running": False}
        now = self._counters()
        frames, filtered, lost = (sum(n[i] - b[i] for n, b in zip(now, cap.base)) for i in range(3))
        return {"running": cap.stopping is None, "id": cap.id, "file": cap.path, "frames": frames,
                "filtered": filtered, "lost": lost, "elapsed_s": round(time.monotonic() - cap.started, 3)}

    async def stop_request(self, client: Client | None) -> dict:
        cap = self.active
        if cap is None or cap.client is not client:
            raise CommandError("no capture was started on this connection")
        return await self.stop(cap)


def _open_file(path: str, client: Client | None) -> int:
    """The capture file, opened to append; only a regular file, reached
    without a symbolic link at its end, and owned by the client (root: any)."""
    uid = client.uid if client is not None else None
    if uid is None:
        raise CommandError("cannot tell who asks (no peer credentials)")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        hint = " (the client creates it: tasctl capture does)" if e.errno == 2 else ""
        raise CommandError(f"{path}: {e.strerror}{hint}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (uid != 0 and st.st_uid != uid):
        os.close(fd)
        raise CommandError(f"{path}: not a regular file owned by uid {uid}")
    return fd

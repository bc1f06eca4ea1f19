"""tasnc: a small TCP tool on tasd (libtas's Python binding), for tests and
demos: listen or connect, then echo, sink or source bytes, with SHA-256 of
what went each way.

    python -m tools.tasnc listen PORT [--echo | --sink] [--count N] [--socket S]
    python -m tools.tasnc connect IP PORT [--send BYTES] [--recv] [--abort] [--socket S]

One JSON line per finished connection on stdout: bytes and SHA-256 received
and sent, how the peer ended it (fin, reset), and errors.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

from tools.linux_peer import pattern
from tasd.libtas import (EV_ACCEPTED, EV_CLOSED, EV_CONNECTED, EV_DATA, EV_ERROR, EV_FIN, EV_LISTENED,
                         EV_TX_SPACE, App)

CHUNK = 1 << 16  # bytes handed to tas_send at once


class Stream:
    """One connection's bookkeeping."""

    def __init__(self, conn, mode: str, to_send: int = 0, seed: int = 0):
        self.conn, self.mode = conn, mode
        self.rx = hashlib.sha256()
        self.tx = hashlib.sha256()
        self.rx_bytes = self.tx_bytes = 0
        self.to_send = to_send
        self.pattern = pattern(seed)
        self.backlog = b""          # echo: received, not yet sent
        self.fin = False
        self.error = 0
        self.shut = False
        self.started = time.monotonic()
        self.last_rx = None
        self.max_gap = 0.0          # longest wait between two arrivals of data

    def pump(self) -> None:
        try:
            self._pump()
        except OSError as e:  # reset, timed out: the connection is over
            self.error = e.errno or 0

    def _pump(self) -> None:
        c = self.conn
        if c.closed or self.error:
            return
        while True:  # receive everything there is
            data = c.recv(1 << 20)
            if not data:
                if data == b"":
                    self.fin = True
                break
            now = time.monotonic()
            if self.last_rx is not None:
                self.max_gap = max(self.max_gap, now - self.last_rx)
            self.last_rx = now
            self.rx.update(data)
            self.rx_bytes += len(data)
            if self.mode == "echo":
                self.backlog += data
        if self.mode == "echo" and self.backlog:
            n = c.send(self.backlog)
            self.tx.update(self.backlog[:n])
            self.tx_bytes += n
            self.backlog = self.backlog[n:]
        while self.to_send > 0:
            chunk = self.pattern[: min(CHUNK, self.to_send)]
            n = c.send(chunk)
            if n == 0:
                break
            self.tx.update(chunk[:n])
            self.tx_bytes += n
            self.to_send -= n
        # our side is done when the source ran dry (or, echoing, the peer closed and all is sent back)
        done_sending = (self.mode == "source" and self.to_send <= 0) or \
                       (self.mode in ("echo", "sink") and self.fin and not self.backlog)
        if done_sending and not self.shut:
            c.shutdown()
            self.shut = True

    def report(self) -> dict:
        return {"rx_bytes": self.rx_bytes, "rx_sha256": self.rx.hexdigest(), "tx_bytes": self.tx_bytes,
                "tx_sha256": self.tx.hexdigest(), "fin": self.fin, "max_gap": round(self.max_gap, 3), "error": os.strerror(self.error) if self.error
                else None, "seconds": round(time.monotonic() - self.started, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.tasnc", description=__doc__.split("\n\n")[0])
    ap.add_argument("--socket", default=None, help="tasd's app socket")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("listen")
    ls.add_argument("port", type=int)
    ls.add_argument("--echo", action="store_true", help="send back what arrives (default: sink)")
    ls.add_argument("--send", type=int, default=0, help="bytes to send to each client (then close)")
    ls.add_argument("--count", type=int, default=0, help="exit after this many connections (0: never)")
    ls.add_argument("--abort", action="store_true", help="reset each connection once data arrived")
    ls.set_defaults(hold=0.0)
    cs = sub.add_parser("connect")
    cs.add_argument("ip")
    cs.add_argument("port", type=int)
    cs.add_argument("--send", type=int, default=0, help="bytes to send, then shut down writing")
    cs.add_argument("--abort", action="store_true", help="reset the connection after sending")
    cs.add_argument("--hold", type=float, default=0.0, help="seconds to keep the connection open first")
    args = ap.parse_args(argv)

    app = App.open(args.socket, name="tasnc")
    ctx = app.context()
    streams: dict = {}
    finished = 0
    if args.cmd == "listen":
        ctx.listen(args.port, backlog=1024)
    else:
        ctx.connect(args.ip, args.port)
    deadline_hold = None
    while True:
        for ev in ctx.poll():
            if ev.type == EV_LISTENED:
                if ev.status:
                    print(json.dumps({"error": os.strerror(ev.status)}), flush=True)
                    return 1
                ev.listener.accept(1024)
                print(json.dumps({"listening": ev.listener.port}), flush=True)
            elif ev.type in (EV_ACCEPTED, EV_CONNECTED):
                if ev.type == EV_CONNECTED and ev.status:
                    print(json.dumps({"error": os.strerror(ev.status)}), flush=True)
                    return 1
                if ev.type == EV_ACCEPTED:
                    ev.listener.accept(1)
                    mode = "echo" if args.echo else ("source" if args.send else "sink")
                else:  # a client sends its bytes (maybe none), shuts down writing, and reads
                    mode = "source"
                    deadline_hold = time.monotonic() + args.hold
                streams[ev.conn] = Stream(ev.conn, mode, args.send)
                # a listener's --abort waits for the event of the data (that may have come already)
                if not args.hold and not (args.abort and ev.type == EV_ACCEPTED):
                    streams[ev.conn].pump()
            elif ev.type in (EV_DATA, EV_TX_SPACE, EV_FIN):
                s = streams.get(ev.conn)
                if s is not None and args.abort and not ev.conn.closed:
                    ev.conn.abort()  # at the first sign of the peer: a reset, nothing else
                    print(json.dumps(s.report() | {"aborted": True}), flush=True)
                elif s is not None and (not args.hold or time.monotonic() >= deadline_hold):
                    s.pump()
            elif ev.type == EV_ERROR:
                s = streams.get(ev.conn)
                if s is not None:
                    s.error = ev.status
            elif ev.type == EV_CLOSED:
                s = streams.pop(ev.conn, None)
                finished += 1
                if s is not None and not args.abort:
                    print(json.dumps(s.report()), flush=True)
                if args.cmd == "connect" or (args.count and finished >= args.count):
                    app.close()
                    return 0
        for s in list(streams.values()):
            c = s.conn
            if not c.closed and s.shut and (s.fin or s.error):
                c.close()  # both sides done: let tasd finish and say CLOSED
            elif not c.closed and s.error:
                c.close()  # reported when tasd says CLOSED
        if args.hold and deadline_hold and time.monotonic() >= deadline_hold:
            for s in streams.values():
                s.pump()
        ctx.wait(50)


if __name__ == "__main__":
    sys.exit(main())

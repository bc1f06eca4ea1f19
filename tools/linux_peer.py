"""The Linux side of TCP tests: small programs on the kernel's sockets, run in
the testbed's peer namespace.  Each prints JSON lines.

    python -m tools.linux_peer sink PORT [--count N] [--reply BYTES]
    python -m tools.linux_peer source IP PORT BYTES [--linger0] [--wait-eof]
    python -m tools.linux_peer echo-clients IP PORT --conns N --bytes B
    python -m tools.linux_peer hold IP PORT --count N          (connect N, wait for how they end)
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import socket
import struct
import sys
import time

CHUNK = 1 << 16


def pattern(seed: int = 7) -> bytes:
    out, h = bytearray(), hashlib.sha256(str(seed).encode()).digest()
    while len(out) < CHUNK:
        h = hashlib.sha256(h).digest()
        out += h
    return bytes(out[:CHUNK])


def send_bytes(sock: socket.socket, n: int, h) -> int:
    block, sent = pattern(), 0
    while sent < n:
        b = block[: min(CHUNK, n - sent)]
        sock.sendall(b)
        h.update(b)
        sent += len(b)
    return sent


MAX_GAP = [0.0]  # longest wait between two arrivals of data, for the report


def recv_all(sock: socket.socket, h) -> tuple[int, str | None]:
    n, last = 0, None
    try:
        while True:
            d = sock.recv(1 << 20)
            now = time.monotonic()
            if last is not None:
                MAX_GAP[0] = max(MAX_GAP[0], now - last)
            last = now
            if not d:
                return n, None
            h.update(d)
            n += len(d)
    except ConnectionResetError:
        return n, "reset"
    except TimeoutError:
        return n, "timeout"


def cmd_sink(args) -> int:
    srv = socket.create_server(("0.0.0.0", args.port), backlog=1024)
    print(json.dumps({"listening": args.port}), flush=True)
    for _ in range(args.count):
        c, peer = srv.accept()
        c.settimeout(120)
        h = hashlib.sha256()
        n, end = recv_all(c, h)
        out = {"peer": list(peer), "rx_bytes": n, "rx_sha256": h.hexdigest(), "end": end or "fin",
               "max_gap": round(MAX_GAP[0], 3)}
        if args.reply and end is None:
            th = hashlib.sha256()
            out["tx_bytes"] = send_bytes(c, args.reply, th)
            out["tx_sha256"] = th.hexdigest()
        c.close()
        print(json.dumps(out), flush=True)
    return 0


def cmd_source(args) -> int:
    c = socket.create_connection((args.ip, args.port), timeout=30)
    c.settimeout(120)
    th, rh = hashlib.sha256(), hashlib.sha256()
    out = {"local_port": c.getsockname()[1]}
    try:
        out["tx_bytes"] = send_bytes(c, args.bytes, th)
        out["tx_sha256"] = th.hexdigest()
        if args.linger0:  # an abort: RST instead of FIN
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            print(json.dumps(out | {"end": "aborted"}), flush=True)
            return 0
        if not args.wait_eof:  # else the peer closes first
            c.shutdown(socket.SHUT_WR)
        n, end = recv_all(c, rh)
        out |= {"rx_bytes": n, "rx_sha256": rh.hexdigest(), "end": end or "fin"}
    except (ConnectionResetError, BrokenPipeError):
        out["end"] = "reset"
    c.close()
    print(json.dumps(out), flush=True)
    return 0


class Stalled(Exception):
    pass


class Mismatch(Exception):
    pass


async def _echo_one(ip: str, port: int, nbytes: int, sem, stall: float, held: asyncio.Event, stalled: list) -> bool:
    async with sem:
        r, w = await asyncio.open_connection(ip, port)
    lport = w.get_extra_info("sockname")[1]
    data = pattern()
    sent, got = 0, bytearray()

    async def step(aw):
        try:
            return await asyncio.wait_for(aw, stall)
        except asyncio.TimeoutError:
            msg = f"port {lport}: no progress for {stall:g} s, sent {sent} of {nbytes}, echoed {len(got)}"
            print(json.dumps({"stalled": msg}), flush=True)  # now, while the connection is still open
            raise Stalled(msg) from None

    async def writer():
        nonlocal sent
        while sent < nbytes:
            b = data[: min(len(data), nbytes - sent)]
            w.write(b)
            await step(w.drain())
            sent += len(b)
        w.write_eof()

    async def reader():
        while True:
            d = await step(r.read(1 << 20))
            if not d:
                return
            got.extend(d)

    try:
        await asyncio.gather(writer(), reader())
    except Stalled:
        stalled.append(lport)
        await held.wait()  # open until the others are done, for a look at it
        raise
    finally:
        w.close()
    expect = (data * (nbytes // len(data) + 1))[:nbytes]
    if bytes(got) == expect:
        return True
    at = next((i for i, (a, b) in enumerate(zip(got, expect)) if a != b), min(len(got), nbytes))
    raise Mismatch(f"port {lport}: echoed {len(got)} of {nbytes} bytes, first difference at {at}")


async def _echo_clients(args) -> dict:
    sem = asyncio.Semaphore(256)  # connects in flight at once
    t0 = time.monotonic()
    held, stalled = asyncio.Event(), []
    tasks = [asyncio.ensure_future(_echo_one(args.ip, args.port, args.bytes, sem, args.stall, held, stalled))
             for _ in range(args.conns)]
    # the stalled ones stay open (waiting on held) until all others are done
    while sum(t.done() for t in tasks) + len(stalled) < len(tasks):
        await asyncio.sleep(0.2)
    held.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    ok = sum(1 for r in results if r is True)
    errors = sorted({repr(r) for r in results if r is not True and not isinstance(r, Stalled)})[:5]
    stalled = [str(r) for r in results if isinstance(r, Stalled)]
    return {"conns": args.conns, "ok": ok, "errors": errors, "stalled": stalled[:20], "n_stalled": len(stalled),
            "seconds": round(time.monotonic() - t0, 3)}


def cmd_echo_clients(args) -> int:
    try:
        import uvloop
        result = uvloop.run(_echo_clients(args))
    except ImportError:
        result = asyncio.run(_echo_clients(args))
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] == args.conns else 1


def cmd_hold(args) -> int:
    socks = [socket.create_connection((args.ip, args.port), timeout=30) for _ in range(args.count)]
    print(json.dumps({"connected": len(socks)}), flush=True)
    ends = {}
    for s in socks:
        s.settimeout(args.timeout)
        _, end = recv_all(s, hashlib.sha256())
        ends[end or "fin"] = ends.get(end or "fin", 0) + 1
        s.close()
    print(json.dumps({"ends": ends}), flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.linux_peer")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sink")
    s.add_argument("port", type=int)
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--reply", type=int, default=0, help="after the client's FIN, send this many bytes")
    s = sub.add_parser("source")
    s.add_argument("ip")
    s.add_argument("port", type=int)
    s.add_argument("bytes", type=int)
    s.add_argument("--linger0", action="store_true", help="abort (RST) after sending")
    s.add_argument("--wait-eof", action="store_true", help="read until the peer's FIN before closing")
    s = sub.add_parser("echo-clients")
    s.add_argument("ip")
    s.add_argument("port", type=int)
    s.add_argument("--conns", type=int, default=1)
    s.add_argument("--bytes", type=int, default=1 << 20)
    s.add_argument("--stall", type=float, default=60, help="give up on a connection without progress this long")
    s = sub.add_parser("hold")
    s.add_argument("ip")
    s.add_argument("port", type=int)
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args(argv)
    return {"sink": cmd_sink, "source": cmd_source, "echo-clients": cmd_echo_clients, "hold": cmd_hold}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())

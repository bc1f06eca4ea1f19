"""Helpers for the end-to-end tests: apps on tasd (tools/tasnc.py) and
Linux peers (tools/linux_peer.py) that print JSON lines."""
from __future__ import annotations

import json
import subprocess
import sys
import time

GIB = 1 << 30
PY = sys.executable


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def wait_line(proc: subprocess.Popen, key: str, timeout: float = 20) -> dict:
    """Read JSON lines from proc until one has key."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("{") and key in (d := json.loads(line)):
            return d
    raise AssertionError(f"no {key!r} line from {proc.args}")


def tasd_server(t, *args) -> subprocess.Popen:
    p = t.app(PY, "-m", "tools.tasnc", "listen", *map(str, args), stdout=subprocess.PIPE, text=True)
    wait_line(p, "listening")
    return p


def linux(tb, *args, timeout=300) -> list[dict]:
    r = tb.run(tb.ns_peer, PY, "-m", "tools.linux_peer", *map(str, args), timeout=timeout, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return lines(r.stdout)


def linux_server(tb, *args) -> subprocess.Popen:
    p = tb.popen(tb.ns_peer, PY, "-m", "tools.linux_peer", *map(str, args), stdout=subprocess.PIPE, text=True)
    wait_line(p, "listening")
    return p


def tasd_client(t, *args, timeout=300) -> list[dict]:
    r = t.run_app(PY, "-m", "tools.tasnc", "connect", *map(str, args), timeout=timeout, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return lines(r.stdout)


def finish(proc: subprocess.Popen, timeout: float = 60) -> list[dict]:
    out, _ = proc.communicate(timeout=timeout)
    return lines(out)


def tcp_stats(t) -> dict:
    return t.ctl("stats")["slowpath"]["tcp"]

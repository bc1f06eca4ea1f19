"""tasctl against a running tasd: flows (like ss -tni) with their filters,
apps, status, stats with --watch, top; the numbers checked against what real
Linux peers sent and received."""
from __future__ import annotations

import json
import signal
import subprocess
import time

from e2e import PY, wait_line

N = 100

# An app on tasd (libtas's Python binding) that opens N connections to a
# Linux server, sends each 500 + (local port % 2000) bytes, reads what the
# server sends, says so, and holds the connections until killed.
HOLDER = r"""
import json, sys, time
from tasd.libtas import App, EV_CONNECTED, EV_DATA
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
app = App.open(name="holder")
ctx = app.context()
for _ in range(n):
    ctx.connect(ip, port)
conns, got, sent, left = [], {}, {}, {}
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    for ev in ctx.poll():
        if ev.type == EV_CONNECTED:
            assert ev.status == 0, ev
            c = ev.conn
            conns.append(c)
            left[c] = 500 + c.local_port % 2000
            sent[c.local_port] = left[c]
            got[c.local_port] = 0
    for c in conns:
        while left.get(c):
            k = c.send(bytes(min(left[c], 65536)))
            if not k:
                break
            left[c] -= k
        while (d := c.recv()):
            got[c.local_port] += len(d)
    if len(conns) == n and not any(left.values()) and all(
            got[p] == 1000 + p % 3000 for p in got):
        break
    ctx.wait(10)
print(json.dumps({"ready": len(conns), "sent": sent, "got": got}), flush=True)
while True:
    ctx.poll()
    ctx.wait(1000)
"""

# The Linux side: accepts N connections, sends each 1000 + (client port %
# 3000) bytes, reads until it has what the client sends, reports per client
# port, then holds them until its stdin closes.
SERVER = r"""
import json, select, socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
srv = socket.create_server(("0.0.0.0", port), backlog=n)
print(json.dumps({"listening": port}), flush=True)
conns = {}
while len(conns) < n:
    c, a = srv.accept()
    c.sendall(bytes(1000 + a[1] % 3000))
    conns[a[1]] = (c, 0)
while any(got < 500 + p % 2000 for p, (c, got) in conns.items()):
    r, _, _ = select.select([c for c, _ in conns.values()], [], [], 30)
    assert r, "stalled"
    for c in r:
        p = c.getpeername()[1]
        conns[p] = (c, conns[p][1] + len(c.recv(65536)))
print(json.dumps({"received": {p: got for p, (c, got) in conns.items()},
                  "sent": {p: 1000 + p % 3000 for p in conns}}), flush=True)
sys.stdin.read()
"""


def tasctl(t, *args) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "tasd.tasctl", "-s", t.socket, *args], capture_output=True, text=True,
                          timeout=60)


def tasctl_json(t, *args):
    r = tasctl(t, "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_flows_apps_status_with_100_connections(tasd):
    t, tb = tasd, tasd.tb
    srv = tb.popen(tb.ns_peer, PY, "-c", SERVER, "7200", str(N), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                   text=True)
    wait_line(srv, "listening")
    app = t.app(PY, "-c", HOLDER, tb.peer_ip, "7200", str(N), stdout=subprocess.PIPE, text=True)
    mine = wait_line(app, "ready", timeout=90)
    theirs = wait_line(srv, "received", timeout=60)
    assert mine["ready"] == N

    # what tasd says about each connection matches what the Linux peer saw
    deadline = time.monotonic() + 10
    while True:
        flows = tasctl_json(t, "flows")["flows"]
        acked = {int(f["local"].rsplit(":", 1)[1]): f.get("bytes_acked") for f in flows}
        if all(acked.get(int(p)) == v for p, v in theirs["received"].items()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # the last ACKs may still be on their way
    assert len(flows) == N
    for f in flows:
        lport = f["local"].rsplit(":", 1)[1]
        assert f["state"] == "ESTABLISHED"
        assert f["remote"] == f"{tb.peer_ip}:7200"
        assert f["bytes_received"] == theirs["sent"][lport] == mine["got"][lport]
        assert f["bytes_acked"] == theirs["received"][lport] == mine["sent"][lport]
        assert f["send_q"] == 0 and f["recv_q"] == 0  # all read, all acknowledged
        assert f["srtt_us"] > 0 and f["rto_us"] >= 200_000 and f["cwnd"] > 0 and f["worker"] == 0

    # filters
    one = flows[0]
    lport = int(one["local"].rsplit(":", 1)[1])
    assert [f["conn"] for f in tasctl_json(t, "flows", "--port", str(lport))["flows"]] == [one["conn"]]
    assert len(tasctl_json(t, "flows", "--port", "7200")["flows"]) == N
    assert len(tasctl_json(t, "flows", "--state", "established", "--address", tb.peer_ip)["flows"]) == N
    assert tasctl_json(t, "flows", "--state", "SYN_SENT,TIME_WAIT")["flows"] == []
    assert tasctl_json(t, "flows", "--address", "10.9.9.9")["flows"] == []
    bad = tasctl(t, "flows", "--address", "nope")
    assert bad.returncode == 1 and "not an IPv4 address" in bad.stderr

    apps = tasctl_json(t, "apps")["apps"]
    assert len(apps) == 1
    a = apps[0]
    assert a["pid"] == app.pid and a["connections"] == N and a["contexts"] >= 1 and a["memory_bytes"] > 0
    assert a["name"] == "holder" and "-c" in a["command"]
    assert len(tasctl_json(t, "flows", "--app", str(a["app"]))["flows"]) == N
    text = tasctl(t, "apps").stdout
    assert str(app.pid) in text and f"{N:>6}" in text

    st = tasctl_json(t, "status")
    assert st["apps"] == 1 and st["connections"] == N and st["totals"]["rx_frames"] > 0
    assert st["workers"][0]["core"] == 0 and st["workers"][0]["state"] == "running"
    text = tasctl(t, "flows").stdout.splitlines()
    assert len(text) == N + 1 and "ESTABLISHED" in text[1]

    # killed: its connections are reset and gone
    app.send_signal(signal.SIGKILL)
    app.wait(10)
    deadline = time.monotonic() + 10
    while tasctl_json(t, "flows")["flows"] or tasctl_json(t, "apps")["apps"]:
        assert time.monotonic() < deadline, "the app's connections outlived it"
        time.sleep(0.1)
    srv.stdin.close()
    srv.wait(10)


def test_stats_watch_and_top(tasd):
    t, tb = tasd, tasd.tb
    pinger = tb.popen(tb.ns_peer, "ping", "-i", "0.01", "-q", t.ip, stdout=subprocess.DEVNULL)
    try:
        r = tasctl(t, "--json", "stats", "--watch", "0.5", "--count", "3")
        snaps = [json.loads(line) for line in r.stdout.splitlines()]
        assert len(snaps) == 3
        assert snaps[2]["fastpath"]["rx_frames"] > snaps[0]["fastpath"]["rx_frames"]
        r = tasctl(t, "stats", "--watch", "0.5", "--count", "2")
        assert r.returncode == 0 and "/s" in r.stdout and "fastpath.rx_frames" in r.stdout
        r = tasctl(t, "--json", "top", "-d", "0.5", "-n", "2")
        views = [json.loads(line) for line in r.stdout.splitlines()]
        w = views[1]["workers"][0]
        assert w["rx_fps"] > 20 and w["cpu_pct"] is not None, views
        r = tasctl(t, "top", "-d", "0.3", "-n", "1")
        assert r.returncode == 0 and "busiest" in r.stdout
        r = tasctl(t, "status", "--watch", "0.2", "--count", "2")
        assert r.returncode == 0 and r.stdout.count("worker 0: CPU 0") == 2
    finally:
        pinger.kill()

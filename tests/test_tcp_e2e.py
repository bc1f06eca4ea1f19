"""TCP end to end on the testbed: applications on tasd (tools/tasnc.py, on
libtas) against the Linux kernel's TCP in the other namespace
(tools/linux_peer.py), both directions."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

from e2e import GIB, PY, finish, linux, linux_server, tasd_client, tasd_server, tcp_stats, wait_line



# ---- bulk both ways ------------------------------------------------------------------

def test_linux_client_sends_1gib_to_server_on_tasd(tasd):
    srv = tasd_server(tasd, 7000, "--count", 1)
    (c,) = linux(tasd.tb, "source", tasd.tb.tasd_ip, 7000, GIB)
    (s,) = finish(srv)
    assert c["end"] == "fin" and c["tx_bytes"] == GIB
    assert s["rx_bytes"] == GIB and s["rx_sha256"] == c["tx_sha256"] and s["fin"]


def test_client_on_tasd_sends_1gib_to_linux_server(tasd):
    tb = tasd.tb
    srv = linux_server(tb, "sink", 7001)
    (c,) = tasd_client(tasd, tb.peer_ip, 7001, "--send", GIB)
    (s,) = finish(srv)
    assert c["tx_bytes"] == GIB and c["error"] is None
    assert s["rx_bytes"] == GIB and s["rx_sha256"] == c["tx_sha256"]


def test_server_on_tasd_sends_1gib_to_linux_client(tasd):
    srv = tasd_server(tasd, 7002, "--send", GIB, "--count", 1)
    (c,) = linux(tasd.tb, "source", tasd.tb.tasd_ip, 7002, 0)
    (s,) = finish(srv)
    assert s["tx_bytes"] == GIB and c["rx_bytes"] == GIB and c["rx_sha256"] == s["tx_sha256"]


def test_linux_server_sends_1gib_to_client_on_tasd(tasd):
    tb = tasd.tb
    srv = linux_server(tb, "sink", 7003, "--reply", GIB)
    (c,) = tasd_client(tasd, tb.peer_ip, 7003)
    (s,) = finish(srv)
    assert s["tx_bytes"] == GIB and c["rx_bytes"] == GIB and c["rx_sha256"] == s["tx_sha256"]


# ---- half-close, abort, TIME_WAIT ------------------------------------------------------------

def test_half_close_server_on_tasd_echoes_after_client_fin(tasd):
    """The Linux client shuts down writing first; tasd's side keeps sending."""
    srv = tasd_server(tasd, 7010, "--echo", "--count", 1)
    (c,) = linux(tasd.tb, "source", tasd.tb.tasd_ip, 7010, 3_000_000)
    (s,) = finish(srv)
    assert c["end"] == "fin" and c["rx_bytes"] == 3_000_000 and c["rx_sha256"] == c["tx_sha256"]
    assert s["fin"] and s["tx_bytes"] == 3_000_000


def test_half_close_client_on_tasd_reads_after_its_fin(tasd):
    tb = tasd.tb
    srv = linux_server(tb, "sink", 7011, "--reply", 2_000_000)
    (c,) = tasd_client(tasd, tb.peer_ip, 7011, "--send", 1_000_000)
    (s,) = finish(srv)
    assert s["rx_bytes"] == 1_000_000 and s["rx_sha256"] == c["tx_sha256"]
    assert c["rx_bytes"] == 2_000_000 and c["rx_sha256"] == s["tx_sha256"] and c["fin"]


def test_abort_on_tasd_seen_as_reset_by_linux(tasd):
    srv = tasd_server(tasd, 7020, "--abort", "--count", 1)
    (c,) = linux(tasd.tb, "source", tasd.tb.tasd_ip, 7020, 100_000)
    assert c["end"] == "reset"
    srv.kill()


def test_abort_by_linux_seen_as_reset_on_tasd(tasd):
    srv = tasd_server(tasd, 7021, "--count", 1)
    linux(tasd.tb, "source", tasd.tb.tasd_ip, 7021, 10_000, "--linger0")
    (s,) = finish(srv)
    assert s["error"] == os.strerror(104)  # ECONNRESET


def peer_time_wait(tb) -> int:
    out = tb.run(tb.ns_peer, "ss", "-tanH", "state", "time-wait").stdout
    return len([line for line in out.splitlines() if line.strip()])


def test_time_wait_on_tasd_when_it_closes_first(tasd):
    """The server on tasd sends and closes first: TIME_WAIT is tasd's."""
    srv = tasd_server(tasd, 7030, "--send", 1000, "--count", 1)
    linux(tasd.tb, "source", tasd.tb.tasd_ip, 7030, 0, "--wait-eof")
    finish(srv)
    assert tcp_stats(tasd)["tcp_time_wait_now"] == 1
    assert peer_time_wait(tasd.tb) == 0


def test_time_wait_on_linux_when_it_closes_first(tasd):
    tb = tasd.tb
    srv = tasd_server(tasd, 7031, "--echo", "--count", 1)
    linux(tb, "source", tb.tasd_ip, 7031, 1000)
    finish(srv)
    assert peer_time_wait(tb) == 1
    assert tcp_stats(tasd)["tcp_time_wait_now"] == 0


# ---- many connections -----------------------------------------------------------------------

TAS_ECHO = os.path.join(os.path.dirname(__import__("tasd").__file__), "lib", "tas-echo")


@pytest.mark.parametrize("cores", [[0], [0, 1]])
def test_1000_connections_echo_1mb_each(make_testbed, cores, tmp_path):
    """tas-echo (C, on libtas) serves 1,000 Linux clients at once."""
    tb = make_testbed()
    t = tb.start_tasd(cores=cores, app={"max_connections": 2048}).wait_ready()
    report = str(tmp_path / "echo-report.jsonl")
    srv = t.app(TAS_ECHO, "7040", stdout=subprocess.PIPE, text=True, env={"TAS_ECHO_REPORT": report})
    wait_line(srv, "listening")
    clients = tb.popen(tb.ns_peer, PY, "-m", "tools.linux_peer", "echo-clients", tb.tasd_ip, "7040",
                       "--conns", "1000", "--bytes", str(1 << 20), "--stall", "60", stdout=subprocess.PIPE, text=True)
    seen = []  # how tasd and Linux saw connections that stalled, while they still were
    for line in clients.stdout:
        r = json.loads(line)
        if isinstance(r.get("stalled"), str) and len(seen) < 3:
            port = int(re.search(r"port (\d+):", r["stalled"]).group(1))
            seen.append({"client": r["stalled"],
                         "tasd": [f for f in t.ctl("flows")["flows"] if f["remote"].endswith(f":{port}")],
                         "linux": tb.run(tb.ns_peer, "ss", "-tinoe", f"sport = :{port}", check=False).stdout})
    clients.wait(timeout=30)
    if r.get("ok") != 1000:  # what tas-echo read and wrote on the connections that failed
        ports = {int(p) for p in re.findall(r"port (\d+):", json.dumps(r))}
        with open(report) as fh:
            seen += [x for x in map(json.loads, fh) if x["port"] in ports]
    assert r.get("ok") == 1000, f"{r}\n" + "\n".join(map(str, seen))
    if len(cores) == 2:
        per_worker = [w["tcp_rx_segs"] for w in t.ctl("stats")["workers"]]
        assert min(per_worker) > 0.3 * sum(per_worker), per_worker
    srv.kill()


# ---- Linux peers without options --------------------------------------------------------------

@pytest.mark.parametrize("sysctl", ["net.ipv4.tcp_timestamps=0", "net.ipv4.tcp_window_scaling=0",
                                    "net.ipv4.tcp_sack=0"])
def test_linux_peer_without_option_interoperates(tasd, sysctl):
    tb = tasd.tb
    tb.run(tb.ns_peer, "sysctl", "-q", "-w", sysctl)
    srv = tasd_server(tasd, 7050, "--echo", "--count", 1)
    (c,) = linux(tb, "source", tb.tasd_ip, 7050, 20_000_000)
    finish(srv)
    assert c["rx_bytes"] == 20_000_000 and c["rx_sha256"] == c["tx_sha256"]
    sink = linux_server(tb, "sink", 7051)
    (cc,) = tasd_client(tasd, tb.peer_ip, 7051, "--send", 20_000_000)
    (s,) = finish(sink)
    assert s["rx_sha256"] == cc["tx_sha256"]


# ---- an app killed with connections open ---------------------------------------------------

def test_app_killed_resets_its_connections_and_returns_memory(tasd):
    tb = tasd.tb
    srv = tasd_server(tasd, 7060)
    hold = tb.popen(tb.ns_peer, PY, "-m", "tools.linux_peer", "hold", tb.tasd_ip, 7060, "--count", 100,
                    stdout=subprocess.PIPE, text=True)
    wait_line(hold, "connected")
    deadline = time.monotonic() + 10
    while tasd.ctl("stats")["slowpath"]["tcp"]["flows_installed"] < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    apps = tasd.ctl("apps")["apps"]
    assert len(apps) == 1 and apps[0]["connections"] == 100
    mem_before = tasd.ctl("stats")["slowpath"]["apps"]["memory_bytes"]
    assert mem_before > 0
    srv.send_signal(signal.SIGKILL)
    srv.wait()
    (ends,) = finish(hold)
    assert ends["ends"] == {"reset": 100}
    st = tasd.ctl("stats")["slowpath"]
    assert st["apps"]["registered_now"] == 0 and st["apps"]["memory_bytes"] == 0
    deadline = time.monotonic() + 5
    while tasd.ctl("stats")["slowpath"]["tcp"]["flows_installed"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tasd.ctl("stats")["slowpath"]["tcp"]["flows_installed"] == 0
    # a new app registers and works
    srv2 = tasd_server(tasd, 7061, "--echo", "--count", 1)
    (c,) = linux(tb, "source", tb.tasd_ip, 7061, 100_000)
    assert c["rx_sha256"] == c["tx_sha256"]
    finish(srv2)


def test_app_learns_tasd_address_at_registration(tasd):
    """The sockets layer decides with it which connections tasd carries."""
    code = ("from tasd.libtas import App\n"
            "with App.open(name='addr') as a:\n"
            "    iface, gw = a.address\n"
            "    print(iface, gw)\n")
    out = tasd.run_app(PY, "-c", code).stdout.split()
    assert out == [f"{tasd.tb.tasd_ip}/{tasd.tb.PREFIX_LEN}", "None"]

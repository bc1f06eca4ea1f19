"""tasd on the testbed against the real Linux stack: ARP, ICMP, steering,
start-up errors and clean shutdown, on AF_XDP and on TAP."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tasd.fastpath.binding import lib

BACKENDS = ["xdp", "tap"]


def ping(tb, *args, count=200, interval="0.005", timeout=60):
    return tb.run(tb.ns_peer, "ping", "-c", str(count), "-i", interval, "-W", "1", *args, tb.tasd_ip,
                  check=False, timeout=timeout)


def received(ping_result) -> int:
    m = re.search(r"(\d+) received", ping_result.stdout)
    return int(m.group(1)) if m else 0


def peer_neighbour(tb) -> str | None:
    """The MAC the Linux peer's neighbour table holds for tasd."""
    out = tb.run(tb.ns_peer, "ip", "neigh", "show", tb.tasd_ip, "dev", tb.peer_if).stdout
    m = re.search(r"lladdr ([0-9a-f:]{17})", out)
    return m.group(1) if m else None


def in_peer(tb, code: str, timeout=60) -> str:
    """Run Python code in the peer namespace; return its stdout."""
    return tb.run(tb.ns_peer, sys.executable, "-c", textwrap.dedent(code), timeout=timeout).stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_ping_arp_both_ways(make_testbed, backend):
    tb = make_testbed(tap=backend == "tap")
    tasd = tb.start_tasd(backend=backend).wait_ready()
    r = ping(tb)
    assert received(r) == 200, r.stdout + r.stderr
    status = tasd.ctl("status")
    assert status["backend"] == backend
    assert peer_neighbour(tb) == status["mac"]
    arp = {e["ip"]: e for e in tasd.ctl("arp")["entries"]}
    assert arp[tb.peer_ip]["mac"] == tb.peer_mac and arp[tb.peer_ip]["state"] == "reachable"
    fp = tasd.ctl("stats")["fastpath"]
    assert fp["rx_icmp_echo"] == 200
    assert fp["rx_frames"] == fp["rx_icmp_echo"] + fp["rx_exceptions"] + sum(fp["drops"].values())
    arping = tb.run(tb.ns_peer, "arping", "-c", "3", "-w", "5", "-I", tb.peer_if, tb.tasd_ip, check=False)
    assert "Received 3 response(s)" in arping.stdout, arping.stdout
    assert tasd.stop() == 0


def test_large_and_padded_pings(testbed):
    tb = testbed
    tb.start_tasd().wait_ready()
    assert received(ping(tb, "-s", "1472", count=20, interval="0.01")) == 20  # a full 1500-byte packet
    assert received(ping(tb, "-s", "0", count=20, interval="0.01")) == 20     # padded to 60 bytes
    # too big for the MTU: the Linux peer fragments it, and tasd does not reassemble
    assert received(ping(tb, "-s", "2000", count=3, interval="0.1")) == 0


def test_kernel_keeps_its_own_traffic_on_the_interface(testbed):
    """With tasd's XDP program attached, the kernel in tasd's namespace still
    serves a TCP connection to its own address on the same interface."""
    tb = testbed
    tasd = tb.start_tasd().wait_ready()
    assert tasd.ctl("status")["backend"] == "xdp"
    server = tb.popen(tb.ns_tasd, sys.executable, "-c", textwrap.dedent(f"""
        import socket
        s = socket.create_server(("{tb.kernel_ip}", 5001))
        c, _ = s.accept()
        data = b""
        while len(data) < 1 << 20:
            chunk = c.recv(65536)
            if not chunk: break
            data += chunk
        c.sendall(data[::-1])
        c.close()
    """))
    out = in_peer(tb, f"""
        import socket, time, os
        data = os.urandom(1 << 20)
        for _ in range(100):
            try:
                c = socket.create_connection(("{tb.kernel_ip}", 5001), timeout=10); break
            except ConnectionRefusedError:
                time.sleep(0.05)
        c.sendall(data)
        back = b""
        while len(back) < len(data):
            back += c.recv(65536)
        print("ok" if back == data[::-1] else "mismatch")
    """)
    assert out.strip() == "ok"
    server.wait(timeout=10)
    assert received(ping(tb, count=20, interval="0.01")) == 20  # and tasd still answers for its address


def test_tcp_to_tasd_without_listener_is_refused(testbed):
    tb = testbed
    tasd = tb.start_tasd().wait_ready()
    out = in_peer(tb, f"""
        import socket
        try:
            socket.create_connection(("{tb.tasd_ip}", 80), timeout=5)
            print("connected")
        except ConnectionRefusedError:
            print("refused")
    """)
    assert out.strip() == "refused"
    assert tasd.ctl("stats")["slowpath"]["tcp"]["tcp_resets_sent"] == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_workers_steer_flows_by_hash(make_testbed, backend):
    """Each flow lands on the worker that tas_flow_worker names: the one the
    slowpath will give the connection to."""
    tb = make_testbed(tap=backend == "tap")
    tasd = tb.start_tasd(backend=backend, cores=[0, 1]).wait_ready()
    ports = list(range(40000, 40200))
    out = in_peer(tb, f"""
        import socket
        refused = 0
        for port in {ports!r}:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("{tb.peer_ip}", port))
            s.settimeout(5)
            try:
                s.connect(("{tb.tasd_ip}", 80))
            except ConnectionRefusedError:
                refused += 1
            s.close()
        print(refused)
    """)
    assert int(out) == len(ports)
    expected = [0, 0]
    for port in ports:
        expected[lib.tas_flow_worker(int(IPv4Address(tb.peer_ip)), int(IPv4Address(tb.tasd_ip)), port, 80, 2)] += 1
    got = [w["exceptions"]["tcp_noflow"] for w in tasd.ctl("stats")["workers"]]
    assert got == expected and min(got) > 50
    for w in tasd.ctl("status")["workers"]:  # each worker pinned to its CPU
        assert os.sched_getaffinity(w["pid"]) == {w["core"]}
    # ARP goes to worker 0 only
    assert tasd.ctl("stats")["workers"][1]["exceptions"]["arp"] == 0


def test_arp_resolution_announcement_and_probes(testbed):
    tb = testbed
    cap = Path(f"/tmp/tasd-arp-{tb.id}.pcap")
    # --immediate-mode: without it, frames wait in the capture ring for up to a
    # second and the last ones are lost when tcpdump is stopped
    dump = tb.popen(tb.ns_peer, "tcpdump", "--immediate-mode", "-i", tb.peer_if, "-U", "-w", cap, "arp",
                    stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    tasd = tb.start_tasd(arp={"retries": 3, "retry_interval": 0.1, "announce": 2}).wait_ready()
    r = tasd.ctl("arp_resolve", ip=tb.peer_ip)
    assert r["mac"] == tb.peer_mac
    t0 = time.monotonic()
    r = tasd.ctl("arp_resolve", ip="10.77.0.99")  # nobody there
    elapsed = time.monotonic() - t0
    assert r["mac"] is None
    assert 0.6 < elapsed < 3.0  # requests at 0, 0.1, 0.3; unreachable at 0.7
    entries = {e["ip"]: e for e in tasd.ctl("arp")["entries"]}
    assert entries["10.77.0.99"]["state"] == "failed"
    time.sleep(1.2)  # the second announcement
    dump.send_signal(signal.SIGINT)
    dump.wait(timeout=10)
    rows = subprocess.run(["tshark", "-r", cap, "-T", "fields", "-e", "arp.opcode", "-e", "arp.src.proto_ipv4",
                           "-e", "arp.dst.proto_ipv4", "-e", "frame.time_relative"],
                          capture_output=True, text=True, check=True).stdout.split("\n")
    cap.unlink()
    rows = [r.split("\t") for r in rows if r]
    probes = [r for r in rows if r[:3] == ["1", "0.0.0.0", tb.tasd_ip]]
    announcements = [r for r in rows if r[:3] == ["1", tb.tasd_ip, tb.tasd_ip]]
    asks = [float(r[3]) for r in rows if r[:3] == ["1", tb.tasd_ip, "10.77.0.99"]]
    assert len(probes) == 2 and len(announcements) == 2, "\n".join(map(str, rows))
    assert len(asks) == 3
    gaps = [b - a for a, b in zip(asks, asks[1:])]
    assert gaps[0] == pytest.approx(0.1, abs=0.05) and gaps[1] == pytest.approx(0.2, abs=0.05)


def tasd_processes(tb, tasd) -> list[int]:
    return [tasd.proc.pid] + [w["pid"] for w in tasd.ctl("status")["workers"]]


def memfds_named(prefix: str, tb) -> list[str]:
    """Memfds named prefix* that processes in tb's namespaces hold (other
    testbeds on the machine may have their own)."""
    found = []
    pids = {p for ns in (tb.ns_tasd, tb.ns_peer)
            for p in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()}
    for fd_dir in [Path(f"/proc/{pid}/fd") for pid in pids]:
        try:
            for fd in fd_dir.iterdir():
                target = os.readlink(fd)
                if target.startswith(f"/memfd:{prefix}"):
                    found.append(f"{fd_dir.parent.name}: {target}")
        except OSError:
            continue
    return found


def xdp_attached(tb) -> bool:
    return "prog/xdp" in tb.run(tb.ns_tasd, "ip", "-d", "link", "show", "dev", tb.tasd_if).stdout


def test_sigterm_under_ping_flood_leaves_nothing_behind(testbed):
    tb = testbed
    shm_before = set(os.listdir("/dev/shm"))
    tasd = tb.start_tasd(cores=[0, 1]).wait_ready()
    pids = tasd_processes(tb, tasd)
    assert xdp_attached(tb) and memfds_named("tasd-", tb)
    flood = tb.popen(tb.ns_peer, "ping", "-f", tb.tasd_ip, stdout=subprocess.DEVNULL)
    time.sleep(1.5)
    assert tasd.ctl("stats")["fastpath"]["rx_icmp_echo"] > 1000
    assert tasd.stop(signal.SIGTERM) == 0
    flood.kill()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} is still there"
    assert subprocess.run(["ip", "netns", "pids", tb.ns_tasd], capture_output=True, text=True).stdout.split() == []
    assert not xdp_attached(tb)
    assert memfds_named("tasd-", tb) == []
    assert set(os.listdir("/dev/shm")) == shm_before
    assert not Path(tasd.socket).exists()
    assert "Traceback" not in tasd.output


def test_sigkill_leaves_workers_to_die_and_next_start_cleans_up(testbed):
    tb = testbed
    tasd = tb.start_tasd(cores=[0, 1]).wait_ready()
    pids = tasd_processes(tb, tasd)
    tasd.proc.kill()
    tasd.proc.wait()
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{p}").exists() for p in pids[1:]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{p}").exists() for p in pids[1:]), "workers outlived tasd"
    assert xdp_attached(tb)  # nobody could detach it
    again = tb.start_tasd().wait_ready()
    assert "removed 1 XDP program(s) left" in again.output
    assert received(ping(tb, count=10, interval="0.01")) == 10
    assert again.stop() == 0
    assert not xdp_attached(tb)


def test_capture_writes_pcap(testbed):
    tb = testbed
    pcap = Path(f"/tmp/tasd-cap-{tb.id}.pcap")
    tasd = tb.start_tasd(capture=str(pcap)).wait_ready()
    assert received(ping(tb, count=5, interval="0.05")) == 5
    tasd.stop()
    out = subprocess.run(["tshark", "-r", pcap, "-Y", "icmp", "-T", "fields", "-e", "icmp.type"],
                         capture_output=True, text=True, check=True).stdout.split()
    pcap.unlink()
    assert out.count("8") == 5 and out.count("0") == 5


# ---- start-up errors: one clear line, non-zero exit --------------------------

def failed_start(tb, **cfg) -> str:
    tasd = tb.start_tasd(**cfg)
    assert tasd.proc.wait(timeout=30) != 0
    lines = tasd.output.strip().splitlines()
    assert lines and lines[-1].startswith("tasd: error: "), tasd.output
    assert "Traceback" not in tasd.output
    return lines[-1]


def test_unknown_interface(testbed):
    assert "no interface named 'nope0'" in failed_start(testbed, interface="nope0")


def test_address_configured_on_the_host(testbed):
    tb = testbed
    line = failed_start(tb, address=f"{tb.kernel_ip}/24")
    assert f"address {tb.kernel_ip} is already configured on interface" in line


def test_address_used_by_another_host(testbed):
    tb = testbed
    line = failed_start(tb, address=f"{tb.peer_ip}/24")
    assert f"address {tb.peer_ip} is already used on the link by {tb.peer_mac}" in line
    assert not xdp_attached(tb)


def test_second_tasd_on_the_same_interface(testbed):
    tb = testbed
    first = tb.start_tasd().wait_ready()
    line = failed_start(tb, address="10.77.0.5/24", control_socket=f"/run/tasd-testbed/{tb.id}-b.sock")
    assert f"is already used by another tasd (pid {first.proc.pid})" in line
    assert received(ping(tb, count=5, interval="0.05")) == 5  # the first one is unharmed


def test_no_permission(testbed):
    """Root without capabilities (an empty bounding set) is refused up front."""
    tb = testbed
    p = tb.run(tb.ns_tasd, "setpriv", "--bounding-set", "-all", "--inh-caps", "-all", sys.executable, "-m", "tasd",
               "--interface", tb.tasd_if, "--address", f"{tb.tasd_ip}/24",
               "--control-socket", f"/run/tasd-testbed/{tb.id}-nocap.sock", check=False)
    assert p.returncode == 1
    assert p.stderr.strip() == ("tasd: error: permission denied: tasd needs CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF "
                                "(run it as root)")


def test_missing_kernel_feature(testbed):
    """Native XDP on a driver that has none (a Linux bridge)."""
    tb = testbed
    tb.run(tb.ns_tasd, "ip", "link", "add", "tbr0", "type", "bridge")
    tb.run(tb.ns_tasd, "ip", "link", "set", "tbr0", "up")
    line = failed_start(tb, interface="tbr0", xdp={"mode": "native"}, arp={"probe": False})
    assert "native" in line and "not supported" in line.lower()


def test_tap_name_taken_by_another_device(testbed):
    tb = testbed
    line = failed_start(tb, backend="tap", interface=tb.veth_tasd)
    assert f"interface '{tb.veth_tasd}' exists and is not a TAP device" in line


def test_dead_or_hung_worker_stops_tasd(testbed):
    """Supervision: a worker that dies, or stops turning its loop, ends tasd
    with an error rather than leaving it half working."""
    tb = testbed
    tasd = tb.start_tasd(cores=[0, 1]).wait_ready()
    worker = tasd.ctl("status")["workers"][1]["pid"]
    os.kill(worker, signal.SIGKILL)
    assert tasd.proc.wait(timeout=10) == 1
    assert "fastpath worker 1 (CPU 1) died: killed by signal 9" in tasd.output
    assert not xdp_attached(tb)

    tasd = tb.start_tasd().wait_ready()
    worker = tasd.ctl("status")["workers"][0]["pid"]
    os.kill(worker, signal.SIGSTOP)
    try:
        assert tasd.proc.wait(timeout=10) == 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGCONT)
    assert "fastpath worker 0 (CPU 0) is hung" in tasd.output
    assert not xdp_attached(tb)


@pytest.mark.parametrize("busy", ["control", "app"])
def test_socket_in_use(testbed, tmp_path, busy):
    """A second tasd (on another interface) that names a busy control or app
    socket stops with an error and leaves the first one's socket alone."""
    tb = testbed
    first = tb.start_tasd().wait_ready()
    tb.run(tb.ns_tasd, "ip", "link", "add", "tbr1", "type", "bridge")
    tb.run(tb.ns_tasd, "ip", "link", "set", "tbr1", "up")
    other = {"app_socket": str(tmp_path / "app.sock")} if busy == "control" else \
        {"control_socket": str(tmp_path / "ctl.sock")}
    line = failed_start(tb, interface="tbr1", address="10.88.0.2/24", arp={"probe": False}, **other)
    path = first.socket if busy == "control" else first.app_socket
    assert f"{busy} socket {path} is in use by another tasd" in line
    assert first.ctl("status")["pid"] == first.proc.pid
    assert Path(first.socket).exists() and Path(first.app_socket).exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_interface_removed_stops_tasd(make_testbed, backend):
    tb = make_testbed(tap=backend == "tap")
    tasd = tb.start_tasd(backend=backend).wait_ready()
    tb.run(tb.ns_tasd, "ip", "link", "del", tb.tasd_if)
    assert tasd.proc.wait(timeout=10) == 1
    assert f"interface {tb.tasd_if} was removed; stopping" in tasd.output
    assert "Traceback" not in tasd.output


def test_sigterm_during_startup_cleans_up(testbed):
    """SIGTERM while workers start (the XDP program already attached):
    one line, non-zero exit, nothing left attached."""
    tb = testbed
    tasd = tb.start_tasd(cores=[0, 1])
    deadline = time.monotonic() + 20
    while not xdp_attached(tb) and tasd.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    tasd.proc.send_signal(signal.SIGTERM)
    rc = tasd.proc.wait(timeout=20)
    out = tasd.output
    if rc == 0:  # too late: it was up already and stopped cleanly
        assert "ready" in out
    else:
        assert rc == 1 and out.strip().splitlines()[-1] == "tasd: error: SIGTERM during start-up", out
    assert not xdp_attached(tb)
    assert "Traceback" not in out

"""tasctl capture: frames the fastpath sees, both ways, into a pcap file,
switched on and off while traffic flows (dev_pcap.c in the workers,
tasd/slowpath/capture.py, tasctl).

First the worker's side in process (the in-memory device, the rings played
by the test: no root needed), then tasd on the testbed with real transfers
between a Linux peer and an app on tasd, read back with tshark."""
from __future__ import annotations

import array
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from e2e import finish, linux, tasd_server
from tasd.fastpath.binding import (FastpathError, MemDevice, Worker, WorkerRegion, capture_command,
                                   capture_file_init, capture_report, ipv4_be, lib)
from test_fastpath import OUR_IP, OUR_MAC, arp_request, ping, syn

PY = sys.executable
SIZE = 1 << 30  # long enough to start and stop a capture in its middle


def tshark(path, *args) -> list[list[str]]:
    """tshark -r path -T fields ARGS: one list of fields per frame."""
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", *args], capture_output=True, text=True,
                         check=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


# ---- the worker's side, in process ----------------------------------------------------------

class CaptureEngine:
    """A worker on an in-memory device wrapped for capture, the test playing
    the slowpath: the capture file's fd goes over the worker socket, the
    command through sp2fp, the answer comes back through fp2sp."""

    def __init__(self, worker_id=0):
        self.region = WorkerRegion.create(f"test-capture{worker_id}", 16)
        shm = self.region.shm
        shm.worker_id, shm.nworkers = worker_id, 1
        shm.ip, shm.mtu, shm.mac = ipv4_be(OUR_IP), 1500, list(OUR_MAC.packed)
        self.mem = MemDevice()
        self.dev = self.mem.capture()
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.worker = Worker(self.region, self.dev, sock_fd=theirs.detach())

    def rx(self, *frames) -> None:
        for f in frames:
            self.mem.inject(f)
        while self.worker.poll():
            pass
        self.mem.take_all()

    def answers(self) -> list[tuple[int, int, dict]]:
        self.worker.poll()
        return [(t, arg, capture_report(data)) for t, arg, data in self.region.receive()
                if t in (lib.TAS_MSG_CAPTURE_STARTED, lib.TAS_MSG_CAPTURE_STOPPED)]

    def start(self, fd: int, capture_id=1, expr="", snaplen=65535, limit=0) -> dict:
        self.sock.sendmsg([b"f"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        assert self.region.send(lib.TAS_MSG_CAPTURE_START, capture_command(capture_id, expr, snaplen, limit),
                                capture_id)
        ((t, arg, rep),) = self.answers()
        assert (t, arg, rep["id"]) == (lib.TAS_MSG_CAPTURE_STARTED, capture_id, capture_id)
        return rep

    def stop(self, capture_id=1) -> dict:
        assert self.region.send(lib.TAS_MSG_CAPTURE_STOP, b"", capture_id)
        ((t, arg, rep),) = self.answers()
        assert (t, arg) == (lib.TAS_MSG_CAPTURE_STOPPED, capture_id)
        return rep

    def close(self):
        self.worker.close()
        self.dev.close()
        self.region.close()
        self.sock.close()


def capture_file(path: Path, snaplen=65535) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    capture_file_init(fd, snaplen)
    return fd


@pytest.fixture
def engine():
    e = CaptureEngine()
    yield e
    e.close()


def test_capture_off_costs_nothing_and_writes_nothing(engine, tmp_path):
    engine.rx(ping(seq=1))
    st = engine.region.stats()
    assert (st["rx_frames"], st["tx_frames"], st["capture_frames"]) == (1, 1, 0)


def test_capture_filter_both_directions_and_counts(engine, tmp_path):
    path = tmp_path / "c.pcap"
    fd = capture_file(path)
    engine.rx(ping(seq=0))  # before the capture: not in the file
    assert engine.start(os.dup(fd), expr="icmp")["status"] == 0
    os.close(fd)
    engine.rx(ping(seq=1), syn(), arp_request(), ping(seq=2))
    rep = engine.stop()
    engine.rx(ping(seq=3))  # after it: not in the file either
    assert (rep["frames"], rep["filtered"], rep["lost"]) == (4, 2, 0)
    st = engine.region.stats()
    assert (st["capture_frames"], st["capture_filtered"], st["capture_lost"]) == (4, 2, 0)
    assert sorted(tshark(path, "-e", "icmp.type", "-e", "icmp.seq")) == [["0", "1"], ["0", "2"], ["8", "1"],
                                                                        ["8", "2"]]


def test_capture_snaplen_and_limit(engine, tmp_path):
    path = tmp_path / "c.pcap"
    fd = capture_file(path, snaplen=60)
    engine.start(fd, capture_id=7, snaplen=60, limit=3)
    engine.rx(*(ping(seq=i, data=bytes(500)) for i in range(5)))
    rep = engine.stop(capture_id=7)
    assert rep["frames"] == 3 and rep["bytes"] == 3 * (16 + 60)
    assert tshark(path, "-e", "frame.cap_len", "-e", "frame.len") == [["60", "542"]] * 3


def test_capture_restarts_and_refuses_a_second_one(engine, tmp_path):
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    engine.start(capture_file(a), capture_id=1)
    fd = capture_file(b)
    engine.sock.sendmsg([b"f"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
    engine.region.send(lib.TAS_MSG_CAPTURE_START, capture_command(2, "", 100), 2)
    ((_, _, rep),) = engine.answers()
    assert rep["status"] == 16  # EBUSY: one capture at a time; the fd was closed
    engine.rx(ping(seq=1))
    assert engine.stop(1)["frames"] == 2
    engine.sock.sendmsg([b"f"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
    os.close(fd)
    engine.region.send(lib.TAS_MSG_CAPTURE_START, capture_command(3, "icmp[icmptype] == icmp-echoreply", 100), 3)
    assert engine.answers()[0][2]["status"] == 0
    engine.rx(ping(seq=2))
    assert engine.stop(3)["frames"] == 1
    assert tshark(b, "-e", "icmp.type", "-e", "icmp.seq") == [["0", "2"]]


def test_capture_start_without_an_fd_or_on_a_file_not_appending(engine, tmp_path):
    engine.region.send(lib.TAS_MSG_CAPTURE_START, capture_command(1, "", 100), 1)
    assert engine.answers()[0][2]["status"] == 9  # EBADF: no fd came
    fd = os.open(tmp_path / "x.pcap", os.O_WRONLY | os.O_CREAT, 0o600)
    engine.sock.sendmsg([b"f"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
    os.close(fd)
    engine.region.send(lib.TAS_MSG_CAPTURE_START, capture_command(2, "", 100), 2)
    assert engine.answers()[0][2]["status"] == 9
    assert engine.stop(2)["frames"] == 0


def test_two_workers_append_whole_records_to_one_file(tmp_path):
    """Records of several workers, each batch one write() to the same
    O_APPEND file, never interleave: every record reads back whole."""
    path = tmp_path / "c.pcap"
    fd = capture_file(path)
    engines = [CaptureEngine(i) for i in range(2)]
    for e in engines:
        e.start(os.dup(fd))
    os.close(fd)
    for rnd in range(20):
        for i, e in enumerate(engines):
            e.rx(*(ping(seq=i * 10000 + rnd * 100 + k, data=bytes([i]) * 1400) for k in range(40)))
    reps = [e.stop() for e in engines]
    for e in engines:
        e.close()
    assert [r["frames"] for r in reps] == [1600, 1600]
    rows = tshark(path, "-e", "icmp.type", "-e", "icmp.seq", "-e", "frame.len", "-e", "_ws.expert")
    size = str(len(ping(data=bytes(1400))))
    assert len(rows) == 3200 and all(r[2] == size and r[3] == "" for r in rows)
    assert len({(r[0], r[1]) for r in rows}) == 3200


def test_failed_writes_count_as_lost(tmp_path):
    """A file that cannot grow (here RLIMIT_FSIZE, as a full disk would):
    the records are counted lost, not written, and the worker carries on."""
    def scenario():
        e = CaptureEngine()
        e.start(capture_file(tmp_path / "full.pcap"))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))
        e.rx(*(ping(seq=i, data=bytes(1000)) for i in range(20)))  # one batch of 20 records, 21 KB
        rep = e.stop()
        e.rx(ping(seq=99))
        st = e.region.stats()
        e.close()
        return [rep["frames"], rep["lost"], st["capture_lost"], st["rx_icmp_echo"]]
    assert in_child(scenario) == [0, 40, 40, 21]
    assert os.path.getsize(tmp_path / "full.pcap") == 10_000  # torn: nothing written after


def test_bad_filter_is_libpcaps_one_line():
    with pytest.raises(FastpathError, match="syntax error"):
        capture_command(1, "tcp port", 100)
    with pytest.raises(FastpathError, match="filter too long"):
        capture_command(1, " or ".join(f"port {p}" for p in range(1, 200)), 100)
    assert capture_command(1, "  ", 100).ninsns == 0


# ---- tasd on the testbed ----------------------------------------------------------------------

class Tasctl:
    """tasctl capture running, until stopped."""

    def __init__(self, t, path, *args):
        self.path = Path(path)
        self.proc = subprocess.Popen([PY, "-m", "tasd.tasctl", "-s", t.socket, "capture", "-w", str(path),
                                      *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        line = self.proc.stderr.readline()
        assert line.startswith("tasctl: capturing to"), line + self.proc.stderr.read()
        self.started = line

    def stop(self, sig=signal.SIGINT) -> str:
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=20)
        assert self.proc.returncode == 0, err
        return err


def written(err: str) -> int:
    """Frames written, from tasctl's last line."""
    m = re.search(r"tasctl: (\d+) frames written to ", err)
    assert m, err
    return int(m.group(1))


def capture_stats(t) -> tuple[int, int]:
    st = t.ctl("stats")["fastpath"]
    return st["capture_frames"], st["capture_filtered"]


def stream_bytes(path, index: int) -> dict[str, bytes]:
    """A TCP stream of the file, as tshark reassembles it: the bytes each
    side sent (retransmissions counted once), by its address and port."""
    out = subprocess.run(["tshark", "-r", str(path), "-q", "-z", f"follow,tcp,raw,{index}"], capture_output=True,
                         text=True, check=True).stdout
    node = {}
    data = {0: bytearray(), 1: bytearray()}
    for line in out.splitlines():
        if line.startswith(("Node 0: ", "Node 1: ")):
            node[int(line[5])] = line.split(": ", 1)[1]
        elif line.strip() and not line.startswith(("=", "Follow:", "Filter:")):
            data[1 if line.startswith("\t") else 0] += bytes.fromhex(line.strip())  # a tab: node 1 sent it
    return {node[i]: bytes(data[i]) for i in node}


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def echo_through_tasd(tb, t, port: int, sport: int, payload: bytes) -> bytes:
    """payload from a Linux peer (socat, from sport) to an echo app on tasd; what came back."""
    r = subprocess.run(tb.netns_argv(tb.ns_peer, ["socat", "-t", "10", "-", f"TCP:{t.ip}:{port},sourceport={sport}"]),
                       input=payload, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("cores, tap", [([0], False), ([0, 1], False), ([0], True)], ids=["xdp", "xdp-2", "tap"])
def test_capture_spans_a_transfer_both_ways(make_testbed, tmp_path, cores, tap):
    """4 MB from a Linux peer through an echo app on tasd and back, captured
    with a filter: the streams tshark reads back are the data, both ways;
    pings meanwhile are left out.  With two workers, a connection on each,
    both appending to the one file."""
    tb = make_testbed(tap=tap)
    t = tb.start_tasd(cores=cores).wait_ready()
    srv = tasd_server(t, 7400, "--echo", "--count", len(cores))
    sports = [next(p for p in range(40000, 41000)
                   if lib.tas_flow_worker(int(IPv4Address(tb.peer_ip)), int(IPv4Address(t.ip)), p, 7400,
                                          len(cores)) == w) for w in range(len(cores))]
    payload = os.urandom(4_000_000)
    path = tmp_path / "echo.pcap"
    cap = Tasctl(t, path, "tcp", "port", 7400)
    assert "(filter tcp port 7400)" in cap.started
    pinger = tb.popen(tb.ns_peer, "ping", "-c", "20", "-i", "0.05", t.ip, stdout=subprocess.DEVNULL)
    for sport in sports:
        assert echo_through_tasd(tb, t, 7400, sport, payload) == payload
    finish(srv)
    pinger.wait(timeout=10)
    frames, filtered = capture_stats(t)
    err = cap.stop()
    n = written(err)
    assert n >= frames > len(cores) * 2 * len(payload) // 1448 and filtered >= 40  # the pings, both ways
    assert os.stat(path).st_mode & 0o777 == 0o600
    for i, sport in enumerate(sports):
        streams = stream_bytes(path, i)
        assert streams.keys() == {f"{tb.peer_ip}:{sport}", f"{t.ip}:7400"}
        assert all(sha(b) == sha(payload) for b in streams.values())
    assert tshark(path, "-Y", "not tcp.port == 7400", "-e", "frame.number") == []
    assert len(tshark(path, "-e", "frame.number")) == n
    assert all(w["capture_frames"] > 0 for w in t.ctl("stats")["workers"])


def test_capture_on_and_off_while_traffic_flows(tasd, tmp_path):
    """Started and stopped in the middle of a transfer: the transfer ends
    intact, the file holds its middle (data one way, ACKs the other), and
    stops growing with the capture; the counters stop moving."""
    t, tb = tasd, tasd.tb
    srv = tasd_server(t, 7401, "--count", 1)
    src = tb.popen(tb.ns_peer, PY, "-m", "tools.linux_peer", "source", t.ip, 7401, SIZE,
                   stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while t.ctl("stats")["fastpath"]["tcp_rx_segs"] < 1000:
        assert time.monotonic() < deadline and src.poll() is None, "the transfer did not start"
        time.sleep(0.05)
    path = tmp_path / "middle.pcap"
    cap = Tasctl(t, path, "-s", "128")
    time.sleep(0.5)
    err = cap.stop(signal.SIGTERM)
    size = os.path.getsize(path)
    frames_after_stop = capture_stats(t)[0]
    time.sleep(0.3)
    assert src.poll() is None, "the transfer should still be running"
    assert os.path.getsize(path) == size and capture_stats(t)[0] == frames_after_stop
    out, _ = src.communicate(timeout=120)
    (c,) = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    (s,) = finish(srv)
    assert c["tx_bytes"] == SIZE and s["rx_bytes"] == SIZE and s["rx_sha256"] == c["tx_sha256"]
    n = written(err)
    assert n > 1000
    rows = tshark(path, "-e", "frame.cap_len", "-e", "ip.src")
    assert len(rows) == n and max(int(r[0]) for r in rows) == 128
    assert {r[1] for r in rows} == {t.ip, tb.peer_ip}


def test_capture_ends_when_tasctl_is_killed(tasd, tmp_path):
    t, tb = tasd, tasd.tb
    path = tmp_path / "killed.pcap"
    cap = Tasctl(t, path, "icmp")
    pinger = tb.popen(tb.ns_peer, "ping", "-i", "0.02", t.ip, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while capture_stats(t)[0] < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    cap.proc.kill()
    cap.proc.wait()
    time.sleep(0.5)  # tasd sees the connection close, the workers stop and close the file
    frames, size = capture_stats(t)[0], os.path.getsize(path)
    time.sleep(0.5)
    assert capture_stats(t)[0] == frames and os.path.getsize(path) == size  # while the pings go on
    assert t.ctl("stats")["fastpath"]["rx_icmp_echo"] > frames // 2 + 10
    assert len(tshark(path, "-e", "frame.number")) == frames
    again = Tasctl(t, tmp_path / "again.pcap")  # no capture left running
    again.stop()
    pinger.kill()


def test_bad_filter_and_a_second_capture_are_one_line_errors(tasd, tmp_path):
    t = tasd
    bad = subprocess.run([PY, "-m", "tasd.tasctl", "-s", t.socket, "capture", "-w", str(tmp_path / "bad.pcap"),
                          "tcp", "port"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("tasctl: bad filter: ") and "syntax error" in bad.stderr
    assert not (tmp_path / "bad.pcap").exists()
    first = Tasctl(t, tmp_path / "first.pcap")
    second = subprocess.run([PY, "-m", "tasd.tasctl", "-s", t.socket, "capture", "-w",
                             str(tmp_path / "second.pcap")], capture_output=True, text=True, timeout=30)
    assert second.returncode == 1
    assert second.stderr == f"tasctl: a capture is already running (pid {first.proc.pid}, to {first.path})\n"
    first.stop()


def test_capture_stops_after_count_or_seconds(tasd, tmp_path):
    t, tb = tasd, tasd.tb
    pinger = tb.popen(tb.ns_peer, "ping", "-i", "0.02", t.ip, stdout=subprocess.DEVNULL)
    counted = subprocess.run([PY, "-m", "tasd.tasctl", "-s", t.socket, "--json", "capture", "-w",
                              str(tmp_path / "count.pcap"), "-c", "10", "icmp"], capture_output=True, text=True,
                             timeout=30)
    assert counted.returncode == 0, counted.stderr
    r = json.loads(counted.stdout)
    assert r["frames"] == 10 and r["filter"] == "icmp"  # one worker: exactly
    assert len(tshark(tmp_path / "count.pcap", "-Y", "icmp", "-e", "frame.number")) == 10
    t0 = time.monotonic()
    timed = subprocess.run([PY, "-m", "tasd.tasctl", "-s", t.socket, "capture", "-w", str(tmp_path / "timed.pcap"),
                            "-G", "1"], capture_output=True, text=True, timeout=30)
    assert timed.returncode == 0 and 1.0 <= time.monotonic() - t0 < 5, timed.stderr
    assert 40 <= written(timed.stderr) <= 200  # 1 s of pings and their replies, every 20 ms
    pinger.kill()


def test_capture_option_still_writes_and_holds_the_writers(testbed, tmp_path):
    tb = testbed
    pcap = tmp_path / "option.pcap"
    t = tb.start_tasd(capture=str(pcap)).wait_ready()
    tb.run(tb.ns_peer, "ping", "-c", "3", "-i", "0.05", t.ip)
    r = subprocess.run([PY, "-m", "tasd.tasctl", "-s", t.socket, "capture", "-w", str(tmp_path / "x.pcap")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stderr == (f"tasctl: the capture option is on (every frame goes to {pcap}, "
                                              "a file per worker): one capture at a time\n")
    assert t.ctl("stats")["fastpath"]["capture_frames"] >= 6
    t.stop()
    assert [row[0] for row in tshark(pcap, "-Y", "icmp", "-e", "icmp.type")].count("0") == 3


def test_capture_writes_only_files_of_the_user_who_asks(tasd):
    """tasd runs as root: a user may have it write to a regular file of
    theirs only (not another's, not through a symbolic link)."""
    t = tasd
    os.chmod(t.socket, 0o666)
    top = Path(tempfile.mkdtemp(prefix="tasd-capture-"))  # pytest's tmp_path is root's alone
    try:
        os.chmod(top, 0o755)
        d = top / "nobody"
        d.mkdir()
        os.chown(d, NOBODY, NOBODY)
        rootfile = top / "root.pcap"
        rootfile.write_bytes(b"precious")
        answers = as_nobody(lambda: nobody_asks(t.socket, d, rootfile))
        assert answers[0] == {"ok": False, "error": f"{rootfile}: not a regular file owned by uid {NOBODY}"}
        assert answers[1]["ok"] is False and "Too many levels of symbolic links" in answers[1]["error"]
        assert answers[2]["ok"] is True, answers[2]
        assert rootfile.read_bytes() == b"precious"
        assert os.stat(d / "mine.pcap").st_uid == NOBODY and os.path.getsize(d / "mine.pcap") >= 24
    finally:
        shutil.rmtree(top)


NOBODY = 65534


def nobody_asks(sock: str, d: Path, rootfile: Path) -> list[dict]:
    link = d / "link.pcap"
    os.symlink(rootfile, link)
    mine = d / "mine.pcap"
    os.close(os.open(mine, os.O_WRONLY | os.O_CREAT, 0o600))
    answers = []
    for f in (rootfile, link, mine):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(sock)
            s.sendall((json.dumps({"cmd": "capture_start", "file": str(f)}) + "\n").encode())
            answers.append(json.loads(s.makefile().readline()))
    return answers


def as_nobody(fn):
    """fn() in a child process running as nobody; its result (JSON)."""
    def nobody():
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        return fn()
    return in_child(nobody)


def in_child(fn):
    """fn() in a forked child process; its result (JSON)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            out = {"result": fn()}
            code = 0
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            out = {"error": repr(e)}
        finally:
            os.write(w, json.dumps(out).encode())
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        out = json.loads(f.read())
    os.waitpid(pid, 0)
    assert "result" in out, out
    return out["result"]

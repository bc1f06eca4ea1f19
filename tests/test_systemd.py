"""tasd under systemd's protocols, with the test playing systemd: READY=1 only
once tasd answers, STATUS= lines, a reload (SIGHUP, `tasctl reload`) that
changes the log level without dropping a connection, watchdog pings that stop
when tasd hangs and a restart after the watchdog kills it; the unit file and
its installation (systemd-analyze verify).

A full systemd is not running on the test machines (no PID 1 to run
transient units), so FakeSystemd does what systemd does for a Type=notify
service with WatchdogSec=: it reads the notification socket, and on a missed
ping sends the watchdog signal (SIGABRT), SIGKILL after a grace period, and
starts the service again (Restart=on-failure)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tasd.tasctl import TasctlError, request
from tools.testbed import write_toml

from e2e import PY

ROOT = Path(__file__).resolve().parent.parent


class FakeSystemd:
    """The service manager's end of NOTIFY_SOCKET: every datagram, parsed,
    with the time it came."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict]] = []
        self._done = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def env(self, watchdog_s: float | None = None) -> dict:
        env = {"NOTIFY_SOCKET": str(self.path)}
        if watchdog_s:
            env["WATCHDOG_USEC"] = str(int(watchdog_s * 1e6))
        return env

    def _read(self) -> None:
        while not self._done:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            msg = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append((time.monotonic(), msg))

    def wait_for(self, key: str, value: str | None = None, after: float = 0.0, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for t, m in self.messages:
                    if t >= after and key in m and (value is None or m[key] == value):
                        return m
            time.sleep(0.02)
        raise AssertionError(f"no {key}={value} from tasd; got {self.messages}")

    def times(self, key: str, after: float = 0.0) -> list[float]:
        with self._lock:
            return [t for t, m in self.messages if key in m and t >= after]

    def close(self) -> None:
        self._done = True
        self._thread.join()
        self.sock.close()


@pytest.fixture
def fake_systemd(tmp_path):
    sd = FakeSystemd(tmp_path / "notify.sock")
    yield sd
    sd.close()


def _echo_client(tb, t, port: int) -> subprocess.Popen:
    """A Linux client in the peer namespace on one connection to tasd: each
    line it reads on stdin goes out, the echo comes back on stdout."""
    return tb.popen(tb.ns_peer, "socat", "-", f"TCP:{t.ip}:{port}", stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, text=True, bufsize=1)


def _echo(client: subprocess.Popen, line: str) -> str:
    client.stdin.write(line + "\n")
    client.stdin.flush()
    return client.stdout.readline().strip()


def test_ready_only_once_tasd_answers(testbed, fake_systemd):
    """READY=1 comes after start-up, and tasd answers at once when it does;
    STATUS= has the one-line summary; STOPPING=1 on SIGTERM."""
    t = testbed.start_tasd(env=fake_systemd.env())
    ready = fake_systemd.wait_for("READY", "1")
    status = request(t.socket, "status", timeout=1.0)  # no retry: it answers now
    assert status["workers"][0]["state"] == "running"
    assert ready["STATUS"].startswith(f"{t.cfg['address']} on {testbed.tasd_if} (xdp), 1 worker(s)")
    # nothing said READY before the daemon could: the first message is READY
    assert "READY" in fake_systemd.messages[0][1]
    t.proc.send_signal(signal.SIGTERM)
    assert t.proc.wait(20) == 0
    fake_systemd.wait_for("STOPPING", "1")


def test_reload_changes_log_level_and_keeps_connections(testbed, fake_systemd):
    t = testbed.start_tasd(env=fake_systemd.env(), log_level="info")
    fake_systemd.wait_for("READY", "1")
    srv = t.app(os.path.join(os.path.dirname(__import__("tasd").__file__), "lib", "tas-echo"), "7100",
                stdout=subprocess.PIPE, text=True)
    assert "listening" in srv.stdout.readline()
    client = _echo_client(testbed, t, 7100)
    assert _echo(client, "before") == "before"
    assert request(t.socket, "status")["log_level"] == "info"

    # SIGHUP (what kill -HUP does): a live change and one that needs a restart
    cfg = dict(t.cfg, log_level="debug", mtu=1400, **{"tcp.rto_min": 0.05})
    write_toml(t.config_path, cfg)
    before = time.monotonic()
    t.proc.send_signal(signal.SIGHUP)
    fake_systemd.wait_for("RELOADING", "1", after=before)
    fake_systemd.wait_for("READY", "1", after=before)
    st = request(t.socket, "status")
    assert st["log_level"] == "debug" and st["reloads"] == {"ok": 1, "failed": 0}
    assert _echo(client, "after") == "after"
    out = t.output
    assert "configuration reloaded" in out and "changed log_level, tcp.rto_min" in out
    assert "needs a restart (running value kept): mtu" in out
    assert st["mtu"] == 1500

    # tasctl reload (ExecReload=): a bad file changes nothing and fails
    (Path(t.config_path)).write_text(Path(t.config_path).read_text() + "\nbogus_key = 1\n")
    r = subprocess.run([PY, "-m", "tasd.tasctl", "-c", str(t.config_path), "reload"], capture_output=True, text=True)
    assert r.returncode == 1 and "bogus_key" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # each value right, together wrong (rto_min above rto_initial): nothing changes
    write_toml(t.config_path, dict(cfg, log_level="error", **{"tcp.rto_min": 2.0}))
    r = subprocess.run([PY, "-m", "tasd.tasctl", "-s", t.socket, "reload"], capture_output=True, text=True)
    assert r.returncode == 1 and "rto" in r.stderr, r.stdout + r.stderr
    st = request(t.socket, "status")
    assert st["log_level"] == "debug" and st["reloads"] == {"ok": 1, "failed": 2}
    cfg["log_level"] = "warning"
    write_toml(t.config_path, cfg)
    r = subprocess.run([PY, "-m", "tasd.tasctl", "-s", t.socket, "reload"], capture_output=True, text=True)
    assert r.returncode == 0 and "applied: log_level" in r.stdout, r.stdout + r.stderr
    assert request(t.socket, "status")["log_level"] == "warning"
    assert _echo(client, "still") == "still"
    client.stdin.close()
    client.wait(10)


def test_watchdog_pings_stop_when_hung_and_restart_recovers(testbed, fake_systemd):
    """WatchdogSec=2: pings about every second; SIGSTOP hangs tasd, the pings
    stop; the supervisor kills it as systemd would and starts it again, and
    the new tasd comes up on the interface the dead one left (stale XDP
    program, socket files, workers)."""
    wd = 2.0
    t = testbed.start_tasd(env=fake_systemd.env(wd))
    fake_systemd.wait_for("READY", "1")
    t0 = time.monotonic()
    time.sleep(3.5)
    pings = fake_systemd.times("WATCHDOG", after=t0)
    assert len(pings) >= 3, fake_systemd.messages
    assert max(b - a for a, b in zip(pings, pings[1:])) < wd

    os.kill(t.proc.pid, signal.SIGSTOP)  # hung: its loop no longer turns
    hung = time.monotonic()
    while time.monotonic() - max(fake_systemd.times("WATCHDOG")) < wd:  # what systemd waits for
        assert time.monotonic() - hung < 10, "pings went on while tasd was stopped"
        time.sleep(0.1)
    assert not fake_systemd.times("WATCHDOG", after=hung + 0.5)
    os.kill(t.proc.pid, signal.SIGABRT)  # WatchdogSignal=; a stopped process takes it when continued...
    time.sleep(1.0)
    os.kill(t.proc.pid, signal.SIGKILL)  # ...so systemd's TimeoutAbortSec ends it
    t.proc.wait(10)

    again = time.monotonic()
    t2 = testbed.start_tasd(env=fake_systemd.env(wd))
    fake_systemd.wait_for("READY", "1", after=again, timeout=30)
    assert request(t2.socket, "status")["workers"][0]["state"] == "running"
    assert "removed 1 XDP program(s) left" in t2.output
    r = testbed.run(testbed.ns_peer, "ping", "-c", "3", "-i", "0.2", "-W", "2", t2.ip, check=False)
    assert r.returncode == 0, r.stdout


def test_unit_file_installs_and_verifies(tmp_path):
    """`./dev install-service`'s installer under DESTDIR, then systemd-analyze
    verify on the installed unit (its programs resolved inside DESTDIR)."""
    root = tmp_path / "root"
    r = subprocess.run([str(ROOT / "systemd" / "install.sh")], env={**os.environ, "DESTDIR": str(root)},
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    unit = root / "etc/systemd/system/tasd.service"
    for prog in ("tasd", "tasctl", "tasd-run"):
        assert os.access(root / "usr/local/bin" / prog, os.X_OK)
    assert (root / "etc/tasd/tasd.toml").read_text() == (ROOT / "systemd/tasd.toml").read_text()
    text = unit.read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text and "RuntimeDirectory=tasd" in text
    assert "CAP_SYS_ADMIN" not in text.split("CapabilityBoundingSet=")[1].splitlines()[0]
    check = tmp_path / "tasd.service"
    check.write_text(text.replace("/usr/local/bin/", f"{root}/usr/local/bin/"))
    v = subprocess.run(["systemd-analyze", "verify", str(check)], capture_output=True, text=True)
    assert v.returncode == 0 and "tasd.service" not in v.stdout + v.stderr, v.stdout + v.stderr
    assert shutil.which("systemd-analyze")


def test_journal_priorities(tmp_path):
    """With stderr connected to the journal (JOURNAL_STREAM names it), log
    lines carry syslog priorities; elsewhere the plain "tasd: LEVEL:" form."""
    code = ("import logging, sys; from tasd.slowpath import sdnotify; "
            "logging.basicConfig(handlers=[sdnotify.log_handler()]); "
            "logging.getLogger('tasd').error('bad'); logging.getLogger('tasd').warning('hm')")
    err = tmp_path / "err"
    with open(err, "w") as f:
        st = os.fstat(f.fileno())
        subprocess.run([PY, "-c", code], stderr=f, check=True,
                       env={**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert err.read_text().splitlines() == ["<3>bad", "<4>hm"]
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, env={**os.environ, "JOURNAL_STREAM": "1:2"})
    assert r.stderr.splitlines() == ["tasd: ERROR: bad", "tasd: WARNING: hm"]

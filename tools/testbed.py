"""The testbed: network namespaces joined by veth, for tests, demos and benchmarks.

    ns "tasd" (tasd runs here)                ns "peer" (the real Linux stack)
    kernel 10.77.0.1 on <tasd_if>  ==veth==   <peer_if> 10.77.0.3
    tasd   10.77.0.2 (not configured in the kernel: tasd owns it)

With ``impair=...`` a third namespace sits in the middle and forwards frames
between two veth pairs through the impairment bridge (tools/impair.py), which
applies loss, delay, reordering and the rest.  With ``tap=True`` tasd's side is
a Linux bridge joining the veth and a persistent TAP device that tasd opens.

Every name carries a per-run id, so concurrent runs never collide; everything
made is removed on exit, on an exception, on SIGTERM, and (for runs killed
outright) by the sweep that every new testbed does first, which removes what
runs whose process is gone left behind.  Addresses exist only inside the
namespaces made here.

Command line: ``python -m tools.testbed sweep`` removes leftovers;
``python -m tools.testbed shell`` builds a testbed and opens a shell in the
peer namespace until you exit it.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

STATE_DIR = Path("/run/tasd-testbed")
NS_PREFIX = "tb-"


def sh(*argv: str, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    """Run a command, capturing output; raise with its stderr on failure."""
    p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _netns_list() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _netns_delete(name: str) -> None:
    """Kill what runs in a namespace, then delete it (its interfaces go with it)."""
    pids = sh("ip", "netns", "pids", name, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    for _ in range(50):
        if not sh("ip", "netns", "pids", name, check=False).stdout.split():
            break
        time.sleep(0.02)
    sh("ip", "netns", "delete", name, check=False)


def sweep() -> list[str]:
    """Remove namespaces and files of testbed runs whose owning process is gone.
    A run's state is STATE_DIR/<id>.pid (its owner) plus files named <id>-*."""
    removed = []
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    live_ids = set()
    for f in STATE_DIR.glob("*.pid"):
        try:
            pid = int(f.read_text().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if pid and _pid_alive(pid):
            live_ids.add(f.stem)
    for f in STATE_DIR.iterdir():
        if f.name.split(".")[0].split("-")[0] not in live_ids:
            f.unlink(missing_ok=True)
    for ns in _netns_list():
        if ns.startswith(NS_PREFIX) and ns.split("-")[1] not in live_ids:
            _netns_delete(ns)
            removed.append(ns)
    return removed


class Testbed:
    """Namespaces, veths and addresses for one run.  Use as a context manager."""

    __test__ = False  # not a pytest test class
    PREFIX_LEN = 24

    def __init__(self, *, tap: bool = False, impair=None, subnet: str = "10.77.0", mtu: int = 1500,
                 offloads: bool = False, congestion_control: str = "cubic"):
        self.id = secrets.token_hex(3)
        # the Linux stacks' congestion control, whatever the host chose: its
        # kernel's default, cubic, unless a test asks for another
        self.congestion_control = congestion_control
        self.tap = tap
        self.impair_config = impair
        self.mtu = mtu
        self.offloads = offloads
        self.ns_tasd = f"{NS_PREFIX}{self.id}-tasd"
        self.ns_peer = f"{NS_PREFIX}{self.id}-peer"
        self.ns_mid = f"{NS_PREFIX}{self.id}-mid" if impair is not None else None
        self.kernel_ip = f"{subnet}.1"
        self.tasd_ip = f"{subnet}.2"
        self.peer_ip = f"{subnet}.3"
        # interface names: at most 15 characters
        self.veth_tasd = f"t{self.id}a"
        self.peer_if = f"t{self.id}b"
        self.bridge_if = f"t{self.id}br" if tap else None
        self.tap_if = f"t{self.id}tap" if tap else None
        self.tasd_if = self.tap_if if tap else self.veth_tasd
        self.kernel_if = self.bridge_if if tap else self.veth_tasd
        self.mid_a, self.mid_b = f"t{self.id}ma", f"t{self.id}mb"
        self.peer_mac = self.kernel_mac = None
        self.impair = None          # the running ImpairBridge, if any
        self._procs: list[subprocess.Popen] = []
        self.tasds: list[TasdProcess] = []
        self._made: list[str] = []
        self._old_sigterm = None

    # ---- running things in the namespaces --------------------------------
    @staticmethod
    def netns_argv(ns: str, argv) -> list[str]:
        return ["ip", "netns", "exec", ns, *map(str, argv)]

    def run(self, ns: str, *argv, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        return sh(*self.netns_argv(ns, argv), check=check, timeout=timeout, **kw)

    def popen(self, ns: str, *argv, **kw) -> subprocess.Popen:
        """Start a process in a namespace; it is killed when the testbed goes down."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(self.netns_argv(ns, argv), start_new_session=True, **kw)
        self._procs.append(p)
        return p

    # ---- construction ------------------------------------------------------
    def _netns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self._made.append(name)
        self.run(name, "ip", "link", "set", "lo", "up")
        # no IPv6 chatter (router solicitations, DAD) on the wire
        self.run(name, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
        self.run(name, "sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1")

    def _veth(self, a: str, ns_a: str, b: str, ns_b: str) -> None:
        # One queue each way: a veth delivers a frame on the RX queue that
        # matches the TX queue its peer picked, and tasd listens on queue 0.
        q = ["numtxqueues", "1", "numrxqueues", "1"]
        sh("ip", "link", "add", a, "mtu", str(self.mtu), *q, "netns", ns_a, "type", "veth",
           "peer", "name", b, "mtu", str(self.mtu), *q, "netns", ns_b)
        for ns, dev in ((ns_a, a), (ns_b, b)):
            # The Linux stack fills in TCP/UDP checksums only when TX
            # checksum offload is off (else the frames carry partial ones),
            # and large GSO frames stay whole into XDP unless segmentation
            # offloads are off: tasd sees what a real NIC would deliver.
            feats = ["tx", "off"] if self.offloads else ["tx", "off", "tso", "off", "gso", "off", "gro", "off"]
            self.run(ns, "ethtool", "-K", dev, *feats)
            self.run(ns, "ip", "link", "set", dev, "up")

    def _mac(self, ns: str, dev: str) -> str:
        return Path(f"/sys/class/net/{dev}/address").read_text().strip() if ns is None else \
            self.run(ns, "cat", f"/sys/class/net/{dev}/address").stdout.strip()

    def up(self) -> "Testbed":
        sweep()
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        (STATE_DIR / f"{self.id}.pid").write_text(str(os.getpid()))
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            # turn SIGTERM into SystemExit so that cleanup runs
            self._old_sigterm = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        atexit.register(self.down)  # also when the owner never reaches down()
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _congestion_control(self) -> None:
        """Set the namespaces' default congestion control.  A namespace may
        only pick one the host allows (net.ipv4.tcp_allowed_congestion_control,
        global): add it there if missing, which only lets unprivileged
        programs choose it too."""
        cc = self.congestion_control
        allowed = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control")
        if cc not in allowed.read_text().split():
            available = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
            if cc not in available:
                sh("modprobe", f"tcp_{cc}", check=False)
            allowed.write_text(" ".join([*allowed.read_text().split(), cc]))
        for ns in (self.ns_tasd, self.ns_peer):
            self.run(ns, "sysctl", "-qw", f"net.ipv4.tcp_congestion_control={cc}")

    def _build(self) -> None:
        self._netns(self.ns_tasd)
        self._netns(self.ns_peer)
        self._congestion_control()
        if self.ns_mid:
            self._netns(self.ns_mid)
            self._veth(self.veth_tasd, self.ns_tasd, self.mid_a, self.ns_mid)
            self._veth(self.mid_b, self.ns_mid, self.peer_if, self.ns_peer)
        else:
            self._veth(self.veth_tasd, self.ns_tasd, self.peer_if, self.ns_peer)
        if self.tap:
            t = self.ns_tasd
            self.run(t, "ip", "link", "add", self.bridge_if, "type", "bridge", "stp_state", "0", "forward_delay", "0")
            self.run(t, "ip", "tuntap", "add", "dev", self.tap_if, "mode", "tap", "multi_queue")
            self.run(t, "ip", "link", "set", self.tap_if, "mtu", str(self.mtu))
            self.run(t, "ip", "link", "set", self.veth_tasd, "master", self.bridge_if)
            self.run(t, "ip", "link", "set", self.tap_if, "master", self.bridge_if)
            self.run(t, "ip", "link", "set", self.tap_if, "up")
            self.run(t, "ip", "link", "set", self.bridge_if, "up")
        self.run(self.ns_tasd, "ip", "addr", "add", f"{self.kernel_ip}/{self.PREFIX_LEN}", "dev", self.kernel_if)
        self.run(self.ns_peer, "ip", "addr", "add", f"{self.peer_ip}/{self.PREFIX_LEN}", "dev", self.peer_if)
        self.peer_mac = self._mac(self.ns_peer, self.peer_if)
        self.kernel_mac = self._mac(self.ns_tasd, self.kernel_if)
        if self.ns_mid:
            from tools.impair import ImpairBridge
            self.impair = ImpairBridge(self, self.ns_mid, self.mid_a, self.mid_b, self.impair_config)
            self.impair.start()

    def down(self) -> None:
        for t in self.tasds:
            if t.proc.poll() is None:
                with contextlib.suppress(Exception):
                    t.stop()
        if self.impair is not None:
            with contextlib.suppress(Exception):
                self.impair.stop()
            self.impair = None
        for p in self._procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    p.wait(timeout=5)
        self._procs.clear()
        for ns in reversed(self._made):
            _netns_delete(ns)
        self._made.clear()
        (STATE_DIR / f"{self.id}.pid").unlink(missing_ok=True)
        atexit.unregister(self.down)
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    def __enter__(self) -> "Testbed":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    # ---- tasd on the testbed ----------------------------------------------
    def tasd_config(self, **overrides) -> dict:
        """A tasd configuration (as a dict of TOML keys) for this testbed."""
        cfg = {
            "interface": self.tasd_if,
            "address": f"{self.tasd_ip}/{self.PREFIX_LEN}",
            "backend": "tap" if self.tap else "xdp",
            "control_socket": str(STATE_DIR / f"{self.id}-tasd.sock"),
            "app_socket": str(STATE_DIR / f"{self.id}-app.sock"),
        }
        cfg.update(overrides)
        return cfg

    def start_tasd(self, extra_args=(), env: dict | None = None, **overrides) -> "TasdProcess":
        """Start tasd on this testbed (configuration: tasd_config(**overrides);
        env: variables added to its environment).  It is stopped, if still
        running, when the testbed goes down."""
        t = TasdProcess(self, self.tasd_config(**overrides), extra_args, env=env)
        self.tasds.append(t)
        return t

    PEER_TASD_IP_SUFFIX = 4

    def start_peer_tasd(self, extra_args=(), **overrides) -> "TasdProcess":
        """A second tasd, on the peer's side of the veth (address .4 of the
        subnet, next to the peer's kernel at .3): both ends of a connection
        on tasd (the benchmarks)."""
        ip = self.peer_ip.rsplit(".", 1)[0] + f".{self.PEER_TASD_IP_SUFFIX}"
        cfg = self.tasd_config(interface=self.peer_if, address=f"{ip}/{self.PREFIX_LEN}",
                               control_socket=str(STATE_DIR / f"{self.id}-peer-tasd.sock"),
                               app_socket=str(STATE_DIR / f"{self.id}-peer-app.sock"), **overrides)
        t = TasdProcess(self, cfg, extra_args, ns=self.ns_peer)
        t.ip = ip
        self.tasds.append(t)
        return t


class TasdProcess:
    """tasd running in the testbed's tasd namespace, with its output kept."""

    def __init__(self, tb: Testbed, cfg: dict, extra_args=(), ns: str | None = None, env: dict | None = None):
        self.tb, self.cfg = tb, cfg
        self.ns = ns or tb.ns_tasd
        self.ip = cfg["address"].split("/")[0]
        self.socket = cfg["control_socket"]
        self.app_socket = cfg["app_socket"]
        self.config_path = write_toml(STATE_DIR / f"{tb.id}-{secrets.token_hex(2)}.toml", cfg)
        self.log_path = self.config_path.with_suffix(".log")
        self._log = open(self.log_path, "w+")
        self.proc = tb.popen(self.ns, sys.executable, "-m", "tasd", "-c", self.config_path, *extra_args,
                             stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

    @property
    def output(self) -> str:
        """Everything tasd has written to stdout and stderr so far."""
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 20.0) -> "TasdProcess":
        """Return once tasd answers on its control socket; raise with its output if it exits."""
        from tasd.tasctl import TasctlError, request
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tasd exited with {self.proc.returncode}:\n{self.output}")
            try:
                request(self.socket, "status", timeout=1.0)
                return self
            except TasctlError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"tasd not ready after {timeout} s:\n{self.output}") from None
                time.sleep(0.05)

    def app(self, *argv, **kw) -> subprocess.Popen:
        """Start a program on tasd (in tasd's namespace, pointed at its app socket)."""
        env = dict(os.environ, TASD_APP_SOCKET=self.app_socket, **kw.pop("env", {}))
        return self.tb.popen(self.ns, *argv, env=env, **kw)

    def run_app(self, *argv, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, TASD_APP_SOCKET=self.app_socket)
        return self.tb.run(self.ns, *argv, env=env, timeout=timeout, check=check)

    def ctl(self, cmd: str, **args) -> dict:
        from tasd.tasctl import request
        return request(self.socket, cmd, **args)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal tasd and wait for it; returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()
            self.config_path.unlink(missing_ok=True)  # the log stays until the testbed's sweep

    def __enter__(self) -> "TasdProcess":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.stop()


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_toml(path: Path, cfg: dict) -> Path:
    """Write a flat-or-one-level-nested dict as TOML."""
    top = [f"{k} = {_toml_value(v)}" for k, v in cfg.items() if not isinstance(v, dict)]
    sections = [f"\n[{k}]\n" + "\n".join(f"{kk} = {_toml_value(vv)}" for kk, vv in v.items())
                for k, v in cfg.items() if isinstance(v, dict)]
    path.write_text("\n".join(top) + "\n" + "\n".join(sections) + "\n")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.testbed", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("sweep", help="remove namespaces left by testbed runs that are gone")
    s = sub.add_parser("shell", help="build a testbed and open a shell in the peer namespace")
    s.add_argument("--tap", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "sweep":
        for ns in sweep():
            print(f"removed {ns}")
        return 0
    with Testbed(tap=args.tap) as tb:
        print(f"tasd namespace {tb.ns_tasd} ({tb.tasd_if}, tasd {tb.tasd_ip}, kernel {tb.kernel_ip}); "
              f"peer namespace {tb.ns_peer} ({tb.peer_if}, {tb.peer_ip})")
        return subprocess.call(tb.netns_argv(tb.ns_peer, [os.environ.get("SHELL", "/bin/sh")]))


if __name__ == "__main__":
    sys.exit(main())

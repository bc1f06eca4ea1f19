"""tasd's main job on the testbed, end to end, for a newcomer to watch:

tasd starts in one namespace on a veth (AF_XDP by default); from the other
namespace the real Linux stack arpings and pings it.  tas-echo, a C server
on libtas, then serves TCP on tasd: socat in the other namespace sends it a
line, and 20 Linux connections echo 1 MiB each through it.  tasd's tables
and counters are printed and tasd is stopped.

    python -m tools.demo [--backend xdp|tap] [--cores 0,1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import tasd as tasd_pkg
from tasd import tasctl
from tools.testbed import Testbed

TAS_ECHO = os.path.join(os.path.dirname(tasd_pkg.__file__), "lib", "tas-echo")
ECHO_PORT = 7000
ECHO_CONNS, ECHO_BYTES = 20, 1 << 20


def section(title: str) -> None:
    print(f"\n=== {title}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=["xdp", "tap"], default="xdp")
    ap.add_argument("--cores", default="0", help="comma-separated CPUs for fastpath workers")
    args = ap.parse_args(argv)
    cores = [int(c) for c in args.cores.split(",")]
    with Testbed(tap=args.backend == "tap") as tb:
        section(f"testbed: tasd {tb.tasd_ip} on {tb.tasd_if} in {tb.ns_tasd}; "
                f"Linux peer {tb.peer_ip} on {tb.peer_if} in {tb.ns_peer}")
        tasd = tb.start_tasd(backend=args.backend, cores=cores)
        with tasd:
            tasd.wait_ready()
            tasctl.main(["-s", tasd.socket, "status"])
            section(f"Linux peer: arping {tb.tasd_ip}")
            print(tb.run(tb.ns_peer, "arping", "-c", "3", "-w", "5", "-I", tb.peer_if, tb.tasd_ip,
                         check=False).stdout.strip())
            section(f"Linux peer: ping -c 200 -i 0.005 {tb.tasd_ip}")
            ping = tb.run(tb.ns_peer, "ping", "-c", "200", "-i", "0.005", "-q", tb.tasd_ip, check=False)
            print(ping.stdout.strip())
            section(f"tas-echo (C, on libtas) listening on tasd port {ECHO_PORT}")
            echo = tasd.app(TAS_ECHO, str(ECHO_PORT), stdout=subprocess.PIPE, text=True)
            print(echo.stdout.readline().strip())
            section(f"Linux peer: printf 'hello, tasd\\n' | socat - TCP:{tb.tasd_ip}:{ECHO_PORT}")
            line = tb.run(tb.ns_peer, "sh", "-c", f"printf 'hello, tasd\\n' | socat -t 2 - TCP:{tb.tasd_ip}:{ECHO_PORT}",
                          check=False)
            print(line.stdout.strip() or line.stderr.strip())
            section(f"Linux peer: {ECHO_CONNS} connections at once, each echoing {ECHO_BYTES >> 20} MiB")
            clients = tb.run(tb.ns_peer, sys.executable, "-m", "tools.linux_peer", "echo-clients", tb.tasd_ip,
                             str(ECHO_PORT), "--conns", str(ECHO_CONNS), "--bytes", str(ECHO_BYTES),
                             check=False, timeout=300)
            result = json.loads(clients.stdout.strip().splitlines()[-1]) if clients.stdout.strip() else {}
            print(result or clients.stderr.strip())
            section("tasd's apps (tasctl apps)")
            tasctl.main(["-s", tasd.socket, "apps"])
            echo.terminate()
            echo.wait(timeout=10)
            section("Linux peer's neighbour table")
            print(tb.run(tb.ns_peer, "ip", "neigh", "show", "dev", tb.peer_if).stdout.strip())
            section("tasd's neighbour table (tasctl arp)")
            tasctl.main(["-s", tasd.socket, "arp"])
            section("tasd's counters (tasctl stats)")
            tasctl.main(["-s", tasd.socket, "stats"])
            rc = tasd.stop()
        section(f"tasd stopped (exit status {rc}); its log:")
        print(tasd.output.strip())
        ok = (rc == 0 and ping.returncode == 0 and " 0% packet loss" in ping.stdout and
              line.stdout.strip() == "hello, tasd" and result.get("ok") == ECHO_CONNS)
        print(f"\ndemo {'OK' if ok else 'FAILED'}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

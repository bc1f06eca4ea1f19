"""tasd's main job on the testbed, end to end, for a newcomer to watch:

tasd starts in one namespace on a veth (AF_XDP by default); from the other
namespace the real Linux stack arpings and pings it; then tasd's neighbour
table and counters are printed and tasd is stopped.

    python -m tools.demo [--backend xdp|tap] [--cores 0,1]
"""
from __future__ import annotations

import argparse
import sys

from tasd import tasctl
from tools.testbed import Testbed


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
            section("Linux peer's neighbour table")
            print(tb.run(tb.ns_peer, "ip", "neigh", "show", "dev", tb.peer_if).stdout.strip())
            section("tasd's neighbour table (tasctl arp)")
            tasctl.main(["-s", tasd.socket, "arp"])
            section("tasd's counters (tasctl stats)")
            tasctl.main(["-s", tasd.socket, "stats"])
            rc = tasd.stop()
        section(f"tasd stopped (exit status {rc}); its log:")
        print(tasd.output.strip())
        ok = rc == 0 and ping.returncode == 0 and " 0% packet loss" in ping.stdout
        print(f"\ndemo {'OK' if ok else 'FAILED'}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""tasctl: look into a running tasd over its control socket.

    tasctl status            version, backend, interface, workers
    tasctl stats             fastpath and slowpath counters (nonzero ones; -a for all)
    tasctl arp               the neighbour table
    tasctl arp-resolve IP    resolve a neighbour now
    tasctl apps              registered applications
    tasctl flows             connections, with their fastpath counters

Every command takes --json for scripts.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys

DEFAULT_SOCKET = os.environ.get("TASD_CONTROL_SOCKET", "/run/tasd/tasd.sock")


class TasctlError(Exception):
    pass


def request(path: str, cmd: str, timeout: float = 30.0, **args) -> dict:
    """One request to tasd; raises TasctlError with tasd's or the OS's reason."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall((json.dumps({"cmd": cmd, **args}) + "\n").encode())
            line = s.makefile("rb").readline()
    except FileNotFoundError:
        raise TasctlError(f"{path}: no such socket (is tasd running?)") from None
    except ConnectionRefusedError:
        raise TasctlError(f"{path}: connection refused (is tasd running?)") from None
    except PermissionError:
        raise TasctlError(f"{path}: permission denied (run as root)") from None
    except (OSError, socket.timeout) as e:
        raise TasctlError(f"{path}: {e}") from None
    if not line:
        raise TasctlError("tasd closed the connection")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise TasctlError(reply.get("error", "unknown error"))
    reply.pop("ok")
    return reply


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def show_status(r: dict) -> None:
    print(f"tasd {r['version']} pid {r['pid']}, up {r['uptime_s']:.0f} s")
    extra = ", ".join(f"{k} {v}" for k, v in r.items() if k in ("xdp_mode", "zerocopy", "dispatcher", "queues"))
    print(f"  {r['address']} on {r['interface']} (backend {r['backend']}{', ' + extra if extra else ''}), "
          f"MAC {r['mac']}, MTU {r['mtu']}" + (f", gateway {r['gateway']}" if r.get("gateway") else ""))
    for w in r["workers"]:
        print(f"  worker {w['worker']}: CPU {w['core']}, pid {w['pid']}, {w['state']}")


def show_stats(r: dict, all_counters: bool) -> None:
    rows = _flatten({"fastpath": r["fastpath"], "slowpath": r["slowpath"]})
    if len(r["workers"]) > 1:
        for i, w in enumerate(r["workers"]):
            rows += _flatten(w, f"worker{i}.")
    width = max((len(k) for k, _ in rows), default=0)
    for k, v in rows:
        if all_counters or v:
            print(f"{k:<{width}}  {v}")


def show_arp(r: dict) -> None:
    print(f"{'address':<16} {'MAC':<18} {'state':<11} age")
    for e in r["entries"]:
        age = f"{e['age']:.1f}s" if e["age"] is not None else "-"
        print(f"{e['ip']:<16} {e['mac'] or '-':<18} {e['state']:<11} {age}")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def show_apps(r: dict) -> None:
    print(f"{'app':>4} {'pid':>8} {'uid':>6} {'name':<16} {'conns':>6} {'listen':>6} {'memory':>10}  up")
    for a in r["apps"]:
        print(f"{a['app']:>4} {a['pid']:>8} {a['uid']:>6} {a['name'][:16]:<16} {a['connections']:>6} "
              f"{a['listeners']:>6} {_size(a['memory_bytes']):>10}  {a['uptime_s']:.0f}s")


def show_flows(r: dict) -> None:
    print(f"{'conn':>6} {'state':<12} {'local':<22} {'remote':<22} {'app':>4} {'wkr':>3} "
          f"{'rx':>10} {'tx':>10} {'srtt':>8} {'cwnd':>8} {'retx':>6} {'rtos':>5}")
    for f in r["flows"]:
        srtt = f"{f['srtt_us']}us" if f.get("srtt_us") else "-"
        print(f"{f['conn']:>6} {f['state']:<12} {f['local']:<22} {f['remote']:<22} "
              f"{f['app'] if f['app'] is not None else '-':>4} {f['worker']:>3} "
              f"{_size(f.get('rx_bytes', 0)):>10} {_size(f.get('tx_bytes', 0)):>10} {srtt:>8} "
              f"{_size(f['cwnd']) if 'cwnd' in f else '-':>8} {f.get('retx_segs', '-'):>6} {f.get('rtos', '-'):>5}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tasctl", description=__doc__.split("\n\n")[0])
    ap.add_argument("-s", "--socket", default=DEFAULT_SOCKET, help=f"tasd's control socket [{DEFAULT_SOCKET}]")
    ap.add_argument("--json", action="store_true", help="print the raw JSON reply")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("status", help="version, backend, interface and workers")
    st = sub.add_parser("stats", help="counters")
    st.add_argument("-a", "--all", action="store_true", help="include counters that are zero")
    sub.add_parser("arp", help="the neighbour table")
    res = sub.add_parser("arp-resolve", help="resolve a neighbour's MAC now")
    res.add_argument("ip")
    sub.add_parser("apps", help="registered applications")
    sub.add_parser("flows", help="connections, with their fastpath counters")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "arp-resolve":
            r = request(args.socket, "arp_resolve", ip=args.ip)
        else:
            r = request(args.socket, args.cmd)
    except TasctlError as e:
        print(f"tasctl: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(r, indent=2))
    elif args.cmd == "status":
        show_status(r)
    elif args.cmd == "stats":
        show_stats(r, args.all)
    elif args.cmd == "arp":
        show_arp(r)
    elif args.cmd == "apps":
        show_apps(r)
    elif args.cmd == "flows":
        show_flows(r)
    else:
        print(f"{r['ip']} is at {r['mac']}" if r["mac"] else f"{r['ip']}: unreachable")
        return 0 if r["mac"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

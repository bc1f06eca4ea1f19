"""tasctl: look into a running tasd over its control socket.

    tasctl status            version, uptime, backend, interface, address,
                             workers and their CPUs, apps, connections, totals
    tasctl stats             counters (nonzero ones; -a for all), per worker too
    tasctl flows             connections (like ss -tni): state, addresses,
                             queues, rtt, rto, cwnd, retransmits, bytes, worker;
                             --state, --port, --address, --app filter
    tasctl apps              registered applications
    tasctl top               live per-worker load and the busiest flows
    tasctl arp               the neighbour table
    tasctl arp-resolve IP    resolve a neighbour now
    tasctl reload            re-read tasd's configuration (as SIGHUP does)
    tasctl capture -w FILE [-c COUNT] [-G SECONDS] [-s SNAPLEN] [FILTER...]
                             frames the fastpath sees, both ways, into a pcap
                             file (tshark, Wireshark), FILTER in tcpdump syntax;
                             until Ctrl-C, COUNT frames or SECONDS; traffic
                             flows on meanwhile, and the capture ends with
                             tasctl however it ends (kill -9 included)

Every command takes --json for scripts; status, stats, flows and apps take
-w/--watch [SECONDS] to refresh (with --json: one object per line).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
import tomllib

DEFAULT_SOCKET = os.environ.get("TASD_CONTROL_SOCKET", "/run/tasd/tasd.sock")


class TasctlError(Exception):
    pass


def request(path: str, cmd: str, timeout: float = 30.0, **args) -> dict:
    """One request to tasd on a connection of its own; raises TasctlError
    with tasd's or the OS's reason."""
    conn = Connection(path, timeout)
    try:
        return conn.call(cmd, **args)
    finally:
        conn.close()


def socket_from_config(path: str) -> str:
    """The control socket a configuration file names (or the default)."""
    try:
        with open(path, "rb") as f:
            value = tomllib.load(f).get("control_socket", DEFAULT_SOCKET)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise TasctlError(f"{path}: {e}") from None
    if not isinstance(value, str):
        raise TasctlError(f"{path}: control_socket: expected a string, got {value!r}")
    return value


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _us(v) -> str:
    if not v:
        return "-"
    return f"{v / 1000:.1f}ms" if v >= 10_000 else f"{v}us"


# ---- one screen per command: each takes the reply and the previous one (or None)

def show_status(r: dict, prev=None) -> None:
    print(f"tasd {r['version']} pid {r['pid']}, up {r['uptime_s']:.0f} s, config {r.get('config', '-')}, "
          f"log level {r.get('log_level', '-')}")
    extra = ", ".join(f"{k} {v}" for k, v in r.items() if k in ("xdp_mode", "zerocopy", "dispatcher", "queues"))
    print(f"  {r['address']} on {r['interface']} (backend {r['backend']}{', ' + extra if extra else ''}), "
          f"MAC {r['mac']}, MTU {r['mtu']}" + (f", gateway {r['gateway']}" if r.get("gateway") else ""))
    for w in r["workers"]:
        cpu = f", {w['cpu_s']} CPU s" if w.get("cpu_s") is not None else ""
        print(f"  worker {w['worker']}: CPU {w['core']}, pid {w['pid']}, {w['state']}{cpu}")
    if "apps" in r:
        t = r["totals"]
        print(f"  {r['apps']} app(s), {r['connections']} connection(s), {r['listeners']} listener(s)")
        print(f"  frames in {t['rx_frames']} ({_size(t['rx_bytes'])}), out {t['tx_frames']} "
              f"({_size(t['tx_bytes'])}); to the slowpath {t['rx_exceptions']}; dropped {t['drops']}; "
              f"retransmitted segments {t['tcp_retx_segs']}")


def _stat_rows(r: dict) -> list[tuple[str, object]]:
    rows = _flatten({"fastpath": r["fastpath"], "slowpath": r["slowpath"]})
    if len(r["workers"]) > 1:
        for i, w in enumerate(r["workers"]):
            rows += _flatten(w, f"worker{i}.")
    return rows


def show_stats(r: dict, prev=None, all_counters: bool = False, interval: float = 0) -> None:
    rows = _stat_rows(r)
    before = dict(_stat_rows(prev)) if prev else {}
    width = max((len(k) for k, _ in rows), default=0)
    for k, v in rows:
        if all_counters or v:
            rate = ""
            if k in before and isinstance(v, (int, float)) and interval > 0 and not k.endswith("_now"):
                rate = f"  {(v - before[k]) / interval:>12.1f}/s"
            print(f"{k:<{width}}  {v:>14}{rate}")


def show_arp(r: dict, prev=None) -> None:
    print(f"{'address':<16} {'MAC':<18} {'state':<11} age")
    for e in r["entries"]:
        age = f"{e['age']:.1f}s" if e["age"] is not None else "-"
        print(f"{e['ip']:<16} {e['mac'] or '-':<18} {e['state']:<11} {age}")


def show_apps(r: dict, prev=None) -> None:
    print(f"{'app':>4} {'pid':>8} {'uid':>6} {'ctx':>4} {'conns':>6} {'listen':>6} {'memory':>10} {'up':>7}  command")
    for a in r["apps"]:
        print(f"{a['app']:>4} {a['pid']:>8} {a['uid']:>6} {a['contexts']:>4} {a['connections']:>6} "
              f"{a['listeners']:>6} {_size(a['memory_bytes']):>10} {a['uptime_s']:>6.0f}s  "
              f"{a.get('command') or a['name']}")


def show_flows(r: dict, prev=None) -> None:
    print(f"{'conn':>6} {'state':<12} {'local':<21} {'remote':<21} {'app':>4} {'wkr':>3} {'send-q':>7} "
          f"{'recv-q':>7} {'rtt/var':>15} {'rto':>8} {'cwnd':>9} {'retx':>5} {'acked':>10} {'received':>10}")
    for f in r["flows"]:
        rtt = f"{_us(f.get('srtt_us'))}/{_us(f.get('rttvar_us'))}" if f.get("srtt_us") else "-"
        print(f"{f['conn']:>6} {f['state']:<12} {f['local']:<21} {f['remote']:<21} "
              f"{f['app'] if f['app'] is not None else '-':>4} {f['worker']:>3} {f.get('send_q', '-'):>7} "
              f"{f.get('recv_q', '-'):>7} {rtt:>15} {_us(f.get('rto_us')):>8} "
              f"{_size(f['cwnd']) if 'cwnd' in f else '-':>9} {f.get('retx_segs', '-'):>5} "
              f"{_size(f.get('bytes_acked', 0)):>10} {_size(f.get('bytes_received', 0)):>10}")


def top_view(cur: dict, prev: dict | None, interval: float, n: int = 10) -> dict:
    """Per-worker load and the busiest flows over the last interval, from two
    snapshots of status, stats and flows (the first screen, with none before
    it, has totals only)."""
    def by_worker(snap):
        return {w["worker"]: (w, st) for w, st in zip(snap["status"]["workers"], snap["stats"]["workers"])}

    def moved(f):
        return f.get("bytes_acked", 0) + f.get("bytes_received", 0)

    before = by_worker(prev) if prev else {}
    workers = []
    for i, (w, st) in by_worker(cur).items():
        pw, pst = before.get(i, (None, None))

        def rate(key, st=st, pst=pst):
            return (st[key] - pst[key]) / interval if pst else None
        cpu = ((w["cpu_s"] - pw["cpu_s"]) / interval * 100
               if pw and w.get("cpu_s") is not None and pw.get("cpu_s") is not None else None)
        workers.append({"worker": i, "core": w["core"], "cpu_pct": cpu, "rx_fps": rate("rx_frames"),
                        "tx_fps": rate("tx_frames"), "exc_ps": rate("rx_exceptions"), "sleeps_ps": rate("sleeps"),
                        "flows": sum(1 for f in cur["flows"]["flows"] if f["worker"] == i)})
    was = {(f["conn"], f["local"], f["remote"]): moved(f) for f in prev["flows"]["flows"]} if prev else {}
    busy = []
    for f in cur["flows"]["flows"]:
        key = (f["conn"], f["local"], f["remote"])
        busy.append({k: f[k] for k in ("conn", "state", "local", "remote", "app", "worker")} |
                    {"bytes_ps": (moved(f) - was[key]) / interval if key in was else None, "bytes": moved(f)})
    busy.sort(key=lambda x: (x["bytes_ps"] or 0, x["bytes"]), reverse=True)
    st = cur["status"]
    return {"version": st["version"], "uptime_s": st["uptime_s"], "apps": st["apps"], "workers": workers,
            "flows": busy[:n], "connections": len(cur["flows"]["flows"])}


def show_top(view: dict) -> None:
    def num(v, fmt="{:.0f}"):
        return "-" if v is None else fmt.format(v)
    print(f"tasd {view['version']} up {view['uptime_s']:.0f} s, {view['apps']} app(s)")
    print(f"{'worker':>6} {'cpu':>4} {'cpu%':>6} {'rx/s':>10} {'tx/s':>10} {'exc/s':>8} {'sleeps/s':>9} {'flows':>7}")
    for w in view["workers"]:
        print(f"{w['worker']:>6} {w['core']:>4} {num(w['cpu_pct'], '{:.1f}'):>6} {num(w['rx_fps']):>10} "
              f"{num(w['tx_fps']):>10} {num(w['exc_ps']):>8} {num(w['sleeps_ps']):>9} {w['flows']:>7}")
    print(f"\n{view['connections']} connection(s); busiest:")
    print(f"{'conn':>6} {'state':<12} {'local':<21} {'remote':<21} {'app':>4} {'wkr':>3} {'bytes/s':>12} {'bytes':>10}")
    for f in view["flows"]:
        rate = "-" if f["bytes_ps"] is None else _size(f["bytes_ps"]) + "/s"
        print(f"{f['conn']:>6} {f['state']:<12} {f['local']:<21} {f['remote']:<21} "
              f"{f['app'] if f['app'] is not None else '-':>4} {f['worker']:>3} {rate:>12} {_size(f['bytes']):>10}")


def _watch(fetch, show, args, as_json=lambda r, prev: r) -> int:
    """Fetch and show every args.watch seconds until interrupted (or
    args.count times); with --json, one object per line (as_json's)."""
    prev = None
    shown = 0
    tty = sys.stdout.isatty()
    try:
        while True:
            t0 = time.monotonic()
            r = fetch()
            if args.json:
                print(json.dumps(as_json(r, prev)), flush=True)
            else:
                if tty:
                    print("\033[H\033[2J", end="")
                print(time.strftime("%H:%M:%S"), f"every {args.watch:g} s (Ctrl-C to stop)")
                show(r, prev)
                sys.stdout.flush()
            prev = r
            shown += 1
            if args.count and shown >= args.count:
                return 0
            time.sleep(max(0.0, args.watch - (time.monotonic() - t0)))
    except KeyboardInterrupt:
        return 0


def _flow_filters(args) -> dict:
    f = {}
    if args.state:
        f["state"] = [s for x in args.state for s in x.split(",") if s]
    for k in ("port", "address", "app"):
        if getattr(args, k) is not None:
            f[k] = getattr(args, k)
    return f


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tasctl", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("-s", "--socket", default=None, help=f"tasd's control socket [{DEFAULT_SOCKET}]")
    ap.add_argument("-c", "--config", help="take the control socket from this tasd configuration file")
    ap.add_argument("--json", action="store_true", help="print JSON (raw replies) for scripts")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def watchable(p):
        p.add_argument("-w", "--watch", type=float, nargs="?", const=1.0, default=None, metavar="SECONDS",
                       help="refresh every SECONDS (1 if not given) until Ctrl-C")
        p.add_argument("-n", "--count", type=int, default=0, help="with --watch: stop after this many")
        return p
    watchable(sub.add_parser("status", help="version, uptime, interface, workers, apps, connections, totals"))
    st = watchable(sub.add_parser("stats", help="counters (with --watch: and their rates)"))
    st.add_argument("-a", "--all", action="store_true", help="include counters that are zero")
    sub.add_parser("arp", help="the neighbour table")
    res = sub.add_parser("arp-resolve", help="resolve a neighbour's MAC now")
    res.add_argument("ip")
    watchable(sub.add_parser("apps", help="registered applications"))
    fl = watchable(sub.add_parser("flows", help="connections, like ss -tni"))
    fl.add_argument("--state", action="append", help="only in this state (ESTABLISHED, FIN_WAIT_1, ...; "
                    "repeat or comma-separate for several)")
    fl.add_argument("--port", type=int, help="only with this local or remote port")
    fl.add_argument("--address", help="only with this remote (or local) IPv4 address")
    fl.add_argument("--app", type=int, help="only of this app (its id, see tasctl apps)")
    top = sub.add_parser("top", help="live per-worker load and the busiest flows")
    top.add_argument("-d", "--delay", dest="watch", type=float, default=1.0, help="seconds between refreshes [1]")
    top.add_argument("-n", "--count", type=int, default=0, help="stop after this many refreshes")
    top.add_argument("--flows", type=int, default=10, help="busiest flows shown [10]")
    sub.add_parser("reload", help="re-read tasd's configuration and apply what can change live")
    cap = sub.add_parser("capture", help="frames the fastpath sees, into a pcap file (tcpdump-like)")
    cap.add_argument("-w", "--write", required=True, metavar="FILE", help="the pcap file (created or truncated)")
    cap.add_argument("-c", "--count", type=int, default=0, help="stop after COUNT frames (with several "
                     "workers, each stops at COUNT and the total may pass it slightly)")
    cap.add_argument("-G", "--seconds", type=float, default=0, help="stop after SECONDS")
    cap.add_argument("-s", "--snaplen", type=int, default=262144, help="bytes kept of each frame [262144]")
    cap.add_argument("filter", nargs="*", help="tcpdump filter expression (pcap-filter(7)), e.g. tcp port 80")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        path = args.socket or (socket_from_config(args.config) if args.config else DEFAULT_SOCKET)
        if args.cmd == "top":
            return _top(path, args)
        if args.cmd == "capture":
            return run_capture(path, args)
        if args.cmd == "arp-resolve":
            r = request(path, "arp_resolve", ip=args.ip)
        elif getattr(args, "watch", None):
            if args.watch <= 0:
                raise TasctlError("--watch needs a positive number of seconds")
            req = _flow_filters(args) if args.cmd == "flows" else {}
            show = {"status": show_status, "apps": show_apps, "flows": show_flows,
                    "stats": lambda r, prev: show_stats(r, prev, args.all, args.watch)}[args.cmd]
            return _watch(lambda: request(path, args.cmd, **req), show, args)
        else:
            r = request(path, args.cmd, **(_flow_filters(args) if args.cmd == "flows" else {}))
    except TasctlError as e:
        print(f"tasctl: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(r, indent=2))
    elif args.cmd == "status":
        show_status(r)
    elif args.cmd == "stats":
        show_stats(r, None, args.all)
    elif args.cmd == "arp":
        show_arp(r)
    elif args.cmd == "apps":
        show_apps(r)
    elif args.cmd == "flows":
        show_flows(r)
    elif args.cmd == "reload":
        if r.get("error"):
            print(f"tasctl: reload failed, tasd keeps its configuration: {r['error']}", file=sys.stderr)
            return 1
        print("applied: " + (", ".join(r["applied"]) or "nothing changed"))
        if r["restart_needed"]:
            print("needs a restart (running value kept): " + ", ".join(r["restart_needed"]))
    else:
        print(f"{r['ip']} is at {r['mac']}" if r["mac"] else f"{r['ip']}: unreachable")
        return 0 if r["mac"] else 1
    return 0


def _top(path: str, args) -> int:
    conn = Connection(path)
    try:
        return _watch(lambda: {cmd: conn.call(cmd) for cmd in ("status", "stats", "flows")},
                      lambda r, prev: show_top(top_view(r, prev, args.watch, args.flows)), args,
                      lambda r, prev: top_view(r, prev, args.watch, args.flows))
    finally:
        conn.close()


class Connection:
    """A control connection kept open across requests: what tasd ties to it
    (a capture) lasts as long as it does."""

    def __init__(self, path: str, timeout: float = 30.0):
        self.path = path
        self._s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._s.settimeout(timeout)
        try:
            self._s.connect(path)
        except OSError as e:
            self._s.close()
            why = {FileNotFoundError: "no such socket (is tasd running?)",
                   ConnectionRefusedError: "connection refused (is tasd running?)",
                   PermissionError: "permission denied (run as root)"}.get(type(e), str(e))
            raise TasctlError(f"{path}: {why}") from None
        self._f = self._s.makefile("rb")

    def call(self, cmd: str, **args) -> dict:
        try:
            self._s.sendall((json.dumps({"cmd": cmd, **args}) + "\n").encode())
            line = self._f.readline()
        except (BrokenPipeError, ConnectionResetError):
            line = b""
        except OSError as e:  # a timeout too
            raise TasctlError(f"{self.path}: {e}") from None
        if not line:
            raise TasctlError("tasd closed the connection")
        reply = json.loads(line)
        if not reply.pop("ok", False):
            raise TasctlError(reply.get("error", "unknown error"))
        return reply

    def close(self) -> None:
        self._f.close()
        self._s.close()


def run_capture(path: str, args) -> int:
    """tasctl capture: create FILE (as the user who runs tasctl: tasd writes
    only to files of the user who asks), start the capture, wait for Ctrl-C,
    SIGTERM, COUNT frames or SECONDS, stop it and say what was written.  The
    capture lives on this connection: tasd stops it when it closes."""
    file = os.path.abspath(args.write)
    expr = " ".join(args.filter)
    existed = os.path.lexists(file)
    try:
        os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600))
    except OSError as e:
        raise TasctlError(f"{file}: {e.strerror}") from None
    stop: list[int] = []
    old = {sig: signal.signal(sig, lambda sig, _frame: stop.append(sig)) for sig in (signal.SIGINT, signal.SIGTERM)}
    conn = None
    try:
        conn = Connection(path)
        try:
            conn.call("capture_start", file=file, filter=expr, snaplen=args.snaplen, count=args.count)
        except TasctlError:
            if not existed:
                os.unlink(file)
            raise
        print(f"tasctl: capturing to {file} ({'filter ' + expr if expr else 'every frame'})", file=sys.stderr,
              flush=True)
        deadline = time.monotonic() + args.seconds if args.seconds > 0 else None
        try:
            while not stop:
                left = deadline - time.monotonic() if deadline else 0.1
                if left <= 0:
                    break
                time.sleep(min(0.1, left))
                st = conn.call("capture_status")
                if not st["running"] or (args.count and st["frames"] >= args.count):
                    break
            r = conn.call("capture_stop")
        except TasctlError as e:
            raise TasctlError(f"{e}: the capture ended with it ({file} holds what was written)") from None
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if conn is not None:
            conn.close()
    if args.json:
        print(json.dumps(r, indent=2))
    lost = f", {r['lost']} lost to failed writes" if r["lost"] else ""
    print(f"tasctl: {r['frames']} frames written to {file} ({_size(r['bytes'])}), "
          f"{r['filtered']} left out by the filter{lost}", file=sys.stderr)
    if r["unanswered"]:
        print(f"tasctl: worker(s) {', '.join(map(str, r['unanswered']))} did not confirm the stop", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

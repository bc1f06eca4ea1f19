"""Benchmarks: each workload on the testbed twice in the same run, over tasd
and over the Linux kernel's TCP on the same veth pair and the same cores;
results as a table (Markdown and JSON) and plots (PNG) with tasd/Linux ratios.

    python -m tools.bench [--quick] [--out DIR] [--only rpc,bulk,...]

Workloads (the load is tools/rpcbench.c, and Debian's programs):
  rpc       closed-loop echo RPCs: sizes x connections x requests in flight;
            RPC/s and round-trip latency percentiles (1 us histogram); with the
            client on Linux and the server on tasd, and with both on tasd
  bulk      iperf3 goodput, 1 and 4 flows
  connrate  connect, 64 B request and reply, close: connections per second
  scale     1K/16K/64K open connections, 256 of them busy: RPC/s, and tasd's
            memory per connection
  cpu       CPU seconds per million RPCs at a fixed offered load
  apps      redis-benchmark against redis-server, memcslap against memcached

Cores (2 here): the server side (tasd's worker and slowpath and the server
program; or the server program and the kernel's work it causes) on core 0,
the client on core 1.  With both ends on tasd, the client's tasd runs on
core 1 too.  Segmentation offloads are off on the veth (as tasd needs for
AF_XDP), so the kernel runs with 1500-byte frames too.  tasd runs with 512 KiB
buffers per connection (TASD_BUFFERS; its default is 128 KiB), the kernel
with its autotuning.

Default run: under 10 minutes; --quick: about a minute (CI's smoke test
checks that every workload produced sane numbers, not that tasd is fast).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tools.testbed import Testbed

ROOT = Path(__file__).resolve().parent.parent
RPCBENCH = ROOT / "tasd" / "lib" / "rpcbench"
RUN = Path(sys.executable).parent / "tasd-run"
SERVER_CORE, CLIENT_CORE = "0", "1"
TASD_BUFFERS = {"app.rx_buffer": 1 << 19, "app.tx_buffer": 1 << 19}
WORKLOADS = ("rpc", "bulk", "connrate", "scale", "cpu", "apps")


class Bench:
    def __init__(self, quick: bool, log=print, tasd_options: dict | None = None):
        self.quick = quick
        self.tasd_options = tasd_options or {}
        self.log = log
        self.t = 1.0 if quick else 3.0        # seconds measured per run
        self.warmup = 0.3 if quick else 1.0
        self.results: list[dict] = []
        self.tb: Testbed | None = None
        self.tasd = self.peer_tasd = None
        self.port = 8000

    # ---- setup ------------------------------------------------------------------------
    def __enter__(self) -> "Bench":
        tb = self.tb = Testbed().up()
        for ns in (tb.ns_tasd, tb.ns_peer):  # many short connections, many open ones
            tb.run(ns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535",
                   "net.ipv4.tcp_tw_reuse=1", "net.core.somaxconn=65535", "net.ipv4.tcp_max_syn_backlog=65535")
        # room for the scale workload, and 512 KiB buffers a connection (the
        # kernel autotunes its own up to 6 MiB; pages a connection does not
        # touch cost nothing)
        big = {"max_flows": 1 << 17, "app.max_connections": 70_000, **TASD_BUFFERS, **self.tasd_options}
        self.tasd = tb.start_tasd(cores=[int(SERVER_CORE)], **big).wait_ready()
        self.peer_tasd = tb.start_peer_tasd(cores=[int(CLIENT_CORE)], **big).wait_ready()
        return self

    def __exit__(self, *exc) -> None:
        self.tb.down()

    def next_port(self) -> int:
        self.port += 1
        return self.port

    # ---- running the two sides ----------------------------------------------------------
    def server(self, stack: str, *argv, ready: str | None = None) -> subprocess.Popen:
        """A server program in tasd's namespace on the server core, on tasd
        (tasd-run) or on the kernel."""
        cmd = ["taskset", "-c", SERVER_CORE, *map(str, argv)]
        if stack == "tasd":
            cmd = [str(RUN), "--socket", self.tasd.app_socket, *cmd]
        p = self.tb.popen(self.tb.ns_tasd, *cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if ready is not None:
            line = p.stdout.readline()
            if ready not in line:
                raise RuntimeError(f"{argv[0]} did not start: {line!r}")
        return p

    def target(self, stack: str) -> str:
        return self.tb.tasd_ip if stack == "tasd" else self.tb.kernel_ip

    def client(self, argv, on_tasd: bool = False, timeout: float = 120) -> str:
        cmd = ["taskset", "-c", CLIENT_CORE, *map(str, argv)]
        if on_tasd:
            cmd = [str(RUN), "--socket", self.peer_tasd.app_socket, *cmd]
        r = self.tb.run(self.tb.ns_peer, *cmd, timeout=timeout, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()[-500:]}")
        return r.stdout

    def wait_port(self, stack: str, port: int) -> None:
        ip = self.target(stack)
        self.tb.run(self.tb.ns_peer, "sh", "-c", f"until nc -z {ip} {port}; do sleep 0.1; done", timeout=20)

    def record(self, workload: str, config: dict, stack: str, numbers: dict) -> None:
        row = {"workload": workload, "config": config, "stack": stack, **numbers}
        self.results.append(row)
        self.log(json.dumps(row))

    # ---- workloads ----------------------------------------------------------------------
    def rpc(self) -> None:
        sizes, conns, inflight = ([64], [1, 16], [1]) if self.quick else ([64, 1024], [1, 16, 256], [1, 16])
        for stack in ("linux", "tasd"):
            port = self.next_port()
            srv = self.server(stack, RPCBENCH, "server", port, ready="listening")
            try:
                for size in sizes:
                    for c in conns:
                        for k in inflight:
                            cfg = {"size": size, "conns": c, "inflight": k}
                            out = self.client([RPCBENCH, "client", self.target(stack), port, "--conns", c,
                                               "--inflight", k, "--size", size, "--time", self.t,
                                               "--warmup", self.warmup])
                            self.record("rpc", cfg, stack, json.loads(out))
                            if stack == "tasd":  # both ends on tasd
                                out = self.client([RPCBENCH, "client", self.tb.tasd_ip, port, "--conns", c,
                                                   "--inflight", k, "--size", size, "--time", self.t,
                                                   "--warmup", self.warmup], on_tasd=True)
                                self.record("rpc", cfg, "tasd-both", json.loads(out))
            finally:
                stop(srv)

    def bulk(self) -> None:
        for stack in ("linux", "tasd"):
            port = self.next_port()
            srv = self.server(stack, "iperf3", "-s", "-p", port)
            try:
                self.wait_port(stack, port)
                for flows in (1, 4):
                    out = self.client(["iperf3", "-c", self.target(stack), "-p", port, "-P", flows, "-t",
                                       max(2, int(self.t)), "-J"], timeout=60)
                    end = json.loads(out)["end"]
                    gbps = end["sum_received"]["bits_per_second"] / 1e9
                    self.record("bulk", {"flows": flows}, stack, {"gbit_s": round(gbps, 3)})
            finally:
                stop(srv)

    def connrate(self) -> None:
        for stack in ("linux", "tasd"):
            port = self.next_port()
            srv = self.server(stack, RPCBENCH, "server", port, ready="listening")
            try:
                for par in (1, 16):
                    out = self.client([RPCBENCH, "connrate", self.target(stack), port, "--parallel", par,
                                       "--time", self.t, "--warmup", self.warmup])
                    self.record("connrate", {"parallel": par}, stack, json.loads(out))
            finally:
                stop(srv)

    def scale(self) -> None:
        for n in [1000] if self.quick else [1000, 16000, 64000]:
            for stack in ("linux", "tasd"):
                port = self.next_port()
                procs = -(-n // 15000)  # processes on each side: fds are limited (20000 here, without CAP_SYS_RESOURCE)
                srv = self.server(stack, RPCBENCH, "server", port, "--procs", procs, ready="listening")
                try:
                    before = self.tasd_memory() if stack == "tasd" else 0
                    client = self.tb.popen(self.tb.ns_peer, "taskset", "-c", CLIENT_CORE, RPCBENCH, "client",
                                           self.target(stack), port, "--conns", n, "--active", min(n, 256),
                                           "--procs", procs, "--ports-from", 1024,
                                           "--time", self.t + 1, "--warmup", self.warmup,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    numbers = {}  # memory while all are open (the client opens them all before it starts)
                    if stack == "tasd":
                        deadline = time.monotonic() + 90
                        while self.tasd.ctl("stats")["slowpath"]["tcp"].get("flows_installed", 0) < n:
                            if time.monotonic() > deadline or client.poll() is not None:
                                client.kill()
                                st = self.tasd.ctl("stats")
                                tcp, fp = st["slowpath"]["tcp"], st["fastpath"]
                                raise RuntimeError(
                                    f"{n} connections did not open in 90 s: {tcp.get('flows_installed')} installed; "
                                    f"exception ring full {fp['drops'].get('exc_ring_full')}, RX ring full "
                                    f"{fp.get('dev_rx_ring_full')}, tcp {json.dumps({k: v for k, v in tcp.items() if 'drop' in k or 'overflow' in k})}")
                            time.sleep(0.2)
                        numbers["tasd_bytes_per_conn"] = round((self.tasd_memory() - before) / n)
                    out, err = client.communicate(timeout=200)
                    if client.returncode != 0:
                        raise RuntimeError(f"rpcbench client: {err.strip()[-300:]}")
                    numbers.update(json.loads(out))
                    self.record("scale", {"conns": n, "active": min(n, 256)}, stack, numbers)
                except RuntimeError as e:  # reported, and the rest goes on
                    self.record("scale", {"conns": n, "active": min(n, 256)}, stack, {"error": str(e)})
                finally:
                    stop(srv)

    def tasd_memory(self) -> int:
        """Bytes tasd uses: its processes' resident memory (what is not shared
        with other processes) and the pages its apps' regions have touched."""
        rss = 0
        for p in family(self.tasd.proc.pid):
            try:
                m = p.memory_full_info()
                rss += m.uss
            except psutil.Error:
                pass
        return rss + self.tasd.ctl("stats")["slowpath"]["apps"]["memory_bytes"]

    def cpu(self) -> None:
        """At a fixed load both carry, the CPU time it costs.  The main number
        is the whole machine's busy time (both ends: the client is the same
        Linux program on both runs), because where the kernel accounts its
        TCP and veth work (the process, softirq, ksoftirqd) varies; the server
        side's processes (tasd's included) and softirq time are given too."""
        rate = 5000 if self.quick else 20000
        for stack in ("linux", "tasd"):
            port = self.next_port()
            srv = self.server(stack, RPCBENCH, "server", port, ready="listening")
            try:
                procs = family(srv.pid) + (family(self.tasd.proc.pid) if stack == "tasd" else [])
                client = self.tb.popen(self.tb.ns_peer, "taskset", "-c", CLIENT_CORE, RPCBENCH, "client",
                                       self.target(stack), port, "--conns", 16, "--inflight", 4, "--rate", rate,
                                       "--time", self.t * 2, "--warmup", self.warmup,
                                       stdout=subprocess.PIPE, text=True)
                time.sleep(self.warmup + 0.1)
                p0, (b0, s0), t0 = proc_cpu(procs), machine_cpu(), time.monotonic()
                time.sleep(self.t * 2 - 0.2)
                p1, (b1, s1), t1 = proc_cpu(procs), machine_cpu(), time.monotonic()
                out, _ = client.communicate(timeout=60)
                numbers = json.loads(out)
                mrpcs = numbers["rps"] * (t1 - t0) / 1e6
                numbers.update({"cpu_s_per_mrpc": round((b1 - b0) / mrpcs, 2),
                                "server_processes_s_per_mrpc": round((p1 - p0) / mrpcs, 2),
                                "softirq_s_per_mrpc": round((s1 - s0) / mrpcs, 2)})
                self.record("cpu", {"offered_rps": rate, "conns": 16}, stack, numbers)
            finally:
                stop(srv)

    def apps(self) -> None:
        n = 20000 if self.quick else 200000
        for stack in ("linux", "tasd"):
            port = self.next_port()
            srv = self.server(stack, "redis-server", "--port", port, "--save", "", "--appendonly", "no",
                              "--protected-mode", "no")
            try:
                self.wait_port(stack, port)
                out = self.client(["redis-benchmark", "-h", self.target(stack), "-p", port, "-t", "set,get", "-c",
                                   50, "-P", 16, "-n", n, "--csv"])
                rows = {line.split(",")[0].strip('"'): float(line.split(",")[1].strip('"'))
                        for line in out.splitlines()[1:] if line.count(",") >= 1}
                self.record("apps", {"program": "redis-benchmark -c 50 -P 16"}, stack,
                            {"set_rps": rows.get("SET", 0), "get_rps": rows.get("GET", 0)})
            finally:
                stop(srv)
            port = self.next_port()
            srv = self.server(stack, "memcached", "-u", "root", "-p", port, "-U", "0", "-t", "1", "-l", "0.0.0.0")
            try:
                self.wait_port(stack, port)
                ops = 500 if self.quick else 20000
                t0 = time.monotonic()
                self.client(["memcslap", f"--servers={self.target(stack)}:{port}", "--concurrency=16",
                             f"--execute-number={ops}"])
                secs = time.monotonic() - t0
                self.record("apps", {"program": "memcslap --concurrency=16"}, stack,
                            {"ops_s": round(16 * ops / secs, 1)})
            finally:
                stop(srv)


def stop(p: subprocess.Popen) -> None:
    """A program and every process it forked (its session)."""
    try:
        os.killpg(p.pid, 9)
    except ProcessLookupError:
        pass
    p.wait()


def family(pid: int) -> list:
    """A process and all its descendants."""
    try:
        p = psutil.Process(pid)
        return [p] + p.children(recursive=True)
    except psutil.Error:
        return []


def proc_cpu(procs) -> float:
    """User and system seconds of these processes (their threads included)."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def machine_cpu() -> tuple[float, float]:
    """Seconds all CPUs were busy, and spent in softirq."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(f[:8]) - f[3] - f[4]) / hz, f[6] / hz


# ---- the report --------------------------------------------------------------------------

MAIN = {"rpc": "rps", "bulk": "gbit_s", "connrate": "cps", "scale": "rps", "cpu": "cpu_s_per_mrpc",
        "apps": None}
LOWER_IS_BETTER = {"cpu_s_per_mrpc", "p50_us", "p99_us", "p999_us", "p9999_us"}


def pairs(results: list[dict]):
    """(workload, config, linux row, tasd row[, label]) for each compared pair."""
    by = {}
    for r in results:
        by.setdefault((r["workload"], json.dumps(r["config"], sort_keys=True)), {})[r["stack"]] = r
    for (w, cfg), rows in by.items():
        if "linux" in rows:
            for st in ("tasd", "tasd-both"):
                if st in rows:
                    yield w, json.loads(cfg), rows["linux"], rows[st], st


def metrics_of(row: dict) -> list[str]:
    return [k for k in ("rps", "p50_us", "p99_us", "p999_us", "p9999_us", "gbit_s", "cps", "cpu_s_per_mrpc",
                        "server_processes_s_per_mrpc", "softirq_s_per_mrpc", "tasd_bytes_per_conn", "set_rps",
                        "get_rps", "ops_s") if k in row]


def ratio(a, b):
    return round(b / a, 2) if a else None


def markdown(results: list[dict], meta: dict) -> str:
    lines = [f"# tasd vs Linux, {meta['date']}", "",
             f"Machine: {meta['cpus']} cores; {meta['cores']}. Mode: {'quick' if meta['quick'] else 'default'}. "
             f"tasd options: {meta['tasd_options']}.",
             "Ratios are tasd / Linux (for latency and CPU, lower is better).", ""]
    for w in WORKLOADS:
        rows = [p for p in pairs(results) if p[0] == w]
        if not rows:
            continue
        lines += [f"## {w}", "", "| config | stack | metric | Linux | tasd | ratio |", "|---|---|---|---|---|---|"]
        for _, cfg, lx, td, st in rows:
            for side in (lx, td):
                if "error" in side:
                    lines.append(f"| {', '.join(f'{k}={v}' for k, v in cfg.items())} | {side['stack']} | failed | "
                                 f"{side['error'][:120]} | | |")
            for m in metrics_of(td):
                cfg_s = ", ".join(f"{k}={v}" for k, v in cfg.items())
                lines.append(f"| {cfg_s} | {st} | {m} | {lx.get(m, '')} | {td[m]} | {ratio(lx.get(m), td[m])} |")
        lines.append("")
    return "\n".join(lines)


def plots(results: list[dict], out: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    made = []
    for w in WORKLOADS:
        rows = [p for p in pairs(results) if p[0] == w]
        if not rows:
            continue
        labels, values = [], []
        for _, cfg, lx, td, st in rows:
            if "error" in lx or "error" in td:
                continue
            m = MAIN.get(w) or metrics_of(td)[0]
            r = ratio(lx.get(m), td.get(m))
            if r is None:
                continue
            labels.append(f"{st}\n" + " ".join(f"{v}" for v in cfg.values()))
            values.append(r)
        fig, ax = plt.subplots(figsize=(max(4, len(values) * 0.9), 3.5))
        ax.bar(range(len(values)), values, color=["#3b7dd8" if v >= 1 else "#d8683b" for v in values])
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(values)), labels, fontsize=7)
        m = MAIN.get(w) or "first metric"
        ax.set_ylabel(f"tasd / Linux ({m})")
        ax.set_title(w)
        fig.tight_layout()
        path = out / f"{w}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        made.append(path.name)
    # latency percentiles of the RPC runs
    rpc = [p for p in pairs(results) if p[0] == "rpc" and "error" not in p[2] and "error" not in p[3]]
    if rpc:
        fig, ax = plt.subplots(figsize=(max(5, len(rpc) * 0.9), 3.5))
        for i, q in enumerate(("p50_us", "p99_us", "p9999_us")):
            ax.bar([j + i * 0.27 for j in range(len(rpc))], [ratio(lx[q], td[q]) or 0 for _, _, lx, td, _ in rpc],
                   width=0.27, label=q)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(rpc)), [f"{st}\n" + " ".join(map(str, c.values())) for _, c, _, _, st in rpc],
                      fontsize=7)
        ax.set_ylabel("tasd / Linux latency")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "rpc_latency.png", dpi=100)
        plt.close(fig)
        made.append("rpc_latency.png")
    return made


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="about a minute (CI's smoke test)")
    ap.add_argument("--out", type=Path, default=None, help="directory for results (default results/bench-DATE)")
    ap.add_argument("--only", default=",".join(WORKLOADS), help=f"comma-separated subset of {','.join(WORKLOADS)}")
    ap.add_argument("--poll-us", type=int, default=None, help="tasd's poll_us for this run (default: tasd's)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: run as root (the testbed makes network namespaces)", file=sys.stderr)
        return 1
    if not RPCBENCH.exists():
        print(f"bench: {RPCBENCH} is missing: run ./dev setup", file=sys.stderr)
        return 1
    only = [w for w in args.only.split(",") if w]
    bad = [w for w in only if w not in WORKLOADS]
    if bad:
        ap.error(f"unknown workload(s): {', '.join(bad)}")
    date = time.strftime("%Y-%m-%d-%H%M%S")
    out = args.out or ROOT / "results" / f"bench-{date}"
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    opts = {} if args.poll_us is None else {"poll_us": args.poll_us}
    with Bench(args.quick, log=lambda s: print(s, flush=True), tasd_options=opts) as b:
        for w in only:
            getattr(b, w)()
        results = b.results
    meta = {"date": date, "quick": args.quick, "cpus": os.cpu_count(), "seconds": round(time.monotonic() - started),
            "tasd_options": {**TASD_BUFFERS, **opts},
            "cores": f"server side (tasd worker and slowpath, or the kernel's work, and the server program) on "
                     f"core {SERVER_CORE}; client (and its tasd with both ends on tasd) on core {CLIENT_CORE}"}
    summary = [{"workload": w, "config": cfg, "stack": st,
                "ratios": {m: ratio(lx.get(m), td[m]) for m in metrics_of(td)}}
               for w, cfg, lx, td, st in pairs(results)]
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results, "ratios": summary}, indent=1))
    (out / "results.md").write_text(markdown(results, meta))
    made = plots(results, out)
    print(f"bench: {len(results)} runs in {meta['seconds']} s; {out}/results.md, results.json, {', '.join(made)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Prometheus metrics over HTTP: what `tasctl stats` and `tasctl status` show,
in the text exposition format 0.0.4, at http://HOST:PORT/metrics
(configuration: metrics.listen; off unless set).

`exposition(stats, status)` is pure: the two dicts the control socket's
"stats" and "status" commands return, in; the text, out.  `MetricsServer` is
the driver: a small HTTP/1.1 server on asyncio that answers GET (and HEAD)
/metrics, 404 for other paths, 405 for other methods, 400 or 431 for what is
not a sane request; one request per connection, heads of at most 8 KiB, 10 s
for the whole exchange, at most 16 clients at once.  Nothing a client sends
can stop it or the daemon.

Names.  `tasd_`, then the path of the key in the stats joined by "_", with
anything outside [a-zA-Z0-9_:] made "_" (slowpath.arp.rx_requests ->
tasd_slowpath_arp_rx_requests_total).  A key that starts with the name of its
section is not doubled: slowpath.tcp.tcp_listen_overflows ->
tasd_slowpath_tcp_listen_overflows_total (should that make two keys one
name, the second keeps its full name).  The HELP line of each names the
`tasctl stats` key it comes from.

Counter or gauge, decided from the key:
  - a key ending in `_now` is a gauge, a value at this moment (connections,
    listeners, apps registered), and keeps its `_now`
    (slowpath.apps.registered_now -> tasd_slowpath_apps_registered_now: not
    tasd_slowpath_apps_registered, which OpenMetrics would take for the
    counter slowpath.apps.registered, tasd_slowpath_apps_registered_total);
  - so are the keys in GAUGES, gauges named before that rule (messages
    waiting for room, flows installed, memory);
  - every other key is a counter (it only grows while tasd runs) and its name
    ends in `_total`.
A new gauge in the stats should end in `_now`, and it is one here too.

Labels.  The fastpath's counters are per worker: one series each with
worker="N" (the stats' "workers" list), never summed into one (the stats'
"fastpath", their sum, is left out: sum() them in PromQL).  A fastpath
counter that the stats break down by reason (drops, exceptions: the C
enums' arrays) is one metric with a reason="..." label.

Besides the stats: tasd_up 1, tasd_uptime_seconds,
tasd_build_info{version="..."} 1, tasd_info{interface,address,backend} 1,
and per worker tasd_worker_running{worker,cpu},
tasd_worker_heartbeat_age_seconds{worker} and
tasd_worker_cpu_seconds_total{worker}.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from typing import Awaitable, Callable

log = logging.getLogger("tasd")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PATH = "/metrics"
MAX_HEAD = 8192      # request line and headers, bytes
TIMEOUT_S = 10.0     # one connection, from accept to close (Prometheus's default scrape timeout)
MAX_CLIENTS = 16
LINGER_S = 1.0       # after the response: read what the client still sends, so that it sees no RST

# Gauges whose key does not end in _now (paths in the stats dict).
GAUGES = {"slowpath.sp2fp_waiting", "slowpath.sp2app_waiting", "slowpath.tcp.flows_installed",
          "slowpath.apps.memory_bytes"}
PER_WORKER = "fastpath"  # the section the per-worker dicts are named under

_INVALID = re.compile(r"[^a-zA-Z0-9_:]")


# ---- the text (pure) ------------------------------------------------------------

def is_gauge(path: tuple[str, ...]) -> bool:
    return path[-1].endswith("_now") or ".".join(path) in GAUGES


def metric_name(path: tuple[str, ...], gauge: bool, collapse: bool = True) -> str:
    parts = list(path)
    if collapse:
        for i in range(1, len(parts)):
            if parts[i].startswith(path[i - 1] + "_") and len(parts[i]) > len(path[i - 1]) + 1:
                parts[i] = parts[i][len(path[i - 1]) + 1:]
    name = _INVALID.sub("_", "_".join(["tasd", *parts]))
    if not gauge and not name.endswith("_total"):
        name += "_total"
    return name


def _value(v) -> str | None:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "+Inf" if v > 0 else "-Inf"
        return repr(v)
    return None  # not a number (None, a string): not a sample


def _label_value(v) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class _Families:
    """Metric families in the order they are first seen; the samples of one
    family are written together, as the format requires."""

    def __init__(self):
        self.fams: dict[str, list] = {}  # name -> [kind, help, source key, samples]

    def add(self, name: str, kind: str, help_: str, labels: dict, value, source: str | None = None) -> bool:
        v = _value(value)
        if v is None:
            return True
        fam = self.fams.get(name)
        if fam is None:
            fam = self.fams[name] = [kind, help_, source, []]
        elif fam[0] != kind or fam[2] != source:
            return False  # the name is another key's
        fam[3].append((labels, v))
        return True

    def stat(self, path: tuple[str, ...], value, labels: dict | None = None, help_: str | None = None) -> None:
        gauge = is_gauge(path)
        kind = "gauge" if gauge else "counter"
        key = ".".join(path)
        help_ = help_ or f"tasctl stats: {key}"
        if not self.add(metric_name(path, gauge), kind, help_, labels or {}, value, key):
            self.add(metric_name(path, gauge, collapse=False), kind, help_, labels or {}, value, key)

    def text(self) -> str:
        out = []
        for name, (kind, help_, _, samples) in self.fams.items():
            out.append(f"# HELP {name} {_help(help_)}")
            out.append(f"# TYPE {name} {kind}")
            for labels, v in samples:
                if labels:
                    ls = ",".join(f'{k}="{_label_value(lv)}"' for k, lv in labels.items())
                    out.append(f"{name}{{{ls}}} {v}")
                else:
                    out.append(f"{name} {v}")
        return "\n".join(out) + "\n"


def exposition(stats: dict, status: dict) -> str:
    """The metrics page: `stats` and `status` as the control commands of
    those names return them."""
    f = _Families()
    f.add("tasd_up", "gauge", "1: tasd is running and answered this scrape.", {}, 1)
    f.add("tasd_uptime_seconds", "gauge", "Seconds since tasd started.", {}, status.get("uptime_s"))
    f.add("tasd_build_info", "gauge", "tasd's version.", {"version": status.get("version", "")}, 1)
    f.add("tasd_info", "gauge", "Where tasd runs: its interface, address and packet I/O backend.",
          {k: status.get(k) or "" for k in ("interface", "address", "backend")}, 1)
    for w in status.get("workers", []):
        f.add("tasd_worker_running", "gauge", "1 while the fastpath worker's loop runs.",
              {"worker": w.get("worker"), "cpu": w.get("core")}, int(w.get("state") == "running"))
    for w in status.get("workers", []):
        f.add("tasd_worker_heartbeat_age_seconds", "gauge", "Seconds since the worker's last heartbeat.",
              {"worker": w.get("worker")}, w.get("heartbeat_age_s"))
    for w in status.get("workers", []):
        f.add("tasd_worker_cpu_seconds_total", "counter", "CPU time the worker process used (user and system).",
              {"worker": w.get("worker")}, w.get("cpu_s"))

    for i, w in enumerate(stats.get("workers", [])):
        for k, v in w.items():
            path = (PER_WORKER, k)
            if isinstance(v, dict):  # a breakdown by reason
                for reason, n in v.items():
                    f.stat(path, n, {"worker": i, "reason": reason}, f"tasctl stats: {PER_WORKER}.{k}.REASON")
            else:
                f.stat(path, v, {"worker": i})

    def walk(path: tuple[str, ...], v) -> None:
        if isinstance(v, dict):
            for k, vv in v.items():
                walk(path + (str(k),), vv)
        else:
            f.stat(path, v)

    for section, v in stats.items():
        if section not in (PER_WORKER, "workers"):
            walk((section,), v)
    return f.text()


# ---- the server (I/O) -------------------------------------------------------------

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error"}


def _response(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8", head_only: bool = False,
              extra: tuple[str, ...] = ()) -> bytes:
    head = [f"HTTP/1.1 {status} {_REASONS[status]}", f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}", "Connection: close", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (b"" if head_only else body)


class MetricsServer:
    """GET /metrics on HOST:PORT; `collect()` gives the page's text."""

    def __init__(self, host: str, port: int, collect: Callable[[], Awaitable[str]]):
        self.host, self.port = host, port
        self.collect = collect
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Listen; raises OSError (the address is in use, or not the host's)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]  # the one chosen, if port 0

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for t in list(self._clients):
            t.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        try:
            if len(self._clients) >= MAX_CLIENTS:
                return
            self._clients.add(task)
            await asyncio.wait_for(self._exchange(reader, writer), TIMEOUT_S)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass
        except Exception:  # a bug here must cost this request only
            log.exception("metrics: error serving a request")
        finally:
            self._clients.discard(task)
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines, size = [], 0
        too_large = _response(431, b"request head too large\n")
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # one line longer than MAX_HEAD
                return await self._send(reader, writer, too_large)
            if not line:
                return  # gone before the end of its request
            size += len(line)
            if size > MAX_HEAD:
                return await self._send(reader, writer, too_large)
            if line in (b"\r\n", b"\n"):
                break
            lines.append(line)
        parts = lines[0].decode("latin-1").split() if lines else []
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return await self._send(reader, writer, _response(400, b"bad request\n"))
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            return await self._send(reader, writer, _response(405, b"only GET\n", extra=("Allow: GET, HEAD",)))
        if target.split("?", 1)[0] != PATH:
            return await self._send(reader, writer, _response(404, f"not found; metrics are at {PATH}\n".encode(),
                                                              head_only=method == "HEAD"))
        try:
            body = (await self.collect()).encode()
        except Exception:
            log.exception("metrics: collecting the stats failed")
            return await self._send(reader, writer, _response(500, b"collecting the stats failed\n"))
        await self._send(reader, writer, _response(200, body, CONTENT_TYPE, head_only=method == "HEAD"))

    async def _send(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        # Closing with unread input would reset the connection, and the
        # client could lose the response: let it close first (a while, a little).
        if writer.can_write_eof():
            writer.write_eof()
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(LINGER_S):
                budget = 64 * 1024
                while budget > 0 and (chunk := await reader.read(budget)):
                    budget -= len(chunk)

"""The Prometheus endpoint (metrics.listen): the text format from a stats
dict, the HTTP server against good and bad clients on loopback, the option's
validation, and tasd on the testbed scraped before and after real traffic."""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e import wait_line
import tasd as tasd_pkg
from tasd import config
from tasd.config import ConfigError
from tasd.slowpath import metrics
from tasd.slowpath.metrics import MetricsServer, exposition

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
SAMPLE = re.compile(rf'({NAME})(?:\{{((?:{LABEL},?)*)\}})? (\S+)')
VALUE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?(?:e[+-]?[0-9]+)?|Inf)|NaN")


def parse(text: str) -> dict[tuple, float]:
    """A strict reader of the 0.0.4 text format as tasd writes it: every line
    a HELP, a TYPE or a sample; one TYPE per metric, before its samples, which
    are together; counters named *_total.  -> {(name, (label, value)...): value}"""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    done: set[str] = set()   # metrics whose samples are over
    current = None
    samples = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            assert re.fullmatch(rf"# HELP {NAME} .*", line), line
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert re.fullmatch(NAME, name) and kind in ("counter", "gauge"), line
            assert name not in types, f"two TYPE lines for {name}"
            assert kind == "gauge" or name.endswith("_total"), f"counter {name} does not end in _total"
            types[name] = kind
            continue
        m = SAMPLE.fullmatch(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.group(1), m.group(2), m.group(5)
        assert name in types, f"{name} has no TYPE line before it"
        if name != current:
            assert name not in done, f"the samples of {name} are not together"
            if current:
                done.add(current)
            current = name
        assert VALUE.fullmatch(value), line
        lv = tuple((k, re.sub(r'\\(.)', lambda e: "\n" if e[1] == "n" else e[1], v))
                   for k, v in re.findall(LABEL, labels or ""))
        assert (name, lv) not in samples, f"{line} twice"
        samples[(name, lv)] = float(value.replace("Inf", "inf"))
    # OpenMetrics names a counter without its _total: no gauge may have that name
    assert not {n[:-6] for n, k in types.items() if k == "counter"} & {n for n, k in types.items() if k == "gauge"}
    return samples


def families(text: str) -> dict:
    """The same text read by the Prometheus client library's parser."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, tuple((k, str(v)) for k, v in labels.items()))]


def total(samples: dict, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


# ---- the text --------------------------------------------------------------------------

WORKER = {"rx_frames": 10, "tx_frames": 7, "polls": 123, "drops": {"runt": 1, "ip_checksum": 2},
          "exceptions": {"arp": 3, "tcp_noflow": 0}}
STATS = {
    "fastpath": {"rx_frames": 30, "tx_frames": 21, "polls": 369},  # the workers' sum: not exported
    "workers": [WORKER, {**WORKER, "rx_frames": 20}, WORKER],
    "slowpath": {"exceptions": 5, "sp2fp_waiting": 2, "weird-key.x": 1, "nothing": None,
                 "arp": {"rx": 4, "table_full": 0},
                 "tcp": {"app_requests": 9, "tcp_listen_overflows": 1, "tcp_time_wait": 6, "tcp_time_wait_now": 2,
                         "tcp_connections_now": 3, "flows_installed": 3, "events": 1, "tcp_events": 2},
                 "apps": {"registered": 4, "registered_now": 1, "memory_bytes": 4096}},
}
STATUS = {"version": "0.1.0", "pid": 1, "uptime_s": 12.5, "interface": 'e"th\\0\n', "address": "10.0.0.2/24",
          "backend": "xdp", "workers": [{"worker": 0, "core": 2, "state": "running", "heartbeat_age_s": 0.01,
                                         "cpu_s": 1.5},
                                        {"worker": 1, "core": 3, "state": "failed", "heartbeat_age_s": None},
                                        {"worker": 2, "core": 5, "state": "running", "heartbeat_age_s": 0.02}]}


def test_exposition_names_types_labels():
    text = exposition(STATS, STATUS)
    s = parse(text)
    assert value(s, "tasd_up") == 1 and value(s, "tasd_uptime_seconds") == 12.5
    assert value(s, "tasd_build_info", version="0.1.0") == 1
    # per worker, with a label; never summed into one series
    assert [value(s, "tasd_fastpath_rx_frames_total", worker=w) for w in range(3)] == [10, 20, 10]
    assert total(s, "tasd_fastpath_rx_frames_total") == 40
    assert value(s, "tasd_fastpath_drops_total", worker=1, reason="ip_checksum") == 2
    assert value(s, "tasd_fastpath_exceptions_total", worker=2, reason="arp") == 3
    # nested keys; a section's name not doubled; counters and gauges
    assert value(s, "tasd_slowpath_tcp_listen_overflows_total") == 1
    assert value(s, "tasd_slowpath_arp_rx_total") == 4
    assert value(s, "tasd_slowpath_tcp_time_wait_total") == 6 and value(s, "tasd_slowpath_tcp_time_wait_now") == 2
    assert value(s, "tasd_slowpath_tcp_events_total") == 1 and value(s, "tasd_slowpath_tcp_tcp_events_total") == 2
    assert value(s, "tasd_slowpath_weird_key_x_total") == 1
    assert not any(n.startswith("tasd_slowpath_nothing") for n, _ in s)
    fams = families(text)
    for name in ("tasd_slowpath_tcp_connections_now", "tasd_slowpath_tcp_flows_installed",
                 "tasd_slowpath_sp2fp_waiting", "tasd_slowpath_apps_registered_now", "tasd_slowpath_apps_memory_bytes",
                 "tasd_worker_running"):
        assert fams[name].type == "gauge", name
    for name in ("tasd_fastpath_polls", "tasd_slowpath_exceptions", "tasd_slowpath_apps_registered"):
        assert fams[name].type == "counter", name
    assert value(s, "tasd_worker_running", worker=1, cpu=3) == 0
    assert value(s, "tasd_worker_running", worker=2, cpu=5) == 1
    assert ("tasd_worker_heartbeat_age_seconds", (("worker", "1"),)) not in s  # no value, no sample
    assert value(s, "tasd_worker_cpu_seconds_total", worker=0) == 1.5
    # label values escaped, and read back as they were
    assert value(s, "tasd_info", interface='e"th\\0\n', address="10.0.0.2/24", backend="xdp") == 1
    assert 'interface="e\\"th\\\\0\\n"' in text
    (info,) = fams["tasd_info"].samples
    assert info.labels["interface"] == 'e"th\\0\n'


def test_exposition_of_nothing_is_still_valid():
    s = parse(exposition({}, {}))
    assert value(s, "tasd_up") == 1


def test_metric_name_rules():
    assert metrics.metric_name(("slowpath", "tcp", "tcp_listen_overflows"), False) == \
        "tasd_slowpath_tcp_listen_overflows_total"
    assert metrics.metric_name(("slowpath", "apps", "registered_now"), True) == "tasd_slowpath_apps_registered_now"
    assert metrics.metric_name(("x", "a.b-c/d"), False) == "tasd_x_a_b_c_d_total"
    assert metrics.metric_name(("x", "done_total"), False) == "tasd_x_done_total"
    assert metrics.is_gauge(("slowpath", "tcp", "tcp_listeners_now"))
    assert metrics.is_gauge(("slowpath", "sp2app_waiting"))
    assert not metrics.is_gauge(("fastpath", "rx_bytes")) and not metrics.is_gauge(("slowpath", "apps", "registered"))


# ---- the server, on loopback ---------------------------------------------------------------

async def http(port: int, request: bytes, read_timeout: float = 5.0) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(request)
    await w.drain()
    try:
        return await asyncio.wait_for(r.read(), read_timeout)
    finally:
        w.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response else 0


def test_server_answers_and_refuses(monkeypatch):
    monkeypatch.setattr(metrics, "TIMEOUT_S", 0.5)
    calls = []

    async def page() -> str:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("a bug")
        return exposition(STATS, STATUS)

    async def main():
        srv = MetricsServer("127.0.0.1", 0, page)
        await srv.start()
        port = srv.port
        try:
            silent, _ = await asyncio.open_connection("127.0.0.1", port)  # says nothing: holds a slot only
            ok = await http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n")
            head, body = ok.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n" in head
            assert f"\r\nContent-Length: {len(body)}\r\n".encode() in head
            assert body.decode() == exposition(STATS, STATUS)
            h = await http(port, b"HEAD /metrics?x=1 HTTP/1.0\n\n")  # bare LFs, a query: fine
            assert status_of(h) == 200 and h.endswith(b"\r\n\r\n")
            assert status_of(await http(port, b"GET /metrics HTTP/1.1\r\n\r\n")) == 500  # collect() failed
            assert status_of(await http(port, b"GET / HTTP/1.1\r\n\r\n")) == 404
            r = await http(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
            assert status_of(r) == 405 and b"\r\nAllow: GET, HEAD\r\n" in r
            assert status_of(await http(port, b"\x00\xff garbage\r\n\r\n")) == 400
            assert status_of(await http(port, b"GET /metrics SMTP/1.0\r\n\r\n")) == 400
            assert status_of(await http(port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n")) == 431
            assert status_of(await http(port, b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 2000 + b"\r\n")) == 431
            assert await http(port, b"GET /metr") == b""  # half a request, then its timeout: closed
            assert await asyncio.wait_for(silent.read(), 5) == b""  # the silent one too
            # more clients than it serves at once: the extra ones are closed, the others served
            crowd = [await asyncio.open_connection("127.0.0.1", port) for _ in range(metrics.MAX_CLIENTS + 4)]
            await asyncio.sleep(0.1)
            closed = [await asyncio.wait_for(r.read(), 0.2) == b"" for r, _ in crowd[metrics.MAX_CLIENTS:]]
            assert all(closed)
            for _, w in crowd:
                w.close()
            await asyncio.sleep(0.1)
            assert status_of(await http(port, b"GET /metrics HTTP/1.1\r\n\r\n")) == 200
        finally:
            await srv.close()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)

    asyncio.run(main())


def test_server_port_in_use_raises_oserror():
    async def main():
        a = MetricsServer("127.0.0.1", 0, lambda: None)
        await a.start()
        try:
            with pytest.raises(OSError):
                await MetricsServer("127.0.0.1", a.port, lambda: None).start()
        finally:
            await a.close()
    asyncio.run(main())


# ---- the option ------------------------------------------------------------------------------

MINIMAL = 'interface = "eth0"\naddress = "10.0.0.2/24"\n'


def test_metrics_off_by_default_and_listen_values(tmp_path):
    assert config.load(None, {"interface": "eth0", "address": "10.0.0.2/24"})["metrics.listen"] is None
    for raw, want in [("127.0.0.1:9464", ("127.0.0.1", 9464)), ("9464", ("127.0.0.1", 9464)),
                      (9100, ("127.0.0.1", 9100)), ("0.0.0.0:80", ("0.0.0.0", 80))]:
        p = tmp_path / "t.toml"
        p.write_text(MINIMAL + f"[metrics]\nlisten = {raw!r}\n".replace("'", '"'))
        assert config.load(str(p))["metrics.listen"] == want, raw


@pytest.mark.parametrize("raw", ['"localhost:9464"', '":9464"', '"127.0.0.1"', '"127.0.0.1:0"',
                                 '"127.0.0.1:65536"', '"127.0.0.1:http"', '"::1:9464"', '"300.0.0.1:9464"',
                                 '""', "true", "[9464]"])
def test_bad_metrics_listen_names_the_key(tmp_path, raw):
    p = tmp_path / "t.toml"
    p.write_text(MINIMAL + f"[metrics]\nlisten = {raw}\n")
    with pytest.raises(ConfigError, match=r"^metrics\.listen: ") as e:
        config.load(str(p))
    assert "\n" not in str(e.value)


def test_bad_metrics_listen_on_the_command_line_is_one_line():
    r = subprocess.run([sys.executable, "-m", "tasd", "--interface", "eth0", "--address", "10.0.0.2/24",
                        "--metrics-listen", "127.0.0.1:99999"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr == ("tasd: error: metrics.listen: '127.0.0.1:99999' is not an IPv4 address and port "
                        '(like "127.0.0.1:9464"), or a port\n')


# ---- tasd on the testbed ---------------------------------------------------------------------

PORT = 9464  # in the testbed's own namespace: nothing else there uses it
TAS_ECHO = os.path.join(os.path.dirname(tasd_pkg.__file__), "lib", "tas-echo")


def scrape(tb, path="/metrics", *curl_args) -> tuple[int, str, str]:
    """GET from tasd's namespace, where tasd listens: (status, headers, body)."""
    r = tb.run(tb.ns_tasd, "curl", "-sS", "--max-time", "10", "-D", "-", *curl_args,
               f"http://127.0.0.1:{PORT}{path}")
    head, _, body = r.stdout.partition("\n\n")  # text mode: the CRLFs are LFs here
    return int(head.split()[1]), head, body


def test_scrape_counts_real_traffic(make_testbed):
    """tasd with two workers and metrics on: a scrape, then pings and a TCP
    echo from the Linux peer, then a scrape that shows them."""
    tb = make_testbed()
    t = tb.start_tasd(cores=[0, 1], metrics={"listen": f"127.0.0.1:{PORT}"}).wait_ready()
    line = f"tasd: INFO: metrics on http://127.0.0.1:{PORT}/metrics"
    deadline = time.monotonic() + 10  # it comes just after the control socket, which wait_ready saw
    while line not in t.output.splitlines() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert line in t.output.splitlines(), t.output
    code, head, body = scrape(tb)
    assert code == 200 and "Content-Type: text/plain; version=0.0.4; charset=utf-8" in head
    before = parse(body)
    families(body)
    assert value(before, "tasd_up") == 1
    assert {lv for n, lv in before if n == "tasd_fastpath_rx_frames_total"} == {(("worker", "0"),), (("worker", "1"),)}
    assert value(before, "tasd_slowpath_apps_registered_now") == 0

    ping = tb.run(tb.ns_peer, "ping", "-c", "20", "-i", "0.01", "-W", "1", tb.tasd_ip, check=False)
    assert " 0% packet loss" in ping.stdout, ping.stdout
    echo = t.app(TAS_ECHO, "7050", stdout=subprocess.PIPE, text=True)
    wait_line(echo, "listening")
    r = tb.run(tb.ns_peer, "sh", "-c", f"printf 'hello, tasd\\n' | socat -t 2 - TCP:{tb.tasd_ip}:7050")
    assert r.stdout == "hello, tasd\n"

    code, _, body = scrape(tb)
    after = parse(body)
    families(body)
    grew = {n: total(after, n) - total(before, n) for n in
            ("tasd_fastpath_rx_frames_total", "tasd_fastpath_tx_frames_total", "tasd_fastpath_rx_icmp_echo_total",
             "tasd_fastpath_rx_bytes_total", "tasd_slowpath_tcp_passive_opens_total")}
    assert grew["tasd_fastpath_rx_frames_total"] >= 20 + 3 and grew["tasd_fastpath_tx_frames_total"] >= 20, grew
    assert grew["tasd_fastpath_rx_icmp_echo_total"] == 20 and grew["tasd_fastpath_rx_bytes_total"] >= 20 * 98, grew
    assert grew["tasd_slowpath_tcp_passive_opens_total"] == 1, grew
    assert value(after, "tasd_slowpath_apps_registered_now") == 1  # tas-echo, still running
    assert value(after, "tasd_uptime_seconds") > value(before, "tasd_uptime_seconds")
    # what tasctl stats says, the endpoint says
    apps = t.ctl("stats")["slowpath"]["apps"]
    assert value(after, "tasd_slowpath_apps_registered_total") == apps["registered"] == 1
    assert value(after, "tasd_slowpath_apps_memory_bytes") == apps["memory_bytes"] > 0

    assert scrape(tb, "/")[0] == 404
    assert scrape(tb, "/metrics", "-X", "POST")[0] == 405
    echo.terminate()
    echo.wait(timeout=10)
    assert t.stop() == 0
    assert tb.run(tb.ns_tasd, "curl", "-sS", "--max-time", "5", f"http://127.0.0.1:{PORT}/metrics",
                  check=False).returncode != 0  # gone with tasd


def test_metrics_port_in_use_stops_tasd_with_one_line(testbed):
    tb = testbed
    holder = tb.popen(tb.ns_tasd, sys.executable, "-c",
                      "import socket, time\n"
                      f"s = socket.create_server(('127.0.0.1', {PORT}))\n"
                      "print('bound', flush=True)\ntime.sleep(120)", stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "bound"
    tasd = tb.start_tasd(metrics={"listen": f"127.0.0.1:{PORT}"})
    assert tasd.proc.wait(timeout=30) == 1
    out = tasd.output
    assert out.strip().splitlines()[-1] == \
        f"tasd: error: metrics.listen: cannot listen on 127.0.0.1:{PORT}: Address already in use", out
    assert "Traceback" not in out and "metrics on" not in out
    assert not Path(tasd.socket).exists()  # the control socket went with it
    assert "prog/xdp" not in tb.run(tb.ns_tasd, "ip", "-d", "link", "show", "dev", tb.tasd_if).stdout

"""Unmodified programs on tasd through tasd-run (LD_PRELOAD of libtas, the
sockets layer of docs/sockets.md), against the Linux kernel's TCP in the
other namespace.  Each run is bounded in time and checks its data."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

RUN = os.path.join(os.path.dirname(sys.executable), "tasd-run")
SIZE = 5_000_000



@pytest.fixture
def payload(tmp_path):
    path = tmp_path / "payload.bin"
    path.write_bytes(os.urandom(SIZE))
    return path


def on_tasd(t, *argv, **kw) -> subprocess.Popen:
    """A program under tasd-run in tasd's namespace."""
    return t.app(RUN, "--socket", t.app_socket, *map(str, argv), **kw)


def run_on_tasd(t, *argv, timeout=60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(t.tb.netns_argv(t.tb.ns_tasd, [RUN, "--socket", t.app_socket, *map(str, argv)]),
                          capture_output=True, timeout=timeout, **kw)


def wait_listening(t, port: int, timeout: float = 10) -> None:
    """Until tasd has a listener on port (the program on tasd is ready)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if t.ctl("stats")["slowpath"]["tcp"].get("tcp_listeners_now", 0) > 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on tasd port {port}")


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_socat_server_on_tasd_receives_a_file(tasd, payload, tmp_path):
    out = tmp_path / "out.bin"
    srv = on_tasd(tasd, "socat", "-u", "TCP-LISTEN:7200,reuseaddr", f"OPEN:{out},creat,trunc",
                  stderr=subprocess.PIPE)
    wait_listening(tasd, 7200)
    tasd.tb.run(tasd.tb.ns_peer, "socat", "-u", f"OPEN:{payload}", f"TCP:{tasd.tb.tasd_ip}:7200", timeout=60)
    assert srv.wait(timeout=20) == 0, srv.stderr.read()
    assert sha(out) == sha(payload)
    assert tasd.ctl("stats")["fastpath"]["tcp_rx_segs"] > SIZE // 1448  # it came through tasd


def test_socat_client_on_tasd_half_closes_and_reads_the_echo(tasd, payload):
    """socat sends a file, shuts down writing, and reads the echo to its end."""
    echo = tasd.tb.popen(tasd.tb.ns_peer, "socat", "TCP-LISTEN:7201,reuseaddr", "EXEC:cat")
    time.sleep(0.3)
    try:
        r = run_on_tasd(tasd, "socat", "-t", "10", "-", f"TCP:{tasd.tb.peer_ip}:7201", input=payload.read_bytes())
    finally:
        echo.kill()
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(r.stdout).hexdigest() == sha(payload)


def test_nc_on_tasd_receives_a_file_closed_by_half_close(tasd, payload, tmp_path):
    out = tmp_path / "out.bin"
    with open(out, "wb") as f:
        srv = on_tasd(tasd, "nc", "-l", "7204", stdout=f, stderr=subprocess.PIPE)
        wait_listening(tasd, 7204)
        tasd.tb.run(tasd.tb.ns_peer, "sh", "-c", f"nc -N {tasd.tb.tasd_ip} 7204 < {payload}", timeout=60)
        assert srv.wait(timeout=20) == 0, srv.stderr.read()
    assert sha(out) == sha(payload)


def test_python_http_server_on_tasd_serves_curl(tasd, payload, tmp_path):
    """ThreadingHTTPServer: the listener polled by one thread, each request
    answered by another."""
    srv = on_tasd(tasd, sys.executable, "-m", "http.server", "-d", payload.parent, "--bind", "0.0.0.0", "7202",
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(tasd, 7202)
        for i in range(5):
            got = tmp_path / f"got{i}.bin"
            r = tasd.tb.run(tasd.tb.ns_peer, "curl", "-sS", "-m", "20", "-o", got, "-w", "%{http_code}",
                            f"http://{tasd.tb.tasd_ip}:7202/{payload.name}", check=False, timeout=30)
            assert (r.returncode, r.stdout) == (0, "200"), r.stderr
            assert sha(got) == sha(payload)
    finally:
        srv.kill()


LOCAL_ONLY = r"""
import socket, sys
# loopback TCP and UDP stay the kernel's
srv = socket.create_server(("127.0.0.1", 0))
c = socket.create_connection(srv.getsockname())
a, _ = srv.accept()
c.sendall(b"ping")
assert a.recv(4) == b"ping"
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("127.0.0.1", 0))
u.sendto(b"udp", u.getsockname())
assert u.recv(3) == b"udp"
# so does the kernel's own address in this namespace
k = socket.create_server((sys.argv[1], 0))
c2 = socket.create_connection(k.getsockname())
k.accept()[0].sendall(b"k")
assert c2.recv(1) == b"k"
print("ok")
"""


def test_loopback_udp_and_kernel_addresses_pass_through(tasd):
    r = run_on_tasd(tasd, sys.executable, "-c", LOCAL_ONLY, tasd.tb.kernel_ip, text=True)
    assert (r.returncode, r.stdout.strip()) == (0, "ok"), r.stderr
    assert tasd.ctl("apps")["apps"] == []  # it never needed tasd


CONNECT_PEER = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"hello")
s.shutdown(socket.SHUT_WR)
print(s.recv(100).decode())
"""


def test_tasd_run_without_tasd_fails_clearly_or_falls_back(make_testbed, tmp_path):
    """No tasd: a clear line and exit 1, at once; or the kernel's TCP with
    --fallback kernel."""
    tb = make_testbed()
    echo = tb.popen(tb.ns_peer, "socat", "TCP-LISTEN:7205,reuseaddr,fork", "EXEC:cat")
    time.sleep(0.3)
    nowhere = str(tmp_path / "no-tasd.sock")
    try:
        t0 = time.monotonic()
        r = subprocess.run(tb.netns_argv(tb.ns_tasd, [RUN, "--socket", nowhere, sys.executable, "-c", CONNECT_PEER,
                                                      tb.peer_ip, "7205"]),
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "tasd does not answer" in r.stderr, r.stderr
        assert time.monotonic() - t0 < 5
        r = subprocess.run(tb.netns_argv(tb.ns_tasd, [RUN, "--socket", nowhere, "--fallback", "kernel",
                                                      sys.executable, "-c", CONNECT_PEER, tb.peer_ip, "7205"]),
                           capture_output=True, text=True, timeout=30)
        assert (r.returncode, r.stdout.strip()) == (0, "hello"), r.stderr
    finally:
        echo.kill()


def iperf3_gbps(out: str) -> float:
    j = json.loads(out)
    assert "error" not in j, j["error"]
    return j["end"]["sum_received"]["bits_per_second"] / 1e9


@pytest.mark.parametrize("args", [[], ["-R"], ["-P", "4"]], ids=["forward", "reverse", "4-streams"])
def test_iperf3_server_on_tasd(tasd, args):
    srv = on_tasd(tasd, "iperf3", "-s", "-p", "7302", "-1", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_listening(tasd, 7302)
    r = tasd.tb.run(tasd.tb.ns_peer, "iperf3", "-c", tasd.tb.tasd_ip, "-p", "7302", "-t", "2", "-J", *args,
                    timeout=60, check=False)
    assert iperf3_gbps(r.stdout) > 0.1, r.stdout[-2000:]
    assert srv.wait(timeout=10) == 0, srv.stderr.read()


@pytest.mark.parametrize("args", [[], ["-R"], ["-P", "4"]], ids=["forward", "reverse", "4-streams"])
def test_iperf3_client_on_tasd(tasd, args):
    srv = tasd.tb.popen(tasd.tb.ns_peer, "iperf3", "-s", "-p", "7301", "-1", stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        r = run_on_tasd(tasd, "iperf3", "-c", tasd.tb.peer_ip, "-p", "7301", "-t", "2", "-J", *args, text=True)
        assert iperf3_gbps(r.stdout) > 0.1, r.stdout[-2000:] + r.stderr
    finally:
        srv.kill()


def test_curl_on_tasd_downloads_100mb_from_nginx_on_linux(tasd, tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    big = www / "big.bin"
    big.write_bytes(os.urandom(100_000_000))
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""daemon off; user root; worker_processes 1; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;
events {{ worker_connections 256; }}
http {{ access_log off; sendfile on; client_body_temp_path {tmp_path}; proxy_temp_path {tmp_path};
       fastcgi_temp_path {tmp_path}; uwsgi_temp_path {tmp_path}; scgi_temp_path {tmp_path};
       server {{ listen 7300; root {www}; }} }}
""")
    ngx = tasd.tb.popen(tasd.tb.ns_peer, "nginx", "-c", conf, "-p", tmp_path)
    time.sleep(0.5)
    got = tmp_path / "got.bin"
    try:
        r = run_on_tasd(tasd, "curl", "-fsS", "-m", "60", "-o", got, f"http://{tasd.tb.peer_ip}:7300/big.bin",
                        timeout=90, text=True)
    finally:
        ngx.kill()
    assert r.returncode == 0, r.stderr
    assert sha(got) == sha(big)


def test_redis_server_on_tasd_with_redis_benchmark(tasd):
    srv = on_tasd(tasd, "redis-server", "--port", "7303", "--save", "", "--appendonly", "no",
                  "--protected-mode", "no", stdout=subprocess.DEVNULL)
    try:
        wait_listening(tasd, 7303)
        r = tasd.tb.run(tasd.tb.ns_peer, "redis-benchmark", "-h", tasd.tb.tasd_ip, "-p", "7303", "-t", "set,get",
                        "-c", "50", "-P", "16", "-n", "200000", "--csv", timeout=120)
        rows = {line.split(",")[0].strip('"'): float(line.split(",")[1].strip('"'))
                for line in r.stdout.splitlines()[1:] if line.count(",") >= 1}
        assert rows.get("SET", 0) > 1000 and rows.get("GET", 0) > 1000, r.stdout
        check = tasd.tb.run(tasd.tb.ns_peer, "redis-cli", "-h", tasd.tb.tasd_ip, "-p", "7303", "DBSIZE", timeout=10)
        assert int(check.stdout.strip()) >= 1
    finally:
        srv.kill()


def test_memcached_4_threads_on_tasd_with_memcslap_and_memccapable(tasd):
    srv = on_tasd(tasd, "memcached", "-u", "root", "-p", "7304", "-U", "0", "-t", "4", "-l", "0.0.0.0",
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(tasd, 7304)
        r = tasd.tb.run(tasd.tb.ns_peer, "memcslap", f"--servers={tasd.tb.tasd_ip}:7304", "--concurrency=8",
                        "--execute-number=2000", timeout=120)
        assert "Time to set" in r.stdout, r.stdout + r.stderr
        r = tasd.tb.run(tasd.tb.ns_peer, "memccapable", "-h", tasd.tb.tasd_ip, "-p", "7304", timeout=120,
                        check=False)
        assert r.returncode == 0 and "All tests passed" in r.stdout, r.stdout[-3000:] + r.stderr
    finally:
        srv.kill()


def test_sockperf_server_on_tasd_ping_pong_and_throughput(tasd):
    srv = on_tasd(tasd, "sockperf", "server", "--tcp", "-p", "7305", stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
    try:
        wait_listening(tasd, 7305)
        r = tasd.tb.run(tasd.tb.ns_peer, "sockperf", "ping-pong", "--tcp", "-i", tasd.tb.tasd_ip, "-p", "7305",
                        "-t", "2", timeout=60)
        assert "Summary: Latency is" in r.stdout + r.stderr, r.stdout + r.stderr
        r = tasd.tb.run(tasd.tb.ns_peer, "sockperf", "throughput", "--tcp", "-i", tasd.tb.tasd_ip, "-p", "7305",
                        "-t", "2", timeout=60)
        assert "Summary: Message Rate is" in r.stdout + r.stderr, r.stdout + r.stderr
    finally:
        srv.kill()


UV_SERVER = r"""
import asyncio, uvloop
async def handle(r, w):
    while data := await r.read(65536):
        w.write(data)
        await w.drain()
    w.close()
async def main():
    await asyncio.start_server(handle, "0.0.0.0", 7306)
    print("listening", flush=True)
    await asyncio.sleep(120)
uvloop.run(main())
"""

UV_CLIENT = r"""
import asyncio, os, sys, uvloop
async def one():
    r, w = await asyncio.open_connection(sys.argv[1], 7306)
    data = os.urandom(200_000)
    w.write(data)
    await w.drain()
    w.write_eof()
    got = b""
    while chunk := await r.read(65536):
        got += chunk
    w.close()
    return got == data
async def main():
    print(sum(await asyncio.gather(*[one() for _ in range(20)])), flush=True)
uvloop.run(main())
"""


def test_asyncio_on_uvloop_echo_server_on_tasd(tasd):
    """libuv registers fds in epoll through io_uring when it can: tasd-run
    refuses io_uring, and libuv falls back to epoll_ctl."""
    srv = on_tasd(tasd, sys.executable, "-c", UV_SERVER, stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "listening"
        r = tasd.tb.run(tasd.tb.ns_peer, sys.executable, "-c", UV_CLIENT, tasd.tb.tasd_ip, timeout=60)
        assert r.stdout.strip() == "20", r.stderr
    finally:
        srv.kill()


def test_asyncio_on_uvloop_echo_client_on_tasd(tasd):
    srv = tasd.tb.popen(tasd.tb.ns_peer, sys.executable, "-c", UV_SERVER, stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "listening"
        r = run_on_tasd(tasd, sys.executable, "-c", UV_CLIENT, tasd.tb.peer_ip, text=True)
        assert r.stdout.strip() == "20", r.stderr
    finally:
        srv.kill()


KEEPALIVE = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], 7307))
mode = sys.argv[2]
if mode == "keepalive":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)
else:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 1500)
print("connected", flush=True)
sys.stdin.readline()  # the peer is gone now
t0 = time.monotonic()
try:
    if mode != "keepalive":
        s.send(b"x" * 1000)
    s.recv(10)
    print("no error", flush=True)
except OSError as e:
    print(e.errno == 110, round(time.monotonic() - t0, 1), flush=True)  # ETIMEDOUT
"""


@pytest.mark.parametrize("mode, low, high", [("keepalive", 1.5, 8), ("user-timeout", 1.0, 6)])
def test_keepalive_and_user_timeout_end_a_dead_connection(tasd, mode, low, high):
    """SO_KEEPALIVE with TCP_KEEPIDLE/INTVL/CNT, and TCP_USER_TIMEOUT, reach
    tasd: when the peer vanishes the connection fails with ETIMEDOUT in time."""
    tb = tasd.tb
    peer = tb.popen(tb.ns_peer, "socat", "TCP-LISTEN:7307,reuseaddr", "SYSTEM:sleep 60")
    time.sleep(0.3)
    app = on_tasd(tasd, sys.executable, "-c", KEEPALIVE, tb.peer_ip, mode, stdin=subprocess.PIPE,
                  stdout=subprocess.PIPE, text=True)
    try:
        assert app.stdout.readline().strip() == "connected"
        tb.run(tb.ns_peer, "ip", "link", "set", "dev", tb.peer_if, "down")
        app.stdin.write("go\n")
        app.stdin.flush()
        line = app.stdout.readline().split()
        assert line[0] == "True" and low <= float(line[1]) <= high, line
    finally:
        app.kill()
        peer.kill()


def test_nginx_with_two_worker_processes_and_sendfile(tasd, payload, tmp_path):
    """nginx listens, then forks its workers, which take the connections of
    the listener they inherited (its master never accepts)."""
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""daemon off; user root; worker_processes 2; pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{ worker_connections 256; }}
http {{ access_log off; sendfile on; client_body_temp_path {tmp_path}; proxy_temp_path {tmp_path};
       fastcgi_temp_path {tmp_path}; uwsgi_temp_path {tmp_path}; scgi_temp_path {tmp_path};
       server {{ listen 7310; root {payload.parent}; }} }}
""")
    ngx = on_tasd(tasd, "nginx", "-c", conf, "-p", tmp_path, stderr=subprocess.PIPE)
    try:
        wait_listening(tasd, 7310)
        url = f"http://{tasd.tb.tasd_ip}:7310/{payload.name}"
        for i in range(4):
            got = tmp_path / f"got{i}.bin"
            tasd.tb.run(tasd.tb.ns_peer, "curl", "-fsS", "-m", "20", "-o", got, url, timeout=30)
            assert sha(got) == sha(payload)
        r = tasd.tb.run(tasd.tb.ns_peer, "wrk", "-t2", "-c16", "-d2s", url, timeout=30)
        done = int(next(line.split()[0] for line in r.stdout.splitlines() if "requests in" in line))
        assert done >= 16 and "Socket errors" not in r.stdout, r.stdout
        (app,) = tasd.ctl("apps")["apps"]
        assert app["name"] == "nginx" and app["contexts"] >= 3  # the master's, and each worker's
    finally:
        ngx.kill()


PREFORK = r"""
import os, signal, socket, sys, time
lst = socket.create_server(("0.0.0.0", 7311), backlog=64)
kids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:  # a worker: accept and echo, forever
        while True:
            c, _ = lst.accept()
            while data := c.recv(65536):
                c.sendall(data + str(os.getpid()).encode().rjust(8))
            c.close()
    kids.append(pid)
print(" ".join(map(str, kids)), flush=True)
signal.sigwait({signal.SIGTERM})
for k in kids:
    os.kill(k, signal.SIGKILL)
"""

ECHO_PIDS = r"""
import socket, sys
pids = set()
for i in range(int(sys.argv[2])):
    s = socket.create_connection((sys.argv[1], 7311), timeout=10)
    s.sendall(b"x")
    got = s.recv(100)
    assert got.startswith(b"x"), got
    pids.add(int(got[1:]))
    s.close()
print(" ".join(map(str, sorted(pids))))
"""


def test_preforked_workers_share_a_listener_and_one_dying_leaves_the_others(tasd):
    """fork after listen: each child accepts from the listener it inherited;
    when one is killed, the app and the others serve on."""
    srv = on_tasd(tasd, sys.executable, "-c", PREFORK, stdout=subprocess.PIPE, text=True)
    try:
        kids = [int(p) for p in srv.stdout.readline().split()]
        wait_listening(tasd, 7311)
        r = tasd.tb.run(tasd.tb.ns_peer, sys.executable, "-c", ECHO_PIDS, tasd.tb.tasd_ip, "20", timeout=60)
        served = {int(p) for p in r.stdout.split()}
        assert served <= set(kids) and served, (served, kids)
        os.kill(kids[0], 9)
        time.sleep(0.5)
        r = tasd.tb.run(tasd.tb.ns_peer, sys.executable, "-c", ECHO_PIDS, tasd.tb.tasd_ip, "10", timeout=60)
        assert {int(p) for p in r.stdout.split()} == {kids[1]}
        (app,) = tasd.ctl("apps")["apps"]
        assert app["pid"] == srv.pid
    finally:
        srv.terminate()
        srv.wait(timeout=10)


FORK_PER_CONNECTION = r"""
import os, socket, sys
lst = socket.create_server(("0.0.0.0", 7312), backlog=64)
print("ready", flush=True)
for i in range(int(sys.argv[1])):
    c, _ = lst.accept()
    first = c.recv(5, socket.MSG_WAITALL)  # read here, before the fork
    if os.fork() == 0:  # the child answers; the parent's close must not end it
        lst.close()
        c.sendall(first)
        while data := c.recv(65536):
            c.sendall(data)
        if i % 2:
            c.close()
        os._exit(0)  # every other one leaves its close to the exit
    c.close()
    while os.waitpid(-1, os.WNOHANG)[0] > 0:
        pass
"""

FORK_CLIENT = r"""
import hashlib, os, socket, sys, threading
def one(i, out):
    data = b"hello" + os.urandom(1_000_000)
    s = socket.create_connection((sys.argv[1], 7312), timeout=20)
    threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR))).start()
    got = bytearray()
    while chunk := s.recv(1 << 16):
        got += chunk
    out[i] = hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
out = {}
ts = [threading.Thread(target=one, args=(i, out)) for i in range(int(sys.argv[2]))]
[t.start() for t in ts]
[t.join() for t in ts]
print(sum(out.values()))
"""


def test_accepted_connection_handled_in_a_forked_child(tasd):
    """accept, read a little, fork: the child echoes the rest (what came
    before the fork included) and the parent's close does not end it;
    children that exit without close() end theirs with a FIN too."""
    n = 6
    srv = on_tasd(tasd, sys.executable, "-c", FORK_PER_CONNECTION, n, stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        r = tasd.tb.run(tasd.tb.ns_peer, sys.executable, "-c", FORK_CLIENT, tasd.tb.tasd_ip, n, timeout=90)
        assert r.stdout.strip() == str(n), r.stderr
        assert srv.wait(timeout=20) == 0
    finally:
        srv.kill()
    deadline = time.monotonic() + 10
    while tasd.ctl("flows")["flows"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [f for f in tasd.ctl("flows")["flows"] if f.get("state") != "TIME_WAIT"] == []


LISTENER_OUTLIVES_PARENT = r"""
import os, socket
lst = socket.create_server(("0.0.0.0", 7313))
if os.fork() == 0:
    os.read(os.open(os.environ["GO"], os.O_RDONLY), 1)  # once the parent is gone
    for _ in range(3):
        c, _ = lst.accept()
        c.sendall(c.recv(100))
        c.close()
    os._exit(0)
print("forked", flush=True)
"""


def test_listener_outlives_the_process_that_opened_it(tasd, tmp_path):
    """The parent listens, forks and exits: the listener is the child's now."""
    go = tmp_path / "go"
    os.mkfifo(go)
    srv = on_tasd(tasd, sys.executable, "-c", LISTENER_OUTLIVES_PARENT, stdout=subprocess.PIPE, text=True,
                  env={**os.environ, "GO": str(go)})
    assert srv.stdout.readline().strip() == "forked"
    assert srv.wait(timeout=10) == 0
    with open(go, "wb") as f:
        f.write(b"x")
    for i in range(3):
        r = tasd.tb.run(tasd.tb.ns_peer, "sh", "-c", f"printf ping{i} | nc -N {tasd.tb.tasd_ip} 7313",
                        timeout=20)
        assert r.stdout == f"ping{i}"


def test_socat_forking_server_on_tasd_echoes_through_a_child_each(tasd, payload):
    """socat's fork option: accept, fork, the child relays the connection to
    `cat` (which it forks and execs in turn), the parent closes its copy."""
    srv = on_tasd(tasd, "socat", "TCP-LISTEN:7314,fork,reuseaddr", "EXEC:cat", stderr=subprocess.PIPE)
    try:
        wait_listening(tasd, 7314)
        for _ in range(3):
            r = subprocess.run(tasd.tb.netns_argv(tasd.tb.ns_peer, ["socat", "-t", "10", "-",
                                                                    f"TCP:{tasd.tb.tasd_ip}:7314"]),
                               stdin=open(payload, "rb"), capture_output=True, timeout=60)
            assert hashlib.sha256(r.stdout).hexdigest() == sha(payload), r.stderr
    finally:
        srv.kill()


def linux_server(t, port: int, *argv) -> subprocess.Popen:
    """A server on the Linux side, once it listens."""
    p = t.tb.popen(t.tb.ns_peer, *argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t.tb.run(t.tb.ns_peer, "sh", "-c", f"until nc -z 127.0.0.1 {port}; do sleep 0.1; done", timeout=15)
    return p


def test_clients_on_tasd_against_linux_servers(tasd):
    """The other role of the client-server pairs above: sockperf, redis-benchmark,
    memcslap and memccapable on tasd, their servers on Linux."""
    ip = tasd.tb.peer_ip
    srvs = [linux_server(tasd, 7320, "sockperf", "server", "--tcp", "-p", "7320"),
            linux_server(tasd, 7321, "redis-server", "--port", "7321", "--save", "", "--appendonly", "no",
                         "--protected-mode", "no"),
            linux_server(tasd, 7322, "memcached", "-u", "root", "-p", "7322", "-U", "0", "-t", "4", "-l", "0.0.0.0")]
    try:
        for mode, summary in (("ping-pong", "Summary: Latency is"), ("throughput", "Summary: Message Rate is")):
            r = run_on_tasd(tasd, "sockperf", mode, "--tcp", "-i", ip, "-p", "7320", "-t", "2", text=True)
            assert summary in r.stdout + r.stderr, r.stdout + r.stderr
        r = run_on_tasd(tasd, "redis-benchmark", "-h", ip, "-p", "7321", "-t", "set,get", "-c", "50", "-P", "16",
                        "-n", "100000", "--csv", text=True, timeout=120)
        rows = {line.split(",")[0].strip('"'): float(line.split(",")[1].strip('"'))
                for line in r.stdout.splitlines()[1:] if line.count(",") >= 1}
        assert rows.get("SET", 0) > 1000 and rows.get("GET", 0) > 1000, r.stdout + r.stderr
        r = run_on_tasd(tasd, "memcslap", f"--servers={ip}:7322", "--concurrency=8", "--execute-number=2000",
                        text=True, timeout=120)
        assert "Time to set" in r.stdout, r.stdout + r.stderr
        r = run_on_tasd(tasd, "memccapable", "-h", ip, "-p", "7322", text=True, timeout=120)
        assert r.returncode == 0 and "All tests passed" in r.stdout, r.stdout[-3000:] + r.stderr
        assert tasd.ctl("stats")["fastpath"]["tcp_rx_segs"] > 10_000  # it came through tasd
    finally:
        for p in srvs:
            p.kill()


SEND_AND_EXIT = r"""
import os, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(open(sys.argv[3], "rb").read())
if sys.argv[4] == "close":
    s.close()
os._exit(0)  # at once: what is still in tasd's buffers must go out all the same
"""


@pytest.mark.parametrize("ending", ["close", "exit"])
def test_program_that_writes_and_exits_delivers_everything(tasd, payload, tmp_path, ending):
    """write, (close,) exit: Linux delivers the data and a FIN after the
    process is gone; so does tasd (the app's region stays until it is sent)."""
    out = tmp_path / "out.bin"
    port = 7330 if ending == "close" else 7331
    sink = tasd.tb.popen(tasd.tb.ns_peer, "socat", "-u", f"TCP-LISTEN:{port},reuseaddr", f"OPEN:{out},creat,trunc")
    tasd.tb.run(tasd.tb.ns_peer, "sh", "-c", f"until ss -ltn | grep -q :{port}; do sleep 0.05; done", timeout=10)
    r = run_on_tasd(tasd, sys.executable, "-c", SEND_AND_EXIT, tasd.tb.peer_ip, port, payload, ending)
    assert r.returncode == 0, r.stderr
    assert sink.wait(timeout=30) == 0
    assert sha(out) == sha(payload)
    deadline = time.monotonic() + 10
    while tasd.ctl("stats")["slowpath"]["apps"]["lingering_now"] and time.monotonic() < deadline:
        time.sleep(0.1)
    apps = tasd.ctl("stats")["slowpath"]["apps"]
    assert apps["lingering_now"] == 0 and apps["memory_bytes"] == 0  # its region went once all was sent

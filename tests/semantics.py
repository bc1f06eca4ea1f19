"""Socket call sequences whose results (return values, errno, readiness
events) must be the same on the kernel's TCP and on tasd.

    python semantics.py client PEER_IP PORT   # run the cases, print JSON
    python semantics.py peer PORT             # the Linux side: one command per connection

tests/test_semantics.py runs the client once plainly (the kernel's TCP) and
once under tasd-run, against the same peer, and compares the two records.
Everything that may differ legitimately (addresses, ports, buffer sizes,
byte counts of a short write) is normalised before it is recorded.
"""
from __future__ import annotations

import errno
import json
import os
import select
import socket
import struct
import sys
import threading
import time

WAIT = 0.3  # s: for the peer's action to arrive


# ---- the peer ------------------------------------------------------------------------------

def peer_connection(c: socket.socket) -> None:
    """The first line says what to do."""
    line = b""
    while not line.endswith(b"\n") and (ch := c.recv(1)):  # unbuffered: what follows is data
        line += ch
    cmd = line.decode().split()
    if not cmd:
        c.close()
        return
    if cmd[0] == "echo":  # echo until the client's FIN, then FIN
        while data := c.recv(65536):
            c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        c.recv(1)
    elif cmd[0] == "send":  # N bytes, then FIN, then wait for the client to close
        c.sendall(b"x" * int(cmd[1]))
        c.shutdown(socket.SHUT_WR)
        while c.recv(65536):
            pass
    elif cmd[0] == "reset":  # a RST at once
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif cmd[0] == "hold":  # read nothing: the client's window fills
        time.sleep(float(cmd[1]))
    elif cmd[0] == "probe":  # connect back, then say how the connection ended
        time.sleep(WAIT / 3)
        back = socket.create_connection((c.getpeername()[0], int(cmd[1])))
        back.settimeout(5)
        try:
            end = "eof" if back.recv(10) == b"" else "data"
        except ConnectionResetError:
            end = "reset"
        except OSError as e:
            end = type(e).__name__
        c.sendall(end.encode())
        back.close()
    elif cmd[0] == "later":  # after T s, a few bytes; then wait for the client to close
        time.sleep(float(cmd[1]))
        c.sendall(b"late")
        c.recv(1)
    elif cmd[0] == "connect":  # connect back to the client's listener
        time.sleep(WAIT / 3)
        back = socket.create_connection((c.getpeername()[0], int(cmd[1])))
        back.sendall(b"hi")
        time.sleep(2 * WAIT)
        back.close()
    c.close()


def peer(port: int) -> None:
    srv = socket.create_server(("0.0.0.0", port), backlog=64)
    print(json.dumps({"listening": port}), flush=True)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=peer_connection, args=(c,), daemon=True).start()


# ---- the cases -----------------------------------------------------------------------------

def err(fn, *args):
    """fn's result, or the errno name it failed with."""
    try:
        r = fn(*args)
        return r if not isinstance(r, bytes) else r.decode()
    except BlockingIOError:
        return "EAGAIN"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def revents(fd, events=select.POLLIN | select.POLLOUT | select.POLLRDHUP, timeout_ms=0) -> list[str]:
    p = select.poll()
    p.register(fd, events)
    got = p.poll(timeout_ms)
    bits = got[0][1] if got else 0
    names = ["POLLIN", "POLLOUT", "POLLERR", "POLLHUP", "POLLRDHUP", "POLLNVAL"]
    return [n for n in names if bits & getattr(select, n)]


class Case:
    def __init__(self, ip: str, port: int):
        self.ip, self.port = ip, port

    def connect(self, cmd: str | None = None, blocking: bool = True) -> socket.socket:
        s = socket.create_connection((self.ip, self.port))
        if cmd:
            s.sendall(cmd.encode() + b"\n")
        s.setblocking(blocking)
        return s


def case_echo_and_half_close(c: Case):
    s = c.connect("echo")
    out = [s.send(b"hello"), s.recv(100)]
    s.shutdown(socket.SHUT_WR)
    out += [err(s.send, b"x"), s.recv(100), s.recv(100)]
    s.close()
    return out


def case_nonblocking_connect_then_so_error(c: Case):
    s = socket.socket()
    s.setblocking(False)
    out = [err(s.connect, (c.ip, c.port))]
    out.append(revents(s, select.POLLOUT, 2000))
    out.append(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
    out.append(err(s.connect, (c.ip, c.port)))  # EISCONN
    s.close()
    return out


def case_connect_refused(c: Case):
    s = socket.socket()
    out = [err(s.connect, (c.ip, c.port + 1))]
    s.close()
    s = socket.socket()
    s.setblocking(False)
    out.append(err(s.connect, (c.ip, c.port + 1)))
    out.append(revents(s, select.POLLOUT | select.POLLIN, 2000))
    out.append(errno.errorcode.get(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)))
    out.append(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
    s.close()
    return out


def case_nonblocking_reads(c: Case):
    s = c.connect("echo", blocking=False)
    out = [err(s.recv, 10), revents(s)]
    s.setblocking(True)
    out.append(err(s.recv, 10, socket.MSG_DONTWAIT))
    s.send(b"abc")
    time.sleep(WAIT)
    out += [revents(s), err(s.recv, 2, socket.MSG_PEEK), err(s.recv, 10), err(s.recv, 10, socket.MSG_DONTWAIT)]
    s.close()
    return out


def case_zero_length_io(c: Case):
    s = c.connect("echo")
    out = [s.send(b""), err(s.recv, 0, socket.MSG_DONTWAIT)]
    s.close()
    return out


def case_peer_fin(c: Case):
    s = c.connect("send 1000")
    time.sleep(WAIT)
    out = [revents(s)]
    data = b""
    while chunk := s.recv(300):
        data += chunk
    out += [len(data), s.recv(10), revents(s), s.send(b"after"), revents(s)]
    s.close()
    return out


def case_peer_reset(c: Case):
    s = c.connect("reset")
    time.sleep(WAIT)
    out = [revents(s), err(s.recv, 10), err(s.recv, 10)]
    out.append(err(s.send, b"x", socket.MSG_NOSIGNAL))
    s.close()
    return out


def case_send_after_shutdown(c: Case):
    s = c.connect("echo")
    s.shutdown(socket.SHUT_WR)
    time.sleep(WAIT)  # the peer's FIN comes back
    out = [err(s.send, b"x", socket.MSG_NOSIGNAL), revents(s, select.POLLOUT)]
    out.append(err(s.shutdown, socket.SHUT_RD))
    out.append(s.recv(10))
    s.close()
    return out


def case_closed_fd(c: Case):
    s = c.connect("echo")
    fd = s.fileno()
    s.close()
    return [err(os.read, fd, 1), err(os.write, fd, b"x"), revents(fd)]


def case_names_and_options(c: Case):
    s = c.connect("echo")
    out = [s.getpeername()[1] == c.port, s.family == socket.AF_INET, len(s.getsockname()),
           s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE), s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR),
           s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0]
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out.append(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0)
    out.append(err(s.getsockopt, socket.IPPROTO_TCP, 12345))
    out.append(err(s.setsockopt, socket.SOL_SOCKET, 12345, 1))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    out.append(s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0)
    out.append(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0])  # tcpi_state
    s.close()
    return out


def case_fionread(c: Case):
    import fcntl
    import termios
    s = c.connect("echo")
    s.send(b"12345")
    time.sleep(WAIT)
    n = struct.unpack("i", fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    s.close()
    return [n]


def case_listen_and_accept(c: Case):
    lst = socket.create_server(("0.0.0.0", 0))
    lport = lst.getsockname()[1]
    lst.setblocking(False)
    out = [err(lst.accept), revents(lst, select.POLLIN)]
    ctl = c.connect(f"connect {lport}")
    out.append(revents(lst, select.POLLIN, 3000))
    a, addr = lst.accept()
    out += [addr[0] == c.ip, a.recv(10) if a.setblocking(True) is None else None, a.recv(10)]
    a.close()
    ctl.close()
    lst.close()
    return out


def case_epoll_edge_and_oneshot(c: Case):
    s = c.connect("echo", blocking=False)
    ep = select.epoll()
    ep.register(s, select.EPOLLIN | select.EPOLLET)
    out = [ep.poll(0)]
    s.send(b"a")
    time.sleep(WAIT)
    out.append([e for _, e in ep.poll(0)])
    out.append([e for _, e in ep.poll(0)])  # edge: nothing new
    s.send(b"b")
    time.sleep(WAIT)
    out.append([e for _, e in ep.poll(0)])  # new data: a new edge
    out.append(s.recv(10))
    ep.modify(s, select.EPOLLIN | select.EPOLLONESHOT)
    s.send(b"c")
    time.sleep(WAIT)
    out += [[e for _, e in ep.poll(0)], [e for _, e in ep.poll(0)]]
    ep.modify(s, select.EPOLLIN | select.EPOLLONESHOT)
    out.append([e for _, e in ep.poll(0)])  # rearmed: still readable
    ep.unregister(s)
    out.append(err(ep.unregister, s))
    ep.close()
    s.close()
    return out


def case_blocking_send_fills_then_nonblocking_says_eagain(c: Case):
    s = c.connect("hold 3", blocking=False)
    total, last = 0, None
    while True:
        last = err(s.send, b"x" * 65536)
        if not isinstance(last, int):
            break
        total += last
    out = [last, total > 65536, revents(s, select.POLLOUT)]
    s.close()
    return out


def case_waitall_vectors_and_sendfile(c: Case):
    import tempfile
    s = c.connect("echo")
    out = [s.sendmsg([b"ab", b"cd", b"ef"])]
    buf1, buf2 = bytearray(3), bytearray(3)
    out += [s.recvmsg_into([buf1, buf2], 0, socket.MSG_WAITALL)[0], bytes(buf1 + buf2)]
    with tempfile.TemporaryFile() as f:
        f.write(b"0123456789")
        f.flush()
        out.append(os.sendfile(s.fileno(), f.fileno(), 2, 5))
    out.append(s.recv(5, socket.MSG_WAITALL))
    w = os.writev(s.fileno(), [b"x", b"yz"])
    time.sleep(WAIT)  # all of the echo is there
    out += [w, os.readv(s.fileno(), [bytearray(1), bytearray(2)])]
    s.close()
    return out


def case_dup_keeps_the_connection(c: Case):
    s = c.connect("echo")
    d = os.dup(s.fileno())
    s.close()
    out = [os.write(d, b"dup"), os.read(d, 10)]
    d2 = os.dup2(d, d + 10)
    os.close(d)
    out += [os.write(d2, b"2"), os.read(d2, 10), err(os.write, d, b"x")]
    os.close(d2)
    return out


def case_receive_timeout(c: Case):
    s = c.connect("echo")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 200000))
    t0 = time.monotonic()
    out = [err(s.recv, 10), 0.15 < time.monotonic() - t0 < 2]
    out.append(struct.unpack("ll", s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)))
    s.close()
    return out


def case_select_mixes_kernel_fds(c: Case):
    s = c.connect("echo")
    r, w = os.pipe()
    out = [select.select([s, r], [], [], 0)[0] == []]
    os.write(w, b"p")
    out.append(select.select([s, r], [], [], 1)[0] == [r])
    s.send(b"q")
    time.sleep(WAIT)
    ready = select.select([s, r], [s], [], 1)
    out.append((sorted("pipe" if x == r else "socket" for x in ready[0]), len(ready[1])))
    os.close(r)
    os.close(w)
    s.close()
    return out


def case_accept_flags_and_listener_options(c: Case):
    lst = socket.create_server(("0.0.0.0", 0))
    lport = lst.getsockname()[1]
    out = [lst.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), lst.getsockname()[0],
           err(lst.getpeername), err(lst.send, b"x"), err(lst.recv, 1)]
    ctl = c.connect(f"connect {lport}")
    a, _ = lst.accept()
    import fcntl
    out += [a.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), bool(fcntl.fcntl(a, fcntl.F_GETFL) & os.O_NONBLOCK)]
    a.close()
    ctl.close()
    lst.close()
    return out


def case_listener_closed_with_a_connection_waiting(c: Case):
    lst = socket.create_server(("0.0.0.0", 0))
    ctl = c.connect(f"probe {lst.getsockname()[1]}")
    time.sleep(WAIT)  # the peer's connection waits in the backlog
    lst.close()
    out = [ctl.recv(10)]
    ctl.close()
    return out


def case_oversize_io(c: Case):
    """A receive buffer far larger than what came; a blocking send far larger
    than the socket's buffers (it returns only when all is taken)."""
    s = c.connect("send 300000")
    total, first = 0, None
    while chunk := s.recv(10 << 20):
        first = len(chunk) if first is None else first
        total += len(chunk)
    out = [total, 0 < first <= 300000]
    s.close()
    s = c.connect("echo")
    data = os.urandom(3 << 20)
    got = bytearray()

    def reader():
        while len(got) < len(data) and (chunk := s.recv(1 << 20)):
            got.extend(chunk)
    t = threading.Thread(target=reader)
    t.start()
    out.append(s.send(data) == len(data) or "partial")
    t.join(10)
    out.append(bytes(got) == data)
    s.close()
    return out


def case_epoll_rdhup_and_exclusive(c: Case):
    s = c.connect("send 10", blocking=False)
    ep = select.epoll()
    ep.register(s, select.EPOLLIN | select.EPOLLRDHUP)
    time.sleep(WAIT)
    out = [[e for _, e in ep.poll(0)]]
    out.append(err(ep.modify, s, select.EPOLLIN | select.EPOLLEXCLUSIVE))
    ep.unregister(s)
    ep.register(s, select.EPOLLIN | select.EPOLLEXCLUSIVE)
    out.append([e & ~select.EPOLLEXCLUSIVE for _, e in ep.poll(0)])
    ep.close()
    s.close()
    return out


def case_null_pointers(c: Case):
    """Bad pointers from a program give EFAULT, never a crash."""
    import ctypes
    import termios
    libc = ctypes.CDLL(None, use_errno=True)
    s = c.connect("echo")
    fd = s.fileno()
    n = ctypes.c_uint(4)
    out = []
    for rc in (lambda: libc.getsockopt(fd, socket.SOL_SOCKET, socket.SO_TYPE, None, ctypes.byref(n)),
               lambda: libc.setsockopt(fd, socket.IPPROTO_TCP, socket.TCP_CONGESTION, None, 5),
               lambda: libc.ioctl(fd, termios.FIONREAD, None)):
        ctypes.set_errno(0)
        out.append((rc(), errno.errorcode.get(ctypes.get_errno())))
    s.close()
    return out


def case_shutdown_read_then_state(c: Case):
    s = c.connect("send 10")
    time.sleep(WAIT)
    out = [s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]]  # CLOSE_WAIT
    s.shutdown(socket.SHUT_RD)
    out.append(err(s.recv, 100))
    s.shutdown(socket.SHUT_WR)
    out.append(revents(s))
    s.close()
    return out


def case_tcp_info_after_an_exchange(c: Case):
    """TCP_INFO in Linux's layout with live numbers (normalised: they differ)."""
    s = c.connect("echo")
    for _ in range(5):
        s.send(b"ping")
        s.recv(10)
    raw = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    state = raw[0]
    rto, _, snd_mss, _, unacked = struct.unpack_from("5I", raw, 8)
    rtt, rttvar, _, cwnd = struct.unpack_from("4I", raw, 8 + 15 * 4)
    s.close()
    return [state, 200_000 <= rto <= 3_000_000, 500 < snd_mss <= 1460, unacked, 0 < rtt < 1_000_000,
            rttvar > 0, 2 <= cwnd <= 100]


class Alarm(Exception):
    pass


def case_signal_interrupts_a_blocking_recv(c: Case):
    """A handler without SA_RESTART (Python's): the recv ends at once with
    EINTR, and the handler's exception comes out.  (SA_RESTART: the C
    program in test_semantics.py.)"""
    import signal

    def ring(sig, frame):
        raise Alarm

    old = signal.signal(signal.SIGALRM, ring)
    s = c.connect("later 0.8")
    t0 = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    try:
        s.recv(10)
        out = ["no signal"]
    except Alarm:
        out = ["late" if time.monotonic() - t0 > 0.6 else "early"]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    s.close()
    return out


def case_linger_close_waits_for_the_data(c: Case):
    """SO_LINGER with a timeout: close returns once the data is acknowledged,
    or after the timeout when the peer does not read."""
    out = []
    for cmd, size in (("echo", 100_000), ("hold 3", 20_000_000)):
        s = c.connect(cmd)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 1))
        s.setblocking(False)
        sent = 0
        try:
            while sent < size:
                sent += s.send(b"x" * min(65536, size - sent))
        except BlockingIOError:
            pass
        t0 = time.monotonic()
        s.close()
        out.append(round(time.monotonic() - t0))
    return out


CASES = {name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}


class Hung(Exception):
    pass


def client(ip: str, port: int) -> None:
    import signal

    def hung(*_):
        raise Hung("no answer in 10 s")
    signal.signal(signal.SIGALRM, hung)
    out = {}
    for name, fn in CASES.items():
        signal.alarm(10)  # a case that blocks for good is a result too
        try:
            out[name] = fn(Case(ip, port))
        except Exception as e:  # the record says where it broke
            out[name] = f"exception {type(e).__name__}: {e}"
        signal.alarm(0)
    print(json.dumps(out, default=lambda b: b.decode(errors="replace") if isinstance(b, bytes) else str(b)))


if __name__ == "__main__":
    if sys.argv[1] == "peer":
        peer(int(sys.argv[2]))
    else:
        client(sys.argv[2], int(sys.argv[3]))

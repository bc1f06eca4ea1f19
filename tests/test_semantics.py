"""The same socket call sequences (tests/semantics.py) on the kernel's TCP
and on tasd through tasd-run: return values, errno and readiness events must
be equal, case by case."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from e2e import wait_line

RUN = os.path.join(os.path.dirname(sys.executable), "tasd-run")
SEM = os.path.join(os.path.dirname(__file__), "semantics.py")
sys.path.insert(0, os.path.dirname(__file__))
import semantics  # noqa: E402  (the case names)


# Cases that need C: what Python hides (it retries EINTR itself).
SIGNALS_C = r"""
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
static void ring(int sig) { (void)sig; }
int main(int argc, char **argv)
{
    for (int restart = 1; restart >= 0; restart--) { /* a blocking recv, a SIGALRM after 0.2 s, data at 0.8 s */
        struct sigaction sa = {.sa_handler = ring, .sa_flags = restart ? SA_RESTART : 0};
        sigaction(SIGALRM, &sa, NULL);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
        inet_pton(AF_INET, argv[1], &a.sin_addr);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (argc < 3 || connect(s, (struct sockaddr *)&a, sizeof a) != 0 || write(s, "later 0.8\n", 10) != 10)
            return 1;
        struct itimerval t = {.it_value = {0, 200000}};
        setitimer(ITIMER_REAL, &t, NULL);
        char buf[16];
        ssize_t n = recv(s, buf, sizeof buf, 0);
        printf("%s %s\n", restart ? "SA_RESTART:" : "no SA_RESTART:", n > 0 ? "restarted, data" : strerror(errno));
        close(s);
    }
    return 0;
}
"""
C_CASES = ["c_signal_restart"]


@pytest.fixture(scope="module")
def records(make_testbed_module, tmp_path_factory):
    tb = make_testbed_module()
    t = tb.start_tasd().wait_ready()
    src = tmp_path_factory.mktemp("c") / "signals.c"
    src.write_text(SIGNALS_C)
    subprocess.run(["gcc", "-O1", "-Wall", "-Werror", "-o", src.with_suffix(""), src], check=True)
    peer = tb.popen(tb.ns_peer, sys.executable, SEM, "peer", "7400", stdout=subprocess.PIPE, text=True)
    try:
        wait_line(peer, "listening")
        out = []
        for wrap in ([], [RUN, "--socket", t.app_socket]):
            client = [sys.executable, SEM, "client", tb.peer_ip, "7400"]
            r = subprocess.run(tb.netns_argv(tb.ns_tasd, wrap + client), capture_output=True, text=True,
                               timeout=300)
            assert r.returncode == 0, r.stderr
            rec = json.loads(r.stdout)
            r = subprocess.run(tb.netns_argv(tb.ns_tasd, wrap + [str(src.with_suffix("")), tb.peer_ip, "7400"]),
                               capture_output=True, text=True, timeout=30)
            rec["c_signal_restart"] = [r.returncode, r.stdout]
            out.append(rec)
    finally:
        peer.kill()
    return out


@pytest.mark.parametrize("case", sorted(semantics.CASES) + C_CASES)
def test_same_as_the_kernel(records, case):
    kernel, tasd = records
    assert not str(kernel[case]).startswith("exception"), f"the case itself is broken: {kernel[case]}"
    assert tasd[case] == kernel[case]

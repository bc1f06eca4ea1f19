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


@pytest.fixture(scope="module")
def records(make_testbed_module):
    tb = make_testbed_module()
    t = tb.start_tasd().wait_ready()
    peer = tb.popen(tb.ns_peer, sys.executable, SEM, "peer", "7400", stdout=subprocess.PIPE, text=True)
    try:
        wait_line(peer, "listening")
        client = [sys.executable, SEM, "client", tb.peer_ip, "7400"]
        kernel = subprocess.run(tb.netns_argv(tb.ns_tasd, client), capture_output=True, text=True, timeout=300)
        ours = subprocess.run(tb.netns_argv(tb.ns_tasd, [RUN, "--socket", t.app_socket, *client]),
                              capture_output=True, text=True, timeout=300)
    finally:
        peer.kill()
    assert kernel.returncode == 0, kernel.stderr
    assert ours.returncode == 0, ours.stderr
    return json.loads(kernel.stdout), json.loads(ours.stdout)


@pytest.mark.parametrize("case", sorted(semantics.CASES))
def test_same_as_the_kernel(records, case):
    kernel, tasd = records
    assert not str(kernel[case]).startswith("exception"), f"the case itself is broken: {kernel[case]}"
    assert tasd[case] == kernel[case]

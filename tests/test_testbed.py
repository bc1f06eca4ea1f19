"""The testbed itself: unique names per run, and nothing left behind however
a run ends (normal exit, exception, SIGTERM, SIGKILL followed by a sweep)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tools.testbed import STATE_DIR, Testbed, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def ours(tb_id: str) -> set[str]:
    return {ns for ns in namespaces() if f"-{tb_id}-" in ns}


@pytest.fixture(autouse=True)
def root_only():
    if os.geteuid() != 0:
        pytest.fail("testbed tests need root")


def test_two_testbeds_at_once_do_not_collide():
    with Testbed() as a, Testbed(tap=True) as b:
        assert a.id != b.id
        assert {a.ns_tasd, a.ns_peer}.isdisjoint({b.ns_tasd, b.ns_peer})
        for tb in (a, b):  # same addresses, separate worlds
            r = tb.run(tb.ns_peer, "ping", "-c", "1", "-W", "2", tb.kernel_ip, check=False)
            assert r.returncode == 0
        assert len(ours(a.id)) == 2 and len(ours(b.id)) == 2
    assert ours(a.id) == set() and ours(b.id) == set()


def test_removed_on_exception_with_processes_running():
    with pytest.raises(RuntimeError):
        with Testbed() as tb:
            p = tb.popen(tb.ns_peer, "sleep", "300")
            raise RuntimeError("test failure")
    assert ours(tb.id) == set()
    assert p.poll() is not None
    assert not (STATE_DIR / f"{tb.id}.pid").exists()


def _child(extra: str) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {ROOT!r})
        from tools.testbed import Testbed
        tb = Testbed().up()
        print(tb.id, flush=True)
        {extra}
        time.sleep(300)
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_removed_on_sigterm():
    p = _child("")
    tb_id = p.stdout.readline().strip()
    assert len(ours(tb_id)) == 2
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    assert ours(tb_id) == set()


def test_sweep_after_sigkill():
    p = _child("")
    tb_id = p.stdout.readline().strip()
    p.kill()
    p.wait()
    assert len(ours(tb_id)) == 2  # nobody could clean up...
    removed = sweep()            # ...until the next run sweeps
    assert ours(tb_id) == set() and len(removed) >= 2


def test_sweep_spares_live_runs():
    with Testbed() as tb:
        sweep()
        assert len(ours(tb.id)) == 2


def test_impaired_testbed_has_three_namespaces():
    from tools.impair import ImpairConfig
    with Testbed(impair=ImpairConfig.symmetric()) as tb:
        assert len(ours(tb.id)) == 3
        r = tb.run(tb.ns_peer, "ping", "-c", "3", "-i", "0.2", "-W", "2", tb.kernel_ip, check=False)
        assert r.returncode == 0, r.stdout
    assert ours(tb.id) == set()

"""Shared fixtures: the testbed (tools/testbed.py, the one implementation) and
tasd started on it.  Integration tests need root: they make namespaces."""
from __future__ import annotations

import os

import pytest

from tools.testbed import Testbed


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow (CI does)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


def _require_root():
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces, XDP): run ./dev test as root")


def _testbeds(failed):
    """A factory of running Testbeds, and their teardown: the logs of their
    tasd processes are printed if failed() says so."""
    _require_root()
    beds: list[Testbed] = []

    def make(**kw) -> Testbed:
        beds.append(Testbed(**kw).up())
        return beds[-1]

    yield make
    for tb in beds:
        for t in tb.tasds:
            if t.proc.poll() is None:
                t.stop()
            if failed():
                print(f"--- tasd log ({t.log_path.name}):\n{t.output}")
        tb.down()


@pytest.fixture
def make_testbed(request):
    """Factory: make_testbed(**Testbed kwargs) -> a running Testbed, torn down
    after the test.  If the test failed, the logs of the tasd processes it
    started are printed, so that pytest shows them with the failure."""
    yield from _testbeds(lambda: getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed)


@pytest.fixture(scope="module")
def make_testbed_module(request):
    """make_testbed for a module's tests that share one testbed (their logs
    are printed if any of them failed)."""
    yield from _testbeds(lambda: request.session.testsfailed > 0)


@pytest.fixture
def testbed(make_testbed):
    return make_testbed()


@pytest.fixture
def tasd(make_testbed):
    """A testbed with tasd on it, ready for apps (t.tb is the testbed)."""
    tb = make_testbed()
    t = tb.start_tasd().wait_ready()
    t.tb = tb
    return t

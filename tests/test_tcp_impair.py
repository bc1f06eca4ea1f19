"""TCP through the impairment bridge (tools/impair.py): 100 MB each way
between apps on tasd and the Linux kernel's TCP, with loss, reordering,
duplication or corruption in both directions.  The data must arrive whole,
and no stall may last longer than a few retransmission timeouts (200 ms at
least each, doubling)."""
from __future__ import annotations

import pytest

from e2e import finish, linux, linux_server, tasd_client, tasd_server
from tools.impair import ImpairConfig

SIZE = 100_000_000
MAX_GAP = 1.5  # seconds, tasd sending: 0.2 + 0.4 + 0.8 of backed-off RTOs, with room
# Linux sending (cubic): at 5% loss of data and ACKs it needs ~120 RTOs for
# 100 MB whether tasd or the kernel receives (measured: 118 and 123), and
# chains of four or five in a row (0.2 + 0.4 + 0.8 + 1.6 + 3.2 s) happen
MAX_GAP_LINUX = 6.5

CASES = [
    pytest.param({"loss": 0.01}, "dropped_loss", id="loss-1%"),
    pytest.param({"loss": 0.05}, "dropped_loss", id="loss-5%", marks=pytest.mark.slow),
    pytest.param({"reorder": 0.02}, "reordered", id="reorder-2%"),
    pytest.param({"duplicate": 0.01}, "duplicated", id="duplicate-1%"),
    pytest.param({"corrupt": 0.001}, "corrupted", id="corrupt-0.1%"),
]


@pytest.mark.parametrize("impairment, counter", CASES)
def test_100mb_each_way_through_impairment(make_testbed, impairment, counter):
    tb = make_testbed(impair=ImpairConfig.symmetric(seed=7, **impairment))
    t = tb.start_tasd().wait_ready()

    # Linux sends to a server on tasd
    srv = tasd_server(t, 7100, "--count", 1)
    (c,) = linux(tb, "source", tb.tasd_ip, 7100, SIZE, timeout=600)
    (s,) = finish(srv, timeout=120)
    assert c["end"] == "fin" and c["tx_bytes"] == SIZE
    assert s["rx_bytes"] == SIZE and s["rx_sha256"] == c["tx_sha256"] and s["fin"]
    assert s["max_gap"] < MAX_GAP_LINUX, s

    # a client on tasd sends to Linux
    sink = linux_server(tb, "sink", 7101)
    (cc,) = tasd_client(t, tb.peer_ip, 7101, "--send", SIZE, timeout=600)
    (ss,) = finish(sink, timeout=120)
    assert cc["tx_bytes"] == SIZE and cc["error"] is None
    assert ss["rx_bytes"] == SIZE and ss["rx_sha256"] == cc["tx_sha256"] and ss["end"] == "fin"
    assert ss["max_gap"] < MAX_GAP, ss

    # the bridge did impair both directions
    st = tb.impair.stats()
    assert st["a_to_b"][counter] > 0 and st["b_to_a"][counter] > 0, st
    if counter == "corrupted":  # and tasd's checksums caught what it was sent
        drops = t.ctl("stats")["fastpath"]["drops"]
        assert sum(v for k, v in drops.items() if "csum" in k or "checksum" in k) > 0, drops

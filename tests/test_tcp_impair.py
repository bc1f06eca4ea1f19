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
# The longest delivery gap allowed: a few retransmission timeouts (200 ms at
# least each, doubling).  A retransmission fails if it or its ACK is lost: at
# 1% loss chains of three (0.2 + 0.4 + 0.8 s) are already rare in 100 MB; at 5%
# each try fails with ~10%, and the ~5000 losses of 100 MB make chains of
# four (3.0 s) likely, whichever stack sends (a cubic Linux sender needs ~120
# RTOs there, measured the same with tasd or the kernel receiving).
MAX_GAP = 1.5
MAX_GAP_5_PERCENT = 6.5  # five in a row: 0.2 + 0.4 + 0.8 + 1.6 + 3.2 s

CASES = [
    pytest.param({"loss": 0.01}, "dropped_loss", MAX_GAP, id="loss-1%"),
    pytest.param({"loss": 0.05}, "dropped_loss", MAX_GAP_5_PERCENT, id="loss-5%", marks=pytest.mark.slow),
    pytest.param({"reorder": 0.02}, "reordered", MAX_GAP, id="reorder-2%"),
    pytest.param({"duplicate": 0.01}, "duplicated", MAX_GAP, id="duplicate-1%"),
    pytest.param({"corrupt": 0.001}, "corrupted", MAX_GAP, id="corrupt-0.1%"),
]


@pytest.mark.parametrize("impairment, counter, max_gap", CASES)
def test_100mb_each_way_through_impairment(make_testbed, impairment, counter, max_gap):
    tb = make_testbed(impair=ImpairConfig.symmetric(seed=7, **impairment))
    t = tb.start_tasd().wait_ready()

    # Linux sends to a server on tasd
    srv = tasd_server(t, 7100, "--count", 1)
    (c,) = linux(tb, "source", tb.tasd_ip, 7100, SIZE, timeout=600)
    (s,) = finish(srv, timeout=120)
    assert c["end"] == "fin" and c["tx_bytes"] == SIZE
    assert s["rx_bytes"] == SIZE and s["rx_sha256"] == c["tx_sha256"] and s["fin"]
    assert s["max_gap"] < max_gap, s

    # a client on tasd sends to Linux
    sink = linux_server(tb, "sink", 7101)
    (cc,) = tasd_client(t, tb.peer_ip, 7101, "--send", SIZE, timeout=600)
    (ss,) = finish(sink, timeout=120)
    assert cc["tx_bytes"] == SIZE and cc["error"] is None
    assert ss["rx_bytes"] == SIZE and ss["rx_sha256"] == cc["tx_sha256"] and ss["end"] == "fin"
    assert ss["max_gap"] < max_gap, ss

    # the bridge did impair both directions
    st = tb.impair.stats()
    assert st["a_to_b"][counter] > 0 and st["b_to_a"][counter] > 0, st
    if counter == "corrupted":  # and tasd's checksums caught what it was sent
        drops = t.ctl("stats")["fastpath"]["drops"]
        assert sum(v for k, v in drops.items() if "csum" in k or "checksum" in k) > 0, drops

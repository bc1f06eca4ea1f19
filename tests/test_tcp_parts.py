"""The small parts of tasd.slowpath.tcp on their own: configuration, keyed
timers, RFC 6298 arithmetic, the challenge ACK budget."""

import random

import pytest

from tasd.slowpath.tcp import TcpConfig
from tasd.slowpath.tcp.ratelimit import ChallengeAckLimiter
from tasd.slowpath.tcp.rto import RetransmitBackoff, backed_off, initial_rto, rto_from
from tasd.slowpath.tcp.timers import Timers

CFG = TcpConfig()


def test_config_defaults_linux_like():
    assert (CFG.mss, CFG.rcv_wscale, CFG.syn_retries, CFG.synack_retries) == (1460, 7, 6, 5)
    assert (CFG.rto_initial, CFG.rto_min, CFG.rto_max, CFG.retries2) == (1.0, 0.2, 120.0, 15)
    assert 2 * CFG.msl == 60.0 and CFG.fin_timeout == 60.0
    assert CFG.rcv_wnd == 262144                        # min(rcv_buf, 65535 << 7)
    assert TcpConfig(rcv_buf=10**8).rcv_wnd == 65535 << 7
    assert TcpConfig(window_scaling=False).rcv_wnd == 65535


@pytest.mark.parametrize("kw", [
    {"mss": 40}, {"rcv_wscale": 15}, {"rcv_buf": 0}, {"rto_min": 2.0},
    {"ephemeral_ports": (61000, 60000)}, {"ephemeral_ports": (0, 10)}, {"syn_retries": -1},
    {"msl": 0}, {"keepalive_intvl": -1.0}])
def test_config_invalid_rejected(kw):
    with pytest.raises(ValueError):
        TcpConfig(**kw)


def test_timers_earliest_first_rearm_and_cancel():
    t = Timers()
    t.set("a", 5.0)
    t.set("b", 3.0)
    t.set("c", 4.0)
    t.set("b", 6.0)                  # re-armed later
    t.cancel("c")
    assert t.next_deadline() == 5.0
    assert t.pop_due(4.9) is None
    assert t.pop_due(10.0) == "a"
    assert t.pop_due(10.0) == "b"
    assert t.pop_due(10.0) is None and t.next_deadline() is None and len(t) == 0


def test_timers_many_rearms_stay_small():
    t = Timers()
    for i in range(10_000):
        t.set("k", float(i))
    assert len(t._heap) < 200 and t.next_deadline() == 9999.0


def test_rto_rfc6298_formula_and_bounds():
    assert rto_from(0.5, 0.25, CFG) == pytest.approx(1.5)      # SRTT + 4·RTTVAR
    assert rto_from(0.001, 0.0, CFG) == CFG.rto_min
    assert rto_from(100.0, 10.0, CFG) == CFG.rto_max
    assert backed_off(1.0, 3, CFG) == 8.0 and backed_off(1.0, 10, CFG) == 120.0
    assert backed_off(1.0, 10**6, CFG) == 120.0


def test_rto_initial_from_handshake():
    assert initial_rto(0.1, False, CFG) == (pytest.approx(0.3), 0.1, 0.05)
    assert initial_rto(None, False, CFG) == (1.0, None, None)
    assert initial_rto(None, True, CFG) == (3.0, None, None)      # RFC 6298 §5.7


def test_rto_backoff_limit_counts_retransmissions():
    b = RetransmitBackoff()
    rtos = [b.expire(1.0, float(i), 3, None, CFG) for i in range(4)]
    assert rtos == [2.0, 4.0, 8.0, None]
    b.progress()
    assert b.expire(1.0, 10.0, 3, None, CFG) == 2.0


@pytest.mark.parametrize("seed", range(20))
def test_challenge_ack_budget_randomised_per_second(seed):
    lim = ChallengeAckLimiter(100, random.Random(seed))
    first = sum(lim.allow(0.5) for _ in range(1000))
    assert 50 <= first < 150
    assert lim.allow(0.99) is False
    assert lim.allow(1.5) is True                  # a new one-second window

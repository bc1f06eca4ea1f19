"""Retransmission timeout arithmetic (RFC 6298) and the backoff state that the
slowpath keeps for a flow whose worker reports timer expiries."""

from __future__ import annotations

from dataclasses import dataclass

from .config import TcpConfig

CLOCK_GRANULARITY = 0.001     # G of RFC 6298 §2: the fastpath's timers tick in ms
RTO_FALLBACK = 3.0            # RFC 6298 §5.7: RTO after a handshake that timed out


def rto_from(srtt: float, rttvar: float, cfg: TcpConfig) -> float:
    """RFC 6298 §2.3: RTO = SRTT + max(G, 4·RTTVAR), then bounded. The lower bound
    is Linux's rto_min (200 ms), not the RFC's 1 s (§2.4 SHOULD)."""
    return min(max(srtt + max(CLOCK_GRANULARITY, 4 * rttvar), cfg.rto_min), cfg.rto_max)


def initial_rto(sample: float | None, timed_out: bool, cfg: TcpConfig
                ) -> tuple[float, float | None, float | None]:
    """(rto, srtt, rttvar) for a flow leaving the handshake: from the handshake's
    RTT sample if there is one (§2.2: SRTT = R, RTTVAR = R/2); without a sample,
    rto_initial, or 3 s if a SYN or SYN-ACK had to be retransmitted (§5.7)."""
    if sample is not None:
        return rto_from(sample, sample / 2, cfg), sample, sample / 2
    return (max(RTO_FALLBACK, cfg.rto_initial) if timed_out else cfg.rto_initial), None, None


def backed_off(base: float, backoffs: int, cfg: TcpConfig) -> float:
    """RFC 6298 §5.5: the RTO doubled `backoffs` times, at most rto_max."""
    return min(base * 2 ** min(backoffs, 64), cfg.rto_max)


def snapshot_rto(srtt: float | None, rttvar: float | None, fallback: float,
                 cfg: TcpConfig) -> float:
    """The un-backed-off RTO of a flow from its worker's estimator; `fallback` when
    the worker has no sample yet."""
    if srtt is None or srtt <= 0:
        return fallback
    return rto_from(srtt, rttvar or 0.0, cfg)


@dataclass
class RetransmitBackoff:
    """Consecutive RTO expiries of one flow (RFC 6298 §5.5–5.7). `ack_progress`
    (new data acknowledged) ends an episode."""

    backoffs: int = 0
    episode_start: float | None = None   # when the oldest unacknowledged data left

    def expire(self, base: float, now: float, limit: int, user_timeout: float | None,
               cfg: TcpConfig) -> float | None:
        """The next RTO after an expiry, or None: give up. Without a user timeout
        the flow gets `limit` retransmissions (Linux counts tcp_retries2 the
        same way); with one (TCP_USER_TIMEOUT, RFC 9293 §3.8.3) it replaces the
        count, and the next RTO is cut so the give-up happens on time (Linux)."""
        if self.episode_start is None:
            self.episode_start = now - backed_off(base, self.backoffs, cfg)
        if user_timeout is not None:
            remaining = user_timeout - (now - self.episode_start)
            if remaining <= 0:
                return None
        elif self.backoffs >= limit:
            return None
        self.backoffs += 1
        rto = backed_off(base, self.backoffs, cfg)
        if user_timeout is not None:
            rto = min(rto, max(remaining, CLOCK_GRANULARITY))
        return rto

    def progress(self) -> None:
        self.backoffs = 0
        self.episode_start = None


@dataclass
class PersistBackoff:
    """Zero-window probing (RFC 9293 §3.8.6.1, RFC 1122 4.2.2.17). The interval
    doubles up to rto_max for as long as the window stays shut; it only gives up
    on a peer that stops answering: `unanswered` counts probes with no segment
    from the peer since (read from the snapshot's last_rx), as Linux counts
    icsk_probes_out. `window_opened` ends the episode."""

    backoffs: int = 0
    unanswered: int = 0
    last_probe_at: float | None = None

    def expire(self, base: float, last_rx: float, now: float, limit: int,
               user_timeout: float | None, cfg: TcpConfig) -> float | None:
        if self.last_probe_at is not None and last_rx >= self.last_probe_at:
            self.unanswered = 0
        if user_timeout is not None:
            if self.unanswered and now - last_rx >= user_timeout:
                return None
        elif self.unanswered >= limit:
            return None
        self.unanswered += 1
        self.backoffs += 1
        self.last_probe_at = now
        return backed_off(base, self.backoffs, cfg)

    def window_opened(self) -> None:
        self.backoffs = 0
        self.unanswered = 0
        self.last_probe_at = None

"""The host-wide challenge ACK budget of RFC 5961 §7.

Linux's answer to CVE-2016-5696 is followed: the budget of each one-second
window is drawn at random in [limit/2, 3·limit/2) rather than fixed at `limit`, so
that an off-path attacker cannot count our challenge ACKs to learn whether its
guesses hit a connection. On average `limit` challenge ACKs leave per second."""

from __future__ import annotations


class ChallengeAckLimiter:
    def __init__(self, limit: int, rng) -> None:
        self.limit = limit
        self._rng = rng
        self._window_start: float | None = None
        self._left = 0

    def allow(self, now: float) -> bool:
        if self.limit <= 0:
            return False
        start = self._window_start
        if start is None or not start <= now < start + 1.0:
            self._window_start = now
            self._left = max(1, self.limit // 2 + self._rng.randrange(self.limit))
        if self._left <= 0:
            return False
        self._left -= 1
        return True

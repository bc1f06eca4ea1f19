"""TIME_WAIT (RFC 9293 §3.6, §3.10.7.4): what is left of a connection for 2·MSL
after both FINs, so that a retransmitted FIN is answered and old duplicates of
this 4-tuple die before a new incarnation starts.

The entry is built from the worker's final snapshot. What it does with a segment
(`TimeWait.on_segment`) follows Linux:

- A RST whose seq is exactly rcv_nxt ends TIME_WAIT at once ("TIME_WAIT
  assassination": Linux does not apply RFC 1337 by default, nor do we). Other RSTs
  are ignored.
- A pure ACK at rcv_nxt restarts the 2·MSL timer, with no answer.
- A SYN (no ACK) may open a new incarnation (RFC 6191 with RFC 1122 4.2.2.13):
  when both incarnations use timestamps, if its TSval is newer than ts_recent (or
  equal, with a higher seq); otherwise if its seq is above the old rcv_nxt.
  The stack then starts the new connection with ISS = old snd_nxt + 65537 (as
  Linux), above anything the old one sent.
- Anything else (a retransmitted FIN first of all) is answered with
  <SEQ=snd_nxt><ACK=rcv_nxt><CTL=ACK> and restarts the timer if it carries an
  ACK or fails PAWS. Answers to bare ACKs and SYNs are limited to one per
  `invalid_ratelimit` (Linux's tcp_invalid_ratelimit); FINs and data are always
  answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

from tasd.wire import SeqNum, TcpFlags, TcpSegment, Timestamps

from .addr import FourTuple
from .config import TcpConfig
from .isn import tsval

REUSE_ISS_GAP = 65535 + 2        # Linux: the new ISS is old snd_nxt + 65537


class TwVerdict(Enum):
    IGNORE = auto()
    ACK = auto()          # send `TimeWait.ack(now)`
    KILL = auto()         # drop the entry
    REUSE = auto()        # drop the entry, hand the SYN to the listener


def ts_after(a: int, b: int) -> bool:
    """a is newer than b as 32-bit timestamps (RFC 7323 §5.2)."""
    return 0 < (a - b) & 0xFFFFFFFF < 1 << 31


def ts_before(a: int, b: int) -> bool:
    return ts_after(b, a)


@dataclass
class TimeWait:
    key: FourTuple
    snd_nxt: SeqNum
    rcv_nxt: SeqNum
    ts_recent: int | None       # None: the connection did not use timestamps
    ts_offset: int
    window: int                 # window field of our ACKs (already shifted)
    expires: float
    last_oow_ack: float = float("-inf")

    @property
    def reuse_iss(self) -> SeqNum:
        return self.snd_nxt + REUSE_ISS_GAP

    def ack(self, now: float) -> TcpSegment:
        options = ()
        if self.ts_recent is not None:
            options = (Timestamps(tsval(now, self.ts_offset), self.ts_recent),)
        return TcpSegment(self.key.local_port, self.key.remote_port, seq=self.snd_nxt,
                          ack=self.rcv_nxt, flags=TcpFlags.ACK, window=self.window,
                          options=options)

    def on_segment(self, seg: TcpSegment, now: float, cfg: TcpConfig) -> TwVerdict:
        flags = seg.flags
        rst = TcpFlags.RST in flags
        ts = seg.option(Timestamps)
        # PAWS (RFC 7323 §5.3); RSTs are exempt, as in Linux.
        paws_reject = (not rst and ts is not None and self.ts_recent is not None
                       and ts_before(ts.tsval, self.ts_recent))
        if not paws_reject and seg.seq == self.rcv_nxt and (rst or seg.seq_len == 0):
            if rst:
                return TwVerdict.KILL
            self.expires = now + 2 * cfg.msl
            if ts is not None and self.ts_recent is not None:
                self.ts_recent = ts.tsval
            return TwVerdict.IGNORE
        if (TcpFlags.SYN in flags and not rst and TcpFlags.ACK not in flags
                and not paws_reject and self._newer_incarnation(seg, ts)):
            return TwVerdict.REUSE
        if rst:
            return TwVerdict.IGNORE
        if paws_reject or TcpFlags.ACK in flags:
            self.expires = now + 2 * cfg.msl
        rate_limited = seg.seq_len == 0 or TcpFlags.SYN in flags
        if rate_limited:
            if now - self.last_oow_ack < cfg.invalid_ratelimit:
                return TwVerdict.IGNORE
            self.last_oow_ack = now
        return TwVerdict.ACK

    def _newer_incarnation(self, syn: TcpSegment, ts: Timestamps | None) -> bool:
        """(An older TSval was already refused by PAWS.)"""
        if ts is not None and self.ts_recent is not None and ts.tsval != self.ts_recent:
            return ts_after(ts.tsval, self.ts_recent)
        return syn.seq > self.rcv_nxt

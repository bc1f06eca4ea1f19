"""Handshake option negotiation: MSS (RFC 9293 §3.7.1), window scale and
timestamps (RFC 7323), SACK-permitted (RFC 2018) and ECN setup (RFC 3168 §6.1.1).

Each side offers in its SYN; an option is in use only if both offered it (a
SYN-ACK offers only what the SYN did). MSS is not negotiated: each side sends at
most what the other announced (536 if it announced nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

from tasd.wire import Mss, SackPermitted, TcpFlags, TcpOption, TcpSegment, Timestamps, WindowScale

from .config import MAX_WSCALE, TcpConfig

DEFAULT_MSS = 536       # RFC 9293 §3.7.1 (MUST-15): the MSS when none is announced
MIN_SND_MSS = 48        # Linux net.ipv4.tcp_min_snd_mss: floor for a peer's tiny MSS


@dataclass(frozen=True, slots=True)
class SynOptions:
    """What one SYN or SYN-ACK offered. The first instance of each option counts."""

    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    tsval: int | None = None
    tsecr: int | None = None

    @classmethod
    def of(cls, seg: TcpSegment) -> SynOptions:
        mss = seg.option(Mss)
        ws = seg.option(WindowScale)
        ts = seg.option(Timestamps)
        return cls(mss=mss.value if mss else None,
                   wscale=ws.shift if ws else None,
                   sack_permitted=seg.option(SackPermitted) is not None,
                   tsval=ts.tsval if ts else None,
                   tsecr=ts.tsecr if ts else None)


@dataclass(frozen=True, slots=True)
class Agreed:
    """The outcome for one connection, from our side."""

    mss: int            # MSS we send with
    snd_wscale: int     # 0 unless both sent window scale
    rcv_wscale: int
    rcv_wnd: int        # initial window we announce, in bytes
    sack: bool
    timestamps: bool


def agree(cfg: TcpConfig, peer: SynOptions) -> Agreed:
    """Agreement with a peer whose SYN (or SYN-ACK) offered `peer`, we having
    offered (or answering with) everything `cfg` enables."""
    scaling = cfg.window_scaling and peer.wscale is not None
    rcv_wscale = cfg.rcv_wscale if scaling else 0
    # RFC 7323 §2.3: a shift above 14 is used as 14. Linux does the same.
    snd_wscale = min(peer.wscale, MAX_WSCALE) if scaling else 0
    peer_mss = peer.mss if peer.mss else DEFAULT_MSS
    return Agreed(
        mss=max(MIN_SND_MSS, min(peer_mss, cfg.mss)),
        snd_wscale=snd_wscale,
        rcv_wscale=rcv_wscale,
        rcv_wnd=min(cfg.rcv_buf, 65535 << rcv_wscale),
        sack=cfg.sack and peer.sack_permitted,
        timestamps=cfg.timestamps and peer.tsval is not None,
    )


def syn_options(cfg: TcpConfig, tsval: int, tsecr: int = 0, peer: SynOptions | None = None
                ) -> tuple[TcpOption, ...]:
    """Our options for a SYN (`peer` None) or for a SYN-ACK answering a SYN that
    offered `peer` (then only what it offered, RFC 7323 §2.2/§3.2, RFC 2018 §2).
    `tsecr` is what a SYN-ACK echoes (the peer's latest TSval); a SYN sends 0.
    In Linux's order (MSS, SACK-permitted, TS, WS), which the wire layer pads
    into `mss,sackOK,TS val ecr,nop,wscale`."""
    opts: list[TcpOption] = [Mss(cfg.mss)]
    if cfg.sack and (peer is None or peer.sack_permitted):
        opts.append(SackPermitted())
    if cfg.timestamps and (peer is None or peer.tsval is not None):
        opts.append(Timestamps(tsval, tsecr if peer is not None else 0))
    if cfg.window_scaling and (peer is None or peer.wscale is not None):
        opts.append(WindowScale(cfg.rcv_wscale))
    return tuple(opts)


# ECN setup, RFC 3168 §6.1.1.

ECN_SETUP_SYN = TcpFlags.ECE | TcpFlags.CWR
ECN_SETUP_SYNACK = TcpFlags.ECE


def is_ecn_setup_syn(flags: TcpFlags) -> bool:
    """A SYN asking for ECN: ECE and CWR both set."""
    return ECN_SETUP_SYN in flags


def is_ecn_setup_synack(flags: TcpFlags) -> bool:
    """A SYN-ACK agreeing to ECN: ECE set, CWR clear (a SYN-ACK with both is a
    middlebox reflecting the SYN's flags, not agreement)."""
    return TcpFlags.ECE in flags and TcpFlags.CWR not in flags

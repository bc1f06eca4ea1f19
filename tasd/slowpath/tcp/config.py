"""Knobs of the slowpath's TCP, with Linux's defaults (the sysctl each one mirrors
is named in its comment)."""

from __future__ import annotations

from dataclasses import dataclass

MAX_WSCALE = 14          # RFC 7323 §2.3: a larger shift is used as 14
MIN_USER_MSS = 88        # Linux TCP_MIN_MSS: smallest MSS we agree to advertise


@dataclass(frozen=True, slots=True)
class TcpConfig:
    mss: int = 1460                    # MSS we advertise (MTU 1500 − 40)
    rcv_wscale: int = 7                # our window scale shift
    rcv_buf: int = 262144              # receive buffer; see `rcv_wnd`
    window_scaling: bool = True        # net.ipv4.tcp_window_scaling
    timestamps: bool = True            # net.ipv4.tcp_timestamps
    sack: bool = True                  # net.ipv4.tcp_sack
    ecn: bool = True                   # negotiate ECN (RFC 3168) both ways
    syn_retries: int = 6               # net.ipv4.tcp_syn_retries
    synack_retries: int = 5            # net.ipv4.tcp_synack_retries
    rto_initial: float = 1.0           # RFC 6298 §2.1
    rto_min: float = 0.2               # Linux TCP_RTO_MIN (RFC 6298 says 1 s)
    rto_max: float = 120.0             # Linux TCP_RTO_MAX
    retries2: int = 15                 # net.ipv4.tcp_retries2
    orphan_retries: int = 8            # net.ipv4.tcp_orphan_retries (0 means 8)
    msl: float = 30.0                  # TIME_WAIT lasts 2·msl (Linux TCP_TIMEWAIT_LEN)
    fin_timeout: float = 60.0          # net.ipv4.tcp_fin_timeout
    keepalive_time: float = 7200.0     # net.ipv4.tcp_keepalive_time
    keepalive_intvl: float = 75.0      # net.ipv4.tcp_keepalive_intvl
    keepalive_probes: int = 9          # net.ipv4.tcp_keepalive_probes
    ephemeral_ports: tuple[int, int] = (32768, 60999)  # net.ipv4.ip_local_port_range
    challenge_ack_limit: int = 1000    # net.ipv4.tcp_challenge_ack_limit (per second)
    invalid_ratelimit: float = 0.5     # net.ipv4.tcp_invalid_ratelimit (TIME_WAIT ACKs)
    max_syn_backlog: int = 4096        # net.ipv4.tcp_max_syn_backlog (per listener)
    somaxconn: int = 4096              # net.core.somaxconn: cap on listen backlogs
    # Install a passive connection's flow with its SYN-ACK: the worker takes
    # the ACK that completes the handshake (and the data behind it) without
    # a round through the slowpath.  Only while the listener has fewer than
    # early_install_max half-open connections: under a SYN flood the flows
    # (and app buffers) wait for the ACK again.
    early_install: bool = False
    early_install_max: int = 1024

    def __post_init__(self) -> None:
        if not MIN_USER_MSS <= self.mss <= 65535:
            raise ValueError(f"mss={self.mss} not in [{MIN_USER_MSS}, 65535]")
        if not 0 <= self.rcv_wscale <= MAX_WSCALE:
            raise ValueError(f"rcv_wscale={self.rcv_wscale} not in [0, {MAX_WSCALE}]")
        if self.rcv_buf < 1:
            raise ValueError("rcv_buf must be positive")
        if not 0 < self.rto_min <= self.rto_initial <= self.rto_max:
            raise ValueError("need 0 < rto_min <= rto_initial <= rto_max")
        lo, hi = self.ephemeral_ports
        if not 1 <= lo <= hi <= 65535:
            raise ValueError(f"bad ephemeral port range {self.ephemeral_ports}")
        for name in ("syn_retries", "synack_retries", "retries2", "orphan_retries",
                     "keepalive_probes", "challenge_ack_limit", "max_syn_backlog",
                     "somaxconn"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("msl", "fin_timeout", "keepalive_time", "keepalive_intvl",
                     "invalid_ratelimit"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    @property
    def wscale(self) -> int:
        """The shift we offer, 0 when window scaling is off."""
        return self.rcv_wscale if self.window_scaling else 0

    @property
    def rcv_wnd(self) -> int:
        """Initial receive window in bytes: the buffer, as far as the window field
        and our shift can announce it."""
        return min(self.rcv_buf, 65535 << self.wscale)

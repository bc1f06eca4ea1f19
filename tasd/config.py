"""tasd's configuration: one table of options, read from TOML, overridden on
the command line, validated at start with messages that name the key.

OPTIONS is the single description of every option: the parser, the
validation, `tasd --help` and the example file (systemd/tasd.toml) all come
from it.
"""
from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable


class ConfigError(ValueError):
    """A configuration problem, worded for the operator (one line)."""


# ---- value checkers: take the raw TOML value, return the typed value -------

def _str(v, key):
    if not isinstance(v, str):
        raise ConfigError(f"{key}: expected a string, got {v!r}")
    return v


def _bool(v, key):
    if not isinstance(v, bool):
        raise ConfigError(f"{key}: expected true or false, got {v!r}")
    return v


def _int(lo=None, hi=None, pow2=False):
    def check(v, key):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{key}: expected an integer, got {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ConfigError(f"{key}: {v} is out of range [{lo}, {hi}]")
        if pow2 and v & (v - 1):
            raise ConfigError(f"{key}: {v} is not a power of two")
        return v
    return check


def _float(lo=0.0, hi=None):
    def check(v, key):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {v!r}")
        if v < lo or (hi is not None and v > hi):
            raise ConfigError(f"{key}: {v} is out of range [{lo}, {hi}]")
        return float(v)
    return check


def _choice(*choices):
    def check(v, key):
        if v not in choices:
            raise ConfigError(f"{key}: {v!r} is not one of {', '.join(map(repr, choices))}")
        return v
    return check


def _ifname(v, key):
    v = _str(v, key)
    if not v or len(v) > 15 or "/" in v or any(c.isspace() for c in v):
        raise ConfigError(f"{key}: {v!r} is not a valid interface name")
    return v


def _address(v, key):
    try:
        iface = ipaddress.IPv4Interface(_str(v, key))
    except ValueError:
        raise ConfigError(f"{key}: {v!r} is not an IPv4 address with a prefix (like 10.0.0.2/24)") from None
    if "/" not in v:
        raise ConfigError(f"{key}: {v!r} needs a prefix length (like {v}/24)")
    a = iface.ip
    if a.is_multicast or a.is_loopback or a.is_unspecified or a == iface.network.broadcast_address \
            or (iface.network.prefixlen < 31 and a == iface.network.network_address):
        raise ConfigError(f"{key}: {v!r} cannot be a host address")
    return iface


def _ipv4(v, key):
    try:
        return ipaddress.IPv4Address(_str(v, key))
    except ValueError:
        raise ConfigError(f"{key}: {v!r} is not an IPv4 address") from None


def _mac(v, key):
    v = _str(v, key).lower()
    if not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", v) or int(v[:2], 16) & 1:
        raise ConfigError(f"{key}: {v!r} is not a unicast MAC address")
    return v


def _cores(v, key):
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, list) or not v or not all(isinstance(c, int) and not isinstance(c, bool) for c in v):
        raise ConfigError(f"{key}: expected a list of CPU numbers, got {v!r}")
    allowed = os.sched_getaffinity(0)
    for c in v:
        if c not in allowed:
            raise ConfigError(f"{key}: CPU {c} is not available to tasd (it may run on CPUs "
                              f"{','.join(map(str, sorted(allowed)))})")
    if len(set(v)) != len(v):
        raise ConfigError(f"{key}: {v!r} names a CPU twice")
    from tasd.fastpath.binding import lib
    if len(v) > lib.TAS_MAX_WORKERS:
        raise ConfigError(f"{key}: at most {lib.TAS_MAX_WORKERS} workers")
    return v


def _path(v, key):
    v = _str(v, key)
    if not v.startswith("/"):
        raise ConfigError(f"{key}: {v!r} must be an absolute path")
    return v


def _listen(v, key):
    """"HOST:PORT" (an IPv4 address) or a port alone (on 127.0.0.1) -> (host, port)."""
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    host, colon, port = _str(v, key).rpartition(":")
    try:
        host = str(ipaddress.IPv4Address(host if colon else "127.0.0.1"))
        if not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{key}: {v!r} is not an IPv4 address and port (like \"127.0.0.1:9464\"), "
                          "or a port") from None
    return host, int(port)


# ---- the options ------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    key: str                       # "name" or "section.name"
    check: Callable[[Any, str], Any]
    default: Any                   # None: required, or unset when optional
    doc: str
    example: Any = None            # value shown in the example file
    required: bool = False
    cli: bool = False              # also a command-line option --name

    @property
    def flag(self) -> str:
        return "--" + self.key.replace(".", "-").replace("_", "-")


OPTIONS = [
    Option("interface", _ifname, None, "Network interface tasd sends and receives on (with backend = \"tap\": "
           "the TAP device, created if missing).", "eth0", required=True, cli=True),
    Option("address", _address, None, "tasd's IPv4 address and prefix length. It must not be configured on any "
           "interface of the host: tasd owns it.", "10.0.0.2/24", required=True, cli=True),
    Option("gateway", _ipv4, None, "Router for destinations outside the prefix.", "10.0.0.1", cli=True),
    Option("backend", _choice("xdp", "tap"), "xdp", "Packet I/O: \"xdp\" (AF_XDP, the fast one) or \"tap\" "
           "(portable fallback).", cli=True),
    Option("cores", _cores, [0], "CPUs to run fastpath workers on, one worker per CPU.", [0], cli=True),
    Option("mac", _mac, None, "tasd's MAC address with the TAP backend (default: derived from the address). "
           "With AF_XDP tasd uses the interface's MAC.", "02:00:0a:00:00:02"),
    Option("mtu", _int(576, 9000), None, "IP MTU (default: the interface's).", 1500),
    Option("poll_us", _int(0, 10_000_000), 100, "Microseconds a worker keeps polling after its last work "
           "before it sleeps (at most: a worker whose polling rarely finds work sleeps at once)."),
    Option("control_socket", _path, "/run/tasd/tasd.sock", "Unix socket for tasctl.", cli=True),
    Option("log_level", _choice("debug", "info", "warning", "error"), "info", "Log verbosity.", cli=True),
    Option("capture", _path, None, "Write every frame the fastpath sees to this pcap file (with several "
           "workers: one file each, suffixed .wN). For debugging: it costs throughput.", "/tmp/tasd.pcap",
           cli=True),
    Option("ring_slots", _int(16, 65536, pow2=True), 1024, "Slots in each slowpath/fastpath message ring."),
    Option("max_flows", _int(16, 1 << 24), 65536, "Connections each fastpath worker can carry."),
    Option("app_socket", _path, "/run/tasd/app.sock", "Unix socket applications register on (libtas).",
           cli=True),
    Option("app.max_connections", _int(1, 1 << 22), 4096, "Connections one application may have open."),
    Option("app.rx_buffer", _int(4096, 1 << 30, pow2=True), 131072, "Receive buffer of a connection, bytes "
           "(the largest window tasd advertises; the default fills 10 Gbit/s over a 100 us round trip)."),
    Option("app.tx_buffer", _int(4096, 1 << 30, pow2=True), 131072, "Send buffer of a connection, bytes."),
    Option("app.contexts", _int(1, 4096), 64, "Contexts (threads using tasd) per application."),
    Option("app.ring_entries", _int(64, 65536, pow2=True), 1024, "Entries in each application queue."),
    Option("app.max_apps", _int(1, 256), 256, "Applications registered at once."),
    Option("tcp.mss", _int(88, 9000), 1460, "Largest segment payload tasd accepts (capped by the MTU)."),
    Option("tcp.window_scale", _int(0, 14), 7, "Window scale tasd offers."),
    Option("tcp.timestamps", _bool, True, "Offer and accept TCP timestamps (RFC 7323)."),
    Option("tcp.sack", _bool, True, "Offer and accept selective acknowledgements (RFC 2018)."),
    Option("tcp.ecn", _bool, True, "Negotiate ECN (RFC 3168)."),
    Option("tcp.syn_retries", _int(1, 20), 6, "SYN retransmissions before connect() gives up."),
    Option("tcp.synack_retries", _int(1, 20), 5, "SYN-ACK retransmissions before a half-open connection is "
           "dropped."),
    Option("tcp.rto_initial", _float(0.01, 60.0), 1.0, "Initial retransmission timeout, seconds (RFC 6298)."),
    Option("tcp.rto_min", _float(0.001, 60.0), 0.2, "Lower bound of the retransmission timeout, seconds."),
    Option("tcp.rto_max", _float(0.1, 600.0), 120.0, "Upper bound of the retransmission timeout, seconds."),
    Option("tcp.retries2", _int(1, 100), 15, "Retransmission timeouts in a row before a connection is reset."),
    Option("tcp.delayed_ack", _float(0.001, 0.5), 0.04, "Delayed-ACK timer, seconds."),
    Option("tcp.msl", _float(0.0, 300.0), 30.0, "Maximum segment lifetime, seconds: TIME_WAIT lasts twice "
           "this."),
    Option("tcp.fin_timeout", _float(1.0, 3600.0), 60.0, "Seconds in FIN_WAIT_2 after the application closed."),
    Option("tcp.keepalive_time", _float(1.0, 1e6), 7200.0, "Idle seconds before keepalive probes."),
    Option("tcp.keepalive_intvl", _float(1.0, 1e5), 75.0, "Seconds between keepalive probes."),
    Option("tcp.keepalive_probes", _int(1, 100), 9, "Unanswered keepalive probes before a reset."),
    Option("tcp.ephemeral_ports", _str, "32768-60999", "Local ports for outgoing connections, LOW-HIGH."),
    Option("tcp.max_syn_backlog", _int(1, 1 << 20), 4096, "Half-open connections per listener at most."),
    Option("xdp.mode", _choice("auto", "native", "skb"), "auto", "XDP attach mode: driver (native) if "
           "possible, else generic (skb)."),
    Option("xdp.zerocopy", _choice("auto", "on", "off"), "auto", "AF_XDP zero-copy: where the driver offers "
           "it (auto), required (on), or never (off)."),
    Option("xdp.queue", _int(0, 1023), 0, "Interface queue the AF_XDP sockets bind to (all workers share it)."),
    Option("xdp.frames", _int(256, 1 << 20, pow2=True), 16384, "UMEM frames (2 KiB each) shared by the "
           "workers."),
    Option("xdp.ring_size", _int(64, 16384, pow2=True), 4096, "Entries in each AF_XDP RX and TX ring: what "
           "absorbs a burst while a worker is busy."),
    Option("arp.timeout", _float(1.0), 60.0, "Seconds a resolved neighbour is trusted before it is "
           "re-confirmed."),
    Option("arp.retries", _int(1, 20), 5, "Requests sent before a neighbour is declared unreachable."),
    Option("arp.retry_interval", _float(0.01), 0.2, "Seconds before the first retry; each retry doubles it."),
    Option("arp.failed_hold", _float(0.0), 3.0, "Seconds an unreachable neighbour is remembered as such."),
    Option("arp.announce", _int(0, 10), 2, "Gratuitous ARP announcements sent at start."),
    Option("arp.probe", _bool, True, "Probe for another host using the address at start (RFC 5227) and "
           "refuse to start if one answers."),
    Option("arp.probe_wait", _float(0.0, 10.0), 0.3, "Seconds to wait for answers to the start-up probes."),
    Option("metrics.listen", _listen, None, "Serve Prometheus metrics (the counters of `tasctl stats`) over "
           "HTTP at http://HOST:PORT/metrics. Unset: off. \"HOST:PORT\" with an IPv4 address of the host (not "
           "tasd's own address, which the host's kernel does not have), or a port alone for 127.0.0.1. No "
           "authentication: keep it on loopback or a management network.", "127.0.0.1:9464", cli=True),
]
BY_KEY = {o.key: o for o in OPTIONS}


@dataclass
class Config:
    values: dict[str, Any] = field(default_factory=dict)
    source: str = "<defaults>"

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default=None):
        return self.values.get(key, default)


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not prefix:
            flat.update(_flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def load(path: str | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read the file (if any), apply overrides (raw values keyed like the file),
    check every value, fill defaults.  Raises ConfigError."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                raw = _flatten(tomllib.load(f))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except PermissionError:
            raise ConfigError(f"{path}: permission denied") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a directory") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: malformed TOML: {e}") from None
    for key in raw:
        if key not in BY_KEY:
            known = ", ".join(o.key for o in OPTIONS)
            raise ConfigError(f"{path}: unknown key {key!r} (known keys: {known})")
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    values = {}
    for o in OPTIONS:
        if o.key in raw:
            values[o.key] = o.check(raw[o.key], o.key)
        elif o.required:
            where = f"{path}: " if path else ""
            raise ConfigError(f"{where}missing required key {o.key!r} (or {o.flag} on the command line)")
        else:
            values[o.key] = o.default
    gw = values.get("gateway")
    if gw is not None and gw not in values["address"].network:
        raise ConfigError(f"gateway: {gw} is not inside {values['address'].network}")
    need = 2 * values["xdp.ring_size"] * len(values["cores"])
    if values["backend"] == "xdp" and values["xdp.frames"] < need:
        raise ConfigError(f"xdp.frames: {values['xdp.frames']} is too few for {len(values['cores'])} worker(s) "
                          f"with xdp.ring_size {values['xdp.ring_size']}: at least {need} (2 x ring size x cores)")
    try:
        lo, hi = (int(x) for x in values["tcp.ephemeral_ports"].split("-"))
        if not 1024 <= lo <= hi <= 65535:
            raise ValueError
    except ValueError:
        raise ConfigError(f"tcp.ephemeral_ports: {values['tcp.ephemeral_ports']!r} is not LOW-HIGH within "
                          "1024-65535") from None
    values["tcp.ephemeral_ports"] = (lo, hi)
    if values["mac"] is not None and values["backend"] != "tap":
        raise ConfigError("mac: only the TAP backend takes a MAC; AF_XDP uses the interface's")
    return Config(values, path or "<command line>")


def parse_cli_value(key: str, text: str) -> Any:
    """Turn a command-line string into the raw value the file would hold."""
    if key == "cores":
        try:
            return [int(c) for c in text.split(",") if c.strip()]
        except ValueError:
            raise ConfigError(f"cores: {text!r} is not a comma-separated list of CPU numbers") from None
    return text


def example_toml() -> str:
    """The example configuration file, generated from OPTIONS."""
    out = ["# tasd configuration (TOML). Every option, with its default;",
           "# required ones are uncommented. `tasd --help` lists the same options.", ""]
    section = ""
    for o in OPTIONS:
        sec, _, name = o.key.rpartition(".")
        if sec != section:
            out.append(f"\n[{sec}]")
            section = sec
        out.extend(f"# {line}" for line in _wrap(o.doc, 76))
        shown = o.example if o.default is None else o.default
        line = f"{name} = {_toml(shown)}"
        out.append(line if o.required else f"# {line}")
        out.append("")
    return "\n".join(out).strip() + "\n"


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


def _wrap(text: str, width: int) -> list[str]:
    lines, cur = [], ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    return lines + [cur] if cur else lines

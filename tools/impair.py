"""The impairment bridge: loss, duplication, corruption, delay, reordering,
rate limiting and ECN marking between two interfaces.

The per-packet work is done by a small C program, ``tools/impair/impair.c``
(its header comment documents the command line and the control protocol).
It is built on demand into ``build/tools/impair`` and runs in the middle
namespace of a ``Testbed(impair=...)``; this module configures it and reads its
counters over a SOCK_SEQPACKET socket pair, whose hang-up also makes it exit.

    with Testbed(impair=ImpairConfig.symmetric(delay_ms=10, loss=0.01)) as tb:
        tb.impair.set(ImpairConfig(a_to_b=Impairment(rate_mbit=100)))
        print(tb.impair.stats()["a_to_b"]["dropped_loss"])

Direction names: "a" is the tasd side, "b" the peer side.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tools" / "impair" / "impair.c"
BINARY = ROOT / "build" / "tools" / "impair"
CFLAGS = ["-O2", "-Wall", "-Wextra"]


@dataclass(frozen=True)
class Impairment:
    """What happens to the frames of one direction; the defaults do nothing.

    Field names are the keys of impair's settings.  Delay and jitter never
    reorder; ``reorder`` holds a frame back until the next one has passed.
    ``queue_frames`` bounds the queue, which holds both delayed frames and the
    backlog of the rate limiter (``rate_mbit``, 0 = unlimited, counted on
    whole Ethernet frames).  ``ecn_threshold`` K > 0 sets CE on ECT frames
    that find K or more frames waiting for the rate limiter.
    """
    loss: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder: float = 0.0
    rate_mbit: float = 0.0
    queue_frames: int = 1000
    ecn_threshold: int = 0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                raise ValueError(f"{f.name} must be a number, not {v!r}")
            if f.type == "int" and v != int(v):
                raise ValueError(f"{f.name} must be an integer, not {v!r}")
            if v < 0:
                raise ValueError(f"{f.name} must not be negative (got {v!r})")
        for name in ("loss", "duplicate", "corrupt", "reorder"):
            if getattr(self, name) > 1:
                raise ValueError(f"{name} is a probability in [0, 1] (got {getattr(self, name)!r})")
        if self.queue_frames < 1:
            raise ValueError(f"queue_frames must be at least 1 (got {self.queue_frames!r})")

    def settings(self, prefix: str) -> list[str]:
        return [f"{prefix}.{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)]


@dataclass(frozen=True)
class ImpairConfig:
    """Both directions: a_to_b is tasd side -> peer side, b_to_a the reverse."""
    a_to_b: Impairment = field(default_factory=Impairment)
    b_to_a: Impairment = field(default_factory=Impairment)
    seed: int = 1

    def __post_init__(self):
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be an integer in [0, 2**64) (got {self.seed!r})")

    @classmethod
    def symmetric(cls, seed: int = 1, **kw) -> "ImpairConfig":
        imp = Impairment(**kw)
        return cls(a_to_b=imp, b_to_a=imp, seed=seed)

    def settings(self) -> list[str]:
        """The complete settings, as impair's command line and `set` take them."""
        return [f"seed={self.seed}", *self.a_to_b.settings("ab"), *self.b_to_a.settings("ba")]


def build(force: bool = False) -> Path:
    """Compile impair if the binary is missing or older than its source."""
    if not force and BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        raise RuntimeError(f"cannot build {SOURCE}: C compiler {cc!r} not found")
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    tmp = BINARY.with_name(f".{BINARY.name}.{os.getpid()}")  # concurrent builds: rename is atomic
    p = subprocess.run([cc, *CFLAGS, "-o", str(tmp), str(SOURCE)], capture_output=True, text=True)
    if p.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"building {SOURCE} failed:\n{p.stderr}")
    os.replace(tmp, BINARY)
    return BINARY


def _coerce(config) -> ImpairConfig:
    if config is None or config is True:
        return ImpairConfig()
    if isinstance(config, Impairment):
        return ImpairConfig(a_to_b=config, b_to_a=config)
    if isinstance(config, ImpairConfig):
        return config
    raise TypeError(f"expected ImpairConfig or Impairment, not {type(config).__name__}")


class ImpairBridge:
    """A running impair process bridging if_a and if_b inside namespace ns."""

    START_TIMEOUT = 10.0
    REQUEST_TIMEOUT = 5.0

    def __init__(self, testbed, ns: str, if_a: str, if_b: str, config=None):
        self.testbed, self.ns, self.if_a, self.if_b = testbed, ns, if_a, if_b
        self.config = _coerce(config)
        self.proc: subprocess.Popen | None = None
        self._ctl: socket.socket | None = None
        self._out = self._err = None
        self._lock = threading.Lock()
        self._last_stats: dict = {}

    # ---- lifecycle ----------------------------------------------------------
    def start(self) -> "ImpairBridge":
        binary = build()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._ctl = ours
        self._out, self._err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        try:
            self.proc = self.testbed.popen(
                self.ns, binary, "--if-a", self.if_a, "--if-b", self.if_b, "--ctl-fd", theirs.fileno(),
                *self.config.settings(), pass_fds=(theirs.fileno(),), stdout=self._out, stderr=self._err)
        finally:
            theirs.close()          # impair now holds the only copy: its exit hangs us up
        # impair serves requests only once its sockets are bound: a reply means forwarding
        self._request("ping", timeout=self.START_TIMEOUT)
        return self

    def stop(self) -> dict:
        """Stop impair; return its final counters (the last known if it died)."""
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.stats()
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
            with contextlib.suppress(ValueError, OSError):
                self._out.seek(0)
                final = json.loads(self._out.read().decode() or "null")
                if isinstance(final, dict):
                    self._last_stats = final
        for f in (self._ctl, self._out, self._err):
            if f is not None:
                f.close()
        self.proc = self._ctl = self._out = self._err = None
        return self._last_stats

    # ---- control --------------------------------------------------------------
    def set(self, config) -> dict:
        """Change the impairments; returns (impair's view of) the settings in
        force once every frame received from now on sees them."""
        config = _coerce(config)
        reply = self._request("set " + " ".join(config.settings()))
        self.config = config
        return reply["config"]

    def stats(self) -> dict:
        """Counters per direction: {"a_to_b": {...}, "b_to_a": {...}}."""
        reply = self._request("stats")
        self._last_stats = {k: reply[k] for k in ("a_to_b", "b_to_a")}
        return self._last_stats

    def _request(self, text: str, timeout: float | None = None) -> dict:
        if self._ctl is None:
            raise RuntimeError("impair is not running")
        error = None
        with self._lock:
            self._ctl.settimeout(timeout or self.REQUEST_TIMEOUT)
            try:
                self._ctl.send(text.encode())
                data = self._ctl.recv(65536)
            except OSError as e:    # a hang-up is EPIPE/ECONNRESET; a hang is a timeout
                data, error = b"", e
        if not data:
            try:                    # a hang-up: wait for it to be gone and say why
                status = self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"impair: no reply to {text.split()[0]!r} ({error}){self._stderr()}")
            raise RuntimeError(f"impair exited with status {status}{self._stderr()}")
        reply = json.loads(data)
        if not reply.get("ok"):
            raise ValueError(f"impair: {reply.get('error')}")
        return reply

    def _stderr(self) -> str:
        with contextlib.suppress(Exception):
            self._err.seek(0)
            text = self._err.read().decode(errors="replace").strip()
            return f": {text}" if text else ""
        return ""


def main(argv=None) -> int:
    """``python -m tools.impair [build]``: build impair and print its path."""
    argv = sys.argv[1:] if argv is None else argv
    if argv not in ([], ["build"]):
        print(main.__doc__, file=sys.stderr)
        return 2
    print(build(force=bool(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

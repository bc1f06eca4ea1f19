"""systemd's notification protocol (sd_notify(3)), without libsystemd.

When systemd starts tasd as a Type=notify service it passes NOTIFY_SOCKET, a
datagram socket (a path, or an abstract name written with a leading "@"), and
with WatchdogSec= also WATCHDOG_USEC (and WATCHDOG_PID, the process meant).
Each message is newline-separated KEY=VALUE lines in one datagram:

    READY=1                    start-up finished (tasd: workers poll, the XDP
                               program is attached, the control socket answers)
    STATUS=...                 one line that `systemctl status` shows
    RELOADING=1 + MONOTONIC_USEC=...   a reload began; READY=1 when done
    STOPPING=1                 shutting down
    WATCHDOG=1                 still alive; systemd restarts the service when
                               these stop for WatchdogSec

Outside systemd (no NOTIFY_SOCKET) every call does nothing.
"""
from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("tasd")


class Notifier:
    def __init__(self, environ=None):
        env = os.environ if environ is None else environ
        self.address: str | None = None
        path = env.get("NOTIFY_SOCKET") or None
        if path is not None and (path.startswith("/") or path.startswith("@")):
            self.address = "\0" + path[1:] if path.startswith("@") else path
        elif path is not None:
            log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract name: not notifying systemd", path)
        self.watchdog_s: float | None = None
        usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
        if usec and (not pid or pid == str(os.getpid())):
            try:
                self.watchdog_s = int(usec) / 1e6 or None
            except ValueError:
                log.warning("WATCHDOG_USEC=%r is not a number: no watchdog pings", usec)
        if environ is None:  # not for our workers and other children
            for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(key, None)
        self._sock: socket.socket | None = None
        self.failed = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields) -> bool:
        """Send KEY=VALUE lines (keys upper-cased: ready=1 is READY=1);
        False if not under systemd or the message could not go."""
        if self.address is None:
            return False
        msg = "\n".join(f"{k.upper()}={str(v).replace(chr(10), ' ')}" for k, v in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(msg.encode(), self.address)
            return True
        except OSError as e:
            self.failed += 1
            if self.failed <= 3:
                log.warning("cannot notify systemd at %s: %s", self.address.replace("\0", "@"), e.strerror or e)
            return False

    def ready(self, status: str) -> bool:
        return self.notify(ready=1, status=status)

    def reloading(self) -> bool:
        return self.notify(reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify(stopping=1, status=status)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# syslog priorities of logging's levels, for the journal's "<N>" line prefix
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """Lines for a stderr that systemd connected to the journal: the level as
    a "<N>" prefix (SyslogLevelPrefix=, on by default), so `journalctl -p`
    filters them; no "tasd:" (the journal names the unit)."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).splitlines() or [""])


def stderr_is_journal(environ=None) -> bool:
    """True if stderr is the journal stream systemd passed (JOURNAL_STREAM is
    its device:inode), not a terminal or file the service redirected to."""
    stream = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in stream.split(":"))
        st = os.fstat(2)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def log_handler() -> logging.Handler:
    """tasd's log handler: stderr, with the journal's priorities when that is
    where stderr goes."""
    handler = logging.StreamHandler()
    handler.setFormatter(JournalFormatter("%(message)s") if stderr_is_journal()
                         else logging.Formatter("tasd: %(levelname)s: %(message)s"))
    return handler

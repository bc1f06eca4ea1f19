"""The one exception of the TCP layer: an API call that cannot be honoured."""

from __future__ import annotations


class TcpError(Exception):
    """An app request refused with a POSIX errno name ("EADDRINUSE", "EINVAL",
    "EBADF", "EADDRNOTAVAIL"), which the control layer hands back to libtas."""

    def __init__(self, errno: str, detail: str = "") -> None:
        super().__init__(f"{errno}: {detail}" if detail else errno)
        self.errno = errno

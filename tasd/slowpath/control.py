"""tasd's control socket: one JSON object per line each way.

    request:  {"cmd": "stats", ...arguments}
    response: {"ok": true, ...result}  or  {"ok": false, "error": "one line"}

The socket is a Unix stream socket, mode 0660, in a directory only root can
write; tasctl is its client.  A handler that needs to know who asks (its
credentials) or to outlive the request (tasctl capture lasts as long as its
connection) calls current_client().
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

log = logging.getLogger("tasd")

Handler = Callable[[dict], Awaitable[dict]]
MAX_REQUEST = 64 * 1024


class CommandError(Exception):
    """A request that cannot be served; its message goes back to the client."""


@dataclass
class Client:
    """The process at the other end of one control connection (SO_PEERCRED:
    None where the kernel did not say)."""
    pid: int | None
    uid: int | None
    gid: int | None
    _on_close: list[Callable[[], None]] = field(default_factory=list)

    def on_close(self, fn: Callable[[], None]) -> None:
        """Call fn when the connection closes, however the client ended."""
        self._on_close.append(fn)


_client: contextvars.ContextVar[Client | None] = contextvars.ContextVar("tasd_control_client", default=None)


def current_client() -> Client | None:
    """The client whose request is being served (in a handler)."""
    return _client.get()


def _peer(writer: asyncio.StreamWriter) -> Client:
    try:
        pid, uid, gid = struct.unpack("3i", writer.get_extra_info("socket").getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        return Client(pid, uid, gid)
    except (OSError, AttributeError, struct.error):
        return Client(None, None, None)


class ControlServer:
    def __init__(self, path: str, handlers: dict[str, Handler]):
        self.path = Path(path)
        self.handlers = handlers
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if await _in_use(self.path):
                raise OSError(f"control socket {self.path} is in use by another tasd")
            self.path.unlink()
        old = os.umask(0o117)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_REQUEST)
        finally:
            os.umask(old)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _peer(writer)
        _client.set(client)  # this connection's task only
        self._writers.add(writer)
        try:
            while line := await reader.readline():
                writer.write((json.dumps(await self._dispatch(line)) + "\n").encode())
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            for fn in client._on_close:
                try:
                    fn()
                except Exception:
                    log.exception("control connection cleanup failed")
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _dispatch(self, line: bytes) -> dict:
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise CommandError('a request is a JSON object with a "cmd" string')
            handler = self.handlers.get(req["cmd"])
            if handler is None:
                raise CommandError(f"unknown command {req['cmd']!r} (known: {', '.join(sorted(self.handlers))})")
            return {"ok": True, **await handler(req)}
        except ValueError as e:  # bad JSON, or not UTF-8
            return {"ok": False, "error": f"bad request: {e}"}
        except CommandError as e:
            return {"ok": False, "error": str(e)}
        except Exception as e:  # a bug in a handler must not take the daemon down
            log.exception("control command failed")
            return {"ok": False, "error": f"internal error: {e}"}

    async def close(self) -> None:
        """Stop serving and remove the socket (only if it is ours)."""
        if self._server is None:
            return
        self._server.close()
        for w in list(self._writers):  # connections that last (tasctl capture) end with tasd
            w.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


async def _in_use(path: Path) -> bool:
    try:
        _, w = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 1.0)
    except (OSError, asyncio.TimeoutError):
        return False
    w.close()
    return True

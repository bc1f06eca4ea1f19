"""tasd-run: run an unmodified program on tasd, the way `onload CMD` does.

    tasd-run [--socket PATH] [--fallback kernel|error] CMD [ARGS...]

It preloads libtas (libtas-preload.so, shipped in this package) so that the
program's TCP sockets on tasd's address go through tasd (docs/sockets.md).
tasd must be running: when its app socket does not answer, tasd-run says so and
exits 1, or with `--fallback kernel` runs the program on the kernel's TCP.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from tasd.config import BY_KEY

DEFAULT_SOCKET = BY_KEY["app_socket"].default  # tasd's default, from its configuration
PRELOAD = Path(__file__).resolve().parent / "lib" / "libtas-preload.so"


def tasd_answers(path: str) -> str | None:
    """None if tasd's app socket accepts a connection, else why not."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.settimeout(2)
            s.connect(path)
        return None
    except OSError as e:
        return e.strerror or str(e)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tasd-run", description="Run a program with its TCP on tasd.")
    ap.add_argument("--socket", default=os.environ.get("TASD_APP_SOCKET", DEFAULT_SOCKET),
                    help=f"tasd's app socket (default: $TASD_APP_SOCKET, else {DEFAULT_SOCKET})")
    ap.add_argument("--fallback", choices=("error", "kernel"), default=os.environ.get("TASD_FALLBACK", "error"),
                    help="without tasd: fail (error, the default) or use the kernel's TCP (kernel)")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the program and its arguments")
    args = ap.parse_args(argv)
    if not args.command:
        ap.error("no command given")
    if not PRELOAD.exists():
        print(f"tasd-run: {PRELOAD} is missing: build tasd first (pip install .)", file=sys.stderr)
        return 1
    env = dict(os.environ, TASD_APP_SOCKET=args.socket, TASD_FALLBACK=args.fallback)
    why = tasd_answers(args.socket)
    if why is not None:
        if args.fallback == "error":
            print(f"tasd-run: tasd does not answer at {args.socket}: {why} (start tasd, or use --fallback kernel)",
                  file=sys.stderr)
            return 1
        print(f"tasd-run: tasd does not answer at {args.socket}: {why}; running on the kernel's TCP",
              file=sys.stderr)
    else:
        preload = env.get("LD_PRELOAD", "")
        env["LD_PRELOAD"] = f"{PRELOAD} {preload}".strip()
    try:
        os.execvpe(args.command[0], args.command, env)
    except OSError as e:
        print(f"tasd-run: {args.command[0]}: {e.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())

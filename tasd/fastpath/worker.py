"""Fastpath worker process: ``python -m tasd.fastpath.worker`` (started by tasd).

Python only launches and tears down: it pins the process to its core, maps
the worker region, opens the device on the file descriptors tasd passed
down, and enters the C loop, which returns only to stop.  A failure before
the loop is written into the region (state FAILED and a one-line reason)
for the slowpath to report.
"""
from __future__ import annotations

import argparse
import os
import sys

from .binding import Device, FastpathError, Worker, WorkerRegion, worker_process_init


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="tasd-worker")
    ap.add_argument("--region-fd", type=int, required=True)
    ap.add_argument("--sp2fp-efd", type=int, required=True)
    ap.add_argument("--fp2sp-efd", type=int, required=True)
    ap.add_argument("--sock-fd", type=int, default=-1, help="the slowpath sends app fds here")
    ap.add_argument("--doorbell-efd", type=int, default=-1, help="apps signal this after writing to us")
    ap.add_argument("--core", type=int, default=None)
    ap.add_argument("--parent-pid", type=int, default=0, help="stop if this process is no longer our parent")
    ap.add_argument("--backend", choices=["xdp", "tap"], required=True)
    ap.add_argument("--xsk-fd", type=int)
    ap.add_argument("--umem-fd", type=int)
    ap.add_argument("--shared-fd", type=int)
    ap.add_argument("--tap-fd", type=int)
    ap.add_argument("--capture", default=None, help="write every frame to this pcap file")
    return ap.parse_args(argv)


def open_device(args, region: WorkerRegion) -> Device:
    shm = region.shm
    if args.backend == "xdp":
        dev = Device.xdp(args.xsk_fd, args.umem_fd, args.shared_fd, shm.worker_id, shm.mtu)
    else:
        dev = Device.tap(args.tap_fd, shm.mtu)
    # always wrapped: tasctl capture switches the writer on and off as we run
    return dev.capture(args.capture)


def main(argv=None) -> int:
    args = parse_args(argv)
    region = WorkerRegion.attach(args.region_fd)
    dev = worker = None
    try:
        worker_process_init(args.parent_pid)
        if args.core is not None:
            os.sched_setaffinity(0, {args.core})
        dev = open_device(args, region)
        worker = Worker(region, dev, args.sp2fp_efd, args.fp2sp_efd, args.sock_fd, args.doorbell_efd)
        if not worker.run():
            print(f"tasd worker: {region.error}", file=sys.stderr)
            return 1
        return 0
    except (FastpathError, OSError) as e:
        region.set_error(str(e))
        print(f"tasd worker: {e}", file=sys.stderr)
        return 1
    finally:
        if worker is not None:
            worker.close()
        if dev is not None:
            dev.close()


if __name__ == "__main__":
    sys.exit(main())

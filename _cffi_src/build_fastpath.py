"""cffi build (API mode, out of line) of tasd.fastpath._fastpath.

This file only names the C sources and headers; all C lives in
tasd/fastpath/csrc and include/tasd.  Not shipped in the package.
"""
from pathlib import Path
import sys

from cffi import FFI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdef import cdef_from_header  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CSRC = "tasd/fastpath/csrc"
SOURCES = ["csum.c", "dev.c", "dev_mem.c", "dev_tap.c", "dev_xdp.c", "dev_pcap.c", "rx.c", "worker.c", "xdp_prog.c",
           "flow.c", "tcp_in.c", "tcp_out.c", "cc_newreno.c", "app.c"]
HEADERS = [ROOT / "include/tasd/abi.h", ROOT / "include/tasd/ring.h", ROOT / CSRC / "fastpath.h"]

ffibuilder = FFI()
for h in HEADERS:
    ffibuilder.cdef(cdef_from_header(h))
ffibuilder.set_source(
    "tasd.fastpath._fastpath",
    '#include "tasd/abi.h"\n#include "tasd/ring.h"\n#include "fastpath.h"\n',
    sources=[f"{CSRC}/{s}" for s in SOURCES],  # relative to the project root, as setuptools wants
    include_dirs=[str(ROOT / "include"), str(ROOT / CSRC)],
    libraries=["xdp", "bpf", "pcap"],  # pcap: the capture filter (dev_pcap.c)
    extra_compile_args=["-O2", "-g", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                        "-fno-strict-aliasing"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)

"""Build steps beyond pure Python: the cffi fastpath module (cffi_modules),
the BPF objects (clang -target bpf) and the libtas shared libraries (make).
Both extra artefacts land next to the package sources on an editable
install and in the build tree otherwise."""
import os
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
BPF_SOURCES = ["tasd/fastpath/bpf/tasd_xdp.bpf.c", "tasd/fastpath/bpf/tasd_tap.bpf.c"]


def multiarch_include() -> str:
    try:
        triplet = subprocess.check_output(["gcc", "-print-multiarch"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        triplet = ""
    return f"/usr/include/{triplet or 'x86_64-linux-gnu'}"


class BuildNative(build_ext):
    def run(self):
        super().run()
        out = ROOT if self.inplace else Path(self.build_lib).resolve()
        for src in BPF_SOURCES:
            obj = out / src.replace(".bpf.c", ".bpf.o")
            obj.parent.mkdir(parents=True, exist_ok=True)
            self.spawn(["clang", "-O2", "-g", "-Wall", "-target", "bpf", f"-I{ROOT / 'include'}",
                        f"-I{multiarch_include()}", "-c", str(ROOT / src), "-o", str(obj)])
        libdir = out / "tasd" / "lib"
        libdir.mkdir(parents=True, exist_ok=True)
        self.spawn(["make", "-s", "-C", str(ROOT / "libtas"), f"OUT={libdir}", f"-j{os.cpu_count() or 1}"])
        # the benchmarks' load generator (tools/bench.py)
        self.spawn(["gcc", "-O2", "-Wall", "-Werror", "-o", str(libdir / "rpcbench"), str(ROOT / "tools/rpcbench.c")])


setup(cffi_modules=["_cffi_src/build_fastpath.py:ffibuilder", "_cffi_src/build_libtas.py:ffibuilder"],
      cmdclass={"build_ext": BuildNative})

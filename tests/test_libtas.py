"""libtas builds as a shared library that a C program links and calls."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import tasd
from tasd.fastpath.binding import lib

ROOT = Path(__file__).resolve().parent.parent
LIBDIR = Path(tasd.__file__).resolve().parent / "lib"


def test_c_program_links_libtas(tmp_path):
    src = tmp_path / "t.c"
    src.write_text('#include <stdio.h>\n#include "tas.h"\n'
                   'int main(void) { printf("%s %u\\n", tas_version(), tas_abi_version()); return 0; }\n')
    exe = tmp_path / "t"
    subprocess.run(["gcc", "-Wall", "-Werror", f"-I{ROOT / 'libtas/include'}", str(src), f"-L{LIBDIR}", "-ltas",
                    f"-Wl,-rpath,{LIBDIR}", "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    assert out == [tasd.__version__, str(lib.TAS_ABI_VERSION)]


def test_libtas_exports_only_its_api():
    """Every exported symbol is declared in tas.h, and nothing else leaks."""
    syms = subprocess.run(["nm", "-D", "--defined-only", str(LIBDIR / "libtas.so")], capture_output=True,
                          text=True, check=True).stdout
    exported = {line.split()[-1] for line in syms.splitlines() if " T " in line}
    header = (ROOT / "libtas/include/tas.h").read_text()
    declared = set(re.findall(r"TAS_EXPORT [^;]*?\b(tas_\w+)\(", header))
    assert exported == declared and "tas_send" in exported

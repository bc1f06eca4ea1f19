"""cffi build (API mode, out of line) of tasd.libtas._libtas: the Python
binding of libtas, compiled from libtas's own sources.  Not shipped."""
from pathlib import Path
import sys

from cffi import FFI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdef import cdef_from_header  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

ffibuilder = FFI()
ffibuilder.cdef(cdef_from_header(ROOT / "libtas/include/tas.h").replace("TAS_EXPORT ", ""))
ffibuilder.set_source(
    "tasd.libtas._libtas",
    '#include "tas.h"\n',
    sources=["libtas/src/tas.c"],  # relative to the project root, as setuptools wants
    include_dirs=[str(ROOT / "include"), str(ROOT / "libtas/include")],
    extra_compile_args=["-O2", "-g", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)

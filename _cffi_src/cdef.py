"""Turn the project's C headers into text that cffi's cdef() accepts.

The headers are the single definition of every shared layout (see
include/tasd/abi.h); this reads them instead of restating them.  It keeps
declarations, integer #defines and enums, evaluates the few #if forms the
headers use (with TAS_CDEF defined and nothing else), drops _Static_assert
lines, and turns each `static inline` function into a prototype, so that
cffi's API mode compiles a wrapper that calls the real inline function
(a body either ends on the signature's line or with a line holding only
`}`).
"""
from __future__ import annotations

import re
from pathlib import Path

_DEFINE_INT = re.compile(r"#define\s+(\w+)\s+(0x[0-9a-fA-F]+|\d+)[uUlL]*\s*(/\*.*\*/)?\s*$")
_DEFINED = re.compile(r"defined\s*\(?\s*(\w+)\s*\)?")
CDEF_DEFINES = {"TAS_CDEF"}


def _truth(expr: str) -> bool:
    py = _DEFINED.sub(lambda m: "True" if m.group(1) in CDEF_DEFINES else "False", expr)
    py = py.replace("&&", " and ").replace("||", " or ").replace("!", " not ")
    return bool(eval(py, {"__builtins__": {}}, {}))  # the headers are ours


def cdef_from_header(path: Path) -> str:
    out: list[str] = []
    live = [True]          # stack: is the current #if branch kept?
    taken = [True]         # stack: has a branch of this #if been kept?
    lines = iter(path.read_text().splitlines())
    for line in lines:
        s = line.strip()
        if s.startswith("#"):
            word = s[1:].split(None, 1)
            kw, rest = (word[0], word[1] if len(word) > 1 else "") if word else ("", "")
            if kw in ("if", "ifdef", "ifndef"):
                if kw == "ifdef":
                    cond = rest.split()[0] in CDEF_DEFINES
                elif kw == "ifndef":
                    cond = rest.split()[0] not in CDEF_DEFINES
                else:
                    cond = _truth(rest)
                live.append(live[-1] and cond)
                taken.append(cond)
            elif kw == "else":
                live[-1] = live[-2] and not taken[-1]
                taken[-1] = True
            elif kw == "endif":
                live.pop()
                taken.pop()
            elif live[-1] and kw == "define" and _DEFINE_INT.match(s):
                out.append(s.split("/*")[0].rstrip())
            continue
        if not live[-1] or s.startswith("_Static_assert"):
            continue
        if s.startswith("static inline"):
            sig = s
            while "{" not in sig:
                sig += " " + next(lines).strip()
            out.append(sig[len("static inline"):sig.index("{")].strip() + ";")
            if not sig.rstrip().endswith("}"):  # a body on lines of its own
                for body in lines:
                    if body.rstrip() == "}":
                        break
            continue
        out.append(line)
    return "\n".join(out)

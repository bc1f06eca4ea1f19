"""The README's demo command keeps working: tools/demo.py end to end."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import _require_root


@pytest.mark.parametrize("args", [[], ["--backend", "tap", "--cores", "0,1"]], ids=["xdp", "tap-2-workers"])
def test_demo_runs_ok(args):
    _require_root()
    r = subprocess.run([sys.executable, "-m", "tools.demo", *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.rstrip().endswith("demo OK"), r.stdout[-3000:] + r.stderr[-3000:]
    assert "hello, tasd" in r.stdout and "'ok': 20" in r.stdout

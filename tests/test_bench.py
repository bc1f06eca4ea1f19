"""The benchmark's quick mode as a smoke test: every workload runs on both
stacks and gives sane numbers (not that tasd is fast: that is the report's)."""
from __future__ import annotations

import json
import subprocess
import sys

from tools.bench import WORKLOADS


def test_quick_benchmark_gives_sane_numbers_for_every_workload(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tools.bench", "--quick", "--out", tmp_path], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    rows = data["results"]
    for w in WORKLOADS:
        stacks = {row["stack"] for row in rows if row["workload"] == w}
        assert {"linux", "tasd"} <= stacks, (w, stacks)
        assert (tmp_path / f"{w}.png").stat().st_size > 1000
    assert any(row["stack"] == "tasd-both" for row in rows)
    for row in rows:
        positive = [k for k in ("rps", "gbit_s", "cps", "cpu_s_per_mrpc", "set_rps", "get_rps", "ops_s") if k in row]
        assert positive and all(row[k] > 0 for k in positive), row
        if "p50_us" in row:
            assert 0 < row["p50_us"] <= row["p99_us"] <= row["p9999_us"] < 1_000_000, row
        if row["workload"] == "cpu":
            assert abs(row["rps"] - row["config"]["offered_rps"]) < 0.05 * row["config"]["offered_rps"], row
    assert all(r["ratios"] for r in data["ratios"])
    md = (tmp_path / "results.md").read_text()
    assert "| config | stack | metric | Linux | tasd | ratio |" in md and "core 0" in md

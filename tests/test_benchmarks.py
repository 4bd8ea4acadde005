"""The speed and scale-out benchmarks run end to end on a tiny model (figures are not checked:
they belong to docs/performance.md and docs/scale-out.md; these tests keep the scripts working)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def run_script(name, *args):
    proc = subprocess.run([sys.executable, str(BENCH / name), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_search_speed_runs(tiny_model_path):
    out = run_script("search_speed.py", "--model", tiny_model_path, "--factor", 8, "--batches", 1, 2,
                     "--steps", 1, "--serial-tiles", 2)
    assert "batched throughput" in out


def test_generator_speed_counts_and_times_a_search_step(tiny_model_path):
    out = run_script("generator_speed.py", "--model", tiny_model_path, "--factor", 8, "--batches", 1,
                     "--steps", 1, "--no-train")
    assert "GFLOP per tile (counted)" in out and "% fp32 peak" in out


def test_scale_out_compares_in_process_with_a_local_cluster(tiny_model_path):
    """Real `rls super-resolve` runs (in-process, 2 shards at once, a 2-worker LocalCluster) on
    simulated fields: the same SR pixels, and a projection that follows from the measured cost."""
    pytest.importorskip("distributed", reason="the Dask extra is not installed: pip install -e '.[dask]'")
    bench = load_script(BENCH / "scale_out.py", "scale_out")
    f = bench.main(["--model", str(tiny_model_path), "--fields", "2", "--size", "64", "--factor", "8",
                    "--steps", "2", "--workers", "2", "--screen-fields", "10", "--screen-size", "128"])
    assert f["fields"] == 2 and f["identical"] and f["speedup"] > 0 and f["machine_speedup"] > 0
    # 128 px at x8 = 16 LR px; tiles of 4 LR px with the default overlap 1 (stride 3): 5 x 5
    assert f["screen_tiles_per_field"] == 25 and f["screen_steps"] == 500
    hours = f["CPU thread (measured here), hours"]
    assert hours == pytest.approx(f["ms_per_tile_step"] / 1000 * 25 * 500 * 10 / 3600)

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


def test_generator_speed_times_both_layer_backwards_and_the_convolution_floor(tiny_model_path, monkeypatch):
    """`--backward both` gives one row per layer backward path at each batch; `--conv-floor`
    times the convolutions alone at the largest batch."""
    from rls_core import generator

    monkeypatch.setattr(generator, "FROZEN_MIN_ELEMENTS", 0)  # the tiny model's layers are all small
    bench = load_script(BENCH / "generator_speed.py", "generator_speed")
    out = bench.main(["--model", str(tiny_model_path), "--preset", "tiny", "--factor", "8", "--batches", "1", "2",
                      "--steps", "2", "--no-train", "--backward", "both", "--conv-floor"])
    for rec in out["models"]:
        rows = rec["search"]
        assert [(r["batch"], r["backward"]) for r in rows] == [(1, "frozen"), (1, "reference"),
                                                              (2, "frozen"), (2, "reference")]
        assert all(r["ms_per_tile_step"] > 0 and r["setup_s"] >= 0 for r in rows)
        floor = rec["conv_floor"]
        assert floor["batch"] == 2
        assert floor["ms_per_tile_step"] > 0 and floor["frac_fp32_peak_if_free"] > 0


def test_search_step_ops_times_the_operations_of_a_step(tiny_model_path):
    """Every aten operation of the steps is timed and grouped; the per-search setup (one noise
    draw per tile and layer) is taken off with a 1-step search."""
    bench = load_script(BENCH / "search_step_ops.py", "search_step_ops")
    out = bench.main(["--model", str(tiny_model_path), "--factor", "8", "--batch", "2", "--steps", "2",
                      "--top", "3", "--backward", "reference"])
    assert out["step_s"] > 0 and out["ops_s"] > 0
    names = {o["op"] for o in out["ops"]}
    assert {"convolution", "leaky_relu_backward", "addcmul"} <= names
    randn = [o for o in out["ops"] if o["op"] == "randn"]  # the noise maps: drawn once per search
    assert all(abs(o["calls_per_step"]) < 1e-9 for o in randn)
    assert any(k.endswith(" px") for k in out["by_resolution_s"])


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


def test_prior_quality_reads_the_floor_off_as_many_draws_as_the_generated_side(tiny_model_path, tmp_path):
    """--draws K measures K generated and K real-vs-real sets (other simulated fields) and
    reports the ratio of their means, as the CSV records it."""
    import csv

    out = run_script("prior_quality.py", "--model", tiny_model_path, "--n", 8, "--draws", 2, "--crops-per-field", 2,
                     "--out", tmp_path)
    assert "real vs real, 2 draws" in out and "generated / floor (means of the draws)" in out
    assert "2 fields per condition, <= 2 crops each" in out  # 4 crops per condition, 2 per field
    with open(tmp_path / "prior_quality.csv", newline="") as f:
        rows = {(r["set"], r["key"]): float(r["value"]) for r in csv.DictReader(f)}
    gen = [rows[(f"generated draw {k}", "mean")] for k in range(2)]
    flo = [rows[(f"floor draw {k}", "mean")] for k in range(2)]
    assert flo[0] == pytest.approx(rows[("real, other fields", "mean")], rel=1e-4)
    assert flo[0] != flo[1]  # another set of fields, not the same one twice
    assert rows[("generated / floor", "ratio of means")] == pytest.approx(sum(gen) / sum(flo), rel=1e-3)


def test_fakes_training_pairs_the_arms_by_name_seed_by_seed(capsys):
    """The shared-vs-fresh summary compares each seed's shared run with the same seed's fresh
    run (whatever order the arms ran in) and counts the seeds where shared is lower."""
    import argparse

    ft = load_script(BENCH / "fakes_training.py", "fakes_training")
    assert ft.parse_seeds("0-2,7") == [0, 1, 2, 7]

    def result(fakes, seed, swd):  # 8 iterations, measured at 2, 4, 6, 8; only 6 and 8 are "late"
        log = [{"iteration": i, "D": 1.0, "G": 0.5, "s_per_iter": 0.1} for i in range(1, 9)]
        return {"fakes": fakes, "seed": seed, "log": log,
                "metrics": [(2, 900.0, 900.0), (4, 50.0, 900.0), (6, swd, swd), (8, swd, swd + 10)]}

    results = {("shared", 0): result("shared", 0, 100.0), ("fresh", 0): result("fresh", 0, 200.0),
               ("shared", 1): result("shared", 1, 300.0), ("fresh", 1): result("fresh", 1, 250.0)}
    args = argparse.Namespace(preset="tiny", resolution=64, iters=8, batch=16, device="cpu")
    rows = ft.report(results, ["fresh", "shared"], [0, 1], args)
    by = {(r["fakes"], r["seed"]): r for r in rows}
    assert by["shared", 0]["swd_G"] == 100.0 and by["shared", 0]["swd_ema"] == 105.0
    assert by["fresh", 1]["best"] == 50.0  # the best is over all measurements, early ones too
    out = capsys.readouterr().out
    assert "swd_G: fresh 225.0, shared 200.0; shared - fresh per seed -25.0" in out
    assert "shared lower in 1 of 2 seeds" in out

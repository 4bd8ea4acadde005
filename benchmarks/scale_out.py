"""Scale-out: fields per minute in-process (one thread) vs a Dask LocalCluster, and what a screen costs.

    python benchmarks/scale_out.py                         # shipped default model, 6 fields, 2 workers
    python benchmarks/scale_out.py --fields 8 --steps 50 --workers 2
    python benchmarks/scale_out.py --gpu-ms-per-tile-step 0.9   # add a GPU row (search_speed.py on the GPU)

All runs are the command users run (`rls super-resolve`, as a subprocess, start-up and model
loading included) on the same simulated LR fields (examples/make_examples.py: `rls simulate`,
then the search's bicubic operator):
  1. in-process, torch on one thread (OMP_NUM_THREADS=1);
  2. `--shard i/N` for i = 1..N at the same time: a job array on this machine, N processes of
     one thread, no Dask. What N processes gain here is the machine's own limit (memory
     bandwidth and shared caches can keep it well under N even with N free cores);
  3. `--cluster local --workers N`: N Dask worker processes of one thread each.
Run 3 against run 2 is the Dask engine's overhead; run 2 against run 1 is what the machine
gives. The SR pixels of runs 1 and 3 must be the same bits (docs/reproducibility.md): checked.

Then a projection: the per-tile-step cost measured in run 1 (seconds of the searches over
tiles x steps, from summary.csv) times the tiles of one screen field at the method's default
steps gives hours for a screen on N such workers. A GPU row is printed only from a measured
per-tile-step figure (--gpu-ms-per-tile-step); next to it, a floor from FLOPs: the search step's
counted FLOPs at a datasheet peak (--gpu-peak-tflops) -- a bound, not a measurement.
Figures, not assertions: docs/scale-out.md records them.
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "examples"), str(ROOT)]


def make_fields(folder: Path, assay: str, n: int, size: int, factor: int, seed: int) -> Path:
    """n simulated fields (both conditions) as LR channel TIFFs, as the examples are made."""
    from make_examples import downscale_folder
    from rls_core.simulate import write_dataset

    hr, lr = folder / "hr", folder / "lr"
    write_dataset(hr, assay, None, max(1, n // 2), seed, size=size, progress=False)
    downscale_folder(hr, lr, factor)
    return lr


def run_cli(inputs: List[str], out: Path, common: List[str], extras: List[List[str]]) -> float:
    """Wall seconds of `rls super-resolve` processes started together, one per entry of
    `extras` (its extra arguments); stops the benchmark if one fails."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmds = [[sys.executable, "-m", "rls_core", "super-resolve", *inputs, "-o", str(out), *common, *extra, "-q"]
            for extra in extras]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    results = [(p, *p.communicate()) for p in procs]
    wall = time.perf_counter() - t0
    for (p, _, err), extra in zip(results, extras):
        if p.returncode != 0:
            sys.exit(f"error: rls super-resolve {' '.join(extra)} failed (exit {p.returncode}):\n{err[-2000:]}")
    return wall


def read_summary(out: Path) -> List[Dict[str, str]]:
    """The rows of every summary*.csv in `out` (one per shard)."""
    rows: List[Dict[str, str]] = []
    for path in sorted(out.glob("summary*.csv")):
        with open(path, newline="") as f:
            rows += list(csv.DictReader(f))
    return rows


def same_outputs(a: Path, b: Path) -> bool:
    """The same SR pixels, bit for bit (the files' metadata differ: they record the timing)."""
    import tifffile

    names = sorted(p.name for p in a.glob("*_sr.tif"))
    return bool(names) and names == sorted(p.name for p in b.glob("*_sr.tif")) and \
        all(np.array_equal(tifffile.imread(a / n), tifffile.imread(b / n)) for n in names)


def screen_tiles(model, size: int, factor: int) -> int:
    """Tiles of one size x size HR field at this factor, with the default overlap (as the search tiles it)."""
    from rls_core.api import default_overlap
    from rls_core.tiling import make_grid

    tile = model.resolution // factor
    lr = -(-size // factor)
    return len(make_grid((lr, lr), tile, factor, default_overlap(tile)).positions)


def flops_per_tile_step(model, method: str, factor: int) -> float:
    """Counted FLOPs of one search step per tile (generator_speed.py's count, at batch 8)."""
    import torch
    from generator_speed import search_step_flops
    from rls_core.operators import make_operator
    from rls_core.search import make_search

    t = model.resolution // factor
    y = torch.rand(8, len(model.channel_names), t, t) * 0.5
    return search_step_flops(make_search(method, model, make_operator("bicubic", factor)), y)


def hours(seconds_per_tile_step: float, tiles: int, steps: int, fields: int, workers: int) -> float:
    return seconds_per_tile_step * tiles * steps * fields / workers / 3600


def main(argv=None) -> Dict[str, float]:
    from rls_core.methods import get_method

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="translocation", help="model name or bundle (default: translocation)")
    ap.add_argument("--assay", default="translocation", choices=["translocation", "golgi"],
                    help="which simulated fields to make (default: translocation)")
    ap.add_argument("--fields", type=int, default=6, help="fields to super-resolve (default: 6)")
    ap.add_argument("--size", type=int, default=512, help="HR field size in px (default: 512)")
    ap.add_argument("--factor", type=int, default=16)
    ap.add_argument("--method", default="rls")
    ap.add_argument("--steps", type=int, default=30, help="search steps per tile in the timed runs (default: 30)")
    ap.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default: 2)")
    ap.add_argument("--seed", type=int, default=4242, help="simulation seed of the fields")
    ap.add_argument("--screen-fields", type=int, default=10000, help="fields of the projected screen")
    ap.add_argument("--screen-size", type=int, default=1000, help="HR px per side of a screen field")
    ap.add_argument("--screen-workers", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--gpu-ms-per-tile-step", type=float, default=None,
                    help="measured on a GPU (benchmarks/search_speed.py --device cuda, default batch)")
    ap.add_argument("--gpu-peak-tflops", type=float, default=67.0,
                    help="datasheet fp32 peak for the FLOP floor (default: 67, H100 SXM)")
    args = ap.parse_args(argv)

    from rls_core.model import load_model

    model = load_model(args.model, "cpu")
    common = ["--model", args.model, "--factor", str(args.factor), "--method", args.method,
              "--steps", str(args.steps)]
    with tempfile.TemporaryDirectory(prefix="rls_scale_out_") as tmp:
        tmp = Path(tmp)
        lr = make_fields(tmp, args.assay, args.fields, args.size, args.factor, args.seed)
        inputs = sorted(str(p) for p in lr.glob("*.tif"))
        print(f"{len(inputs)} LR images ({args.size // args.factor} px) of {args.assay}, model {model.name}, "
              f"{args.method} x{args.factor}, {args.steps} steps; {os.cpu_count()} CPU cores")
        k = args.workers
        wall_1 = run_cli(inputs, tmp / "inproc", common, [[]])
        wall_s = run_cli(inputs, tmp / "shards", common, [["--shard", f"{i}/{k}"] for i in range(1, k + 1)])
        wall_n = run_cli(inputs, tmp / "dask", common, [["--cluster", "local", "--workers", str(k)]])
        rows = read_summary(tmp / "inproc")
        n = len(rows)
        every = rows + read_summary(tmp / "shards") + read_summary(tmp / "dask")
        if len(every) != 3 * n or not all(r["status"] in ("ok", "warning") for r in every):
            sys.exit("error: some fields failed or are missing; see the summaries")
        identical = same_outputs(tmp / "inproc", tmp / "dask")
        tile_steps = sum(int(r["tiles"]) for r in rows) * args.steps
        search_s = sum(float(r["seconds"]) for r in rows)
        search_s_k = sum(float(r["seconds"]) for r in read_summary(tmp / "shards"))
        search_n = sum(float(r["seconds"]) for r in read_summary(tmp / "dask"))

    fpm_1, fpm_s, fpm_n = 60 * n / wall_1, 60 * n / wall_s, 60 * n / wall_n
    # "search s": the fields' own seconds summed over workers; the rest of the wall time is
    # start-up (Python, model, cluster), reading and writing
    print(f"\n{'run':<34} {'wall s':>8} {'search s':>9} {'fields/min':>11}")
    print(f"{'in-process, 1 thread':<34} {wall_1:>8.1f} {search_s:>9.1f} {fpm_1:>11.2f}")
    print(f"{f'{k} shards at once (job array)':<34} {wall_s:>8.1f} {search_s_k:>9.1f} {fpm_s:>11.2f}")
    print(f"{f'LocalCluster, {k} x 1 thread':<34} {wall_n:>8.1f} {search_n:>9.1f} {fpm_n:>11.2f}")
    print(f"this machine with {k} processes: {fpm_s / fpm_1:.2f}x one (its limit; {k}x with {k} independent "
          f"cores); Dask: {fpm_n / fpm_1:.2f}x one = {fpm_n / fpm_s:.2f} of the job array; "
          f"SR pixels identical: {'yes' if identical else 'NO'}")

    per_tile_step = search_s / tile_steps
    steps = get_method(args.method).steps
    tiles = screen_tiles(model, args.screen_size, args.factor)
    gflop = flops_per_tile_step(model, args.method, args.factor) / 1e9
    print(f"\nmeasured search cost: {1000 * per_tile_step:.1f} ms per tile-step on one CPU thread "
          f"({search_s:.0f} s over {tile_steps} tile-steps); {gflop:.2f} GFLOP per tile-step")
    print(f"projection: {args.screen_fields} fields of {args.screen_size}x{args.screen_size} HR px = "
          f"{tiles} tiles each, x{args.factor}, {steps} steps ({args.method}'s default)")
    print(f"{'workers':<44} " + " ".join(f"{w:>10}" for w in args.screen_workers))
    figures = dict(fields=n, wall_inprocess_s=wall_1, wall_shards_s=wall_s, wall_cluster_s=wall_n,
                   speedup=fpm_n / fpm_1, machine_speedup=fpm_s / fpm_1,
                   identical=identical, ms_per_tile_step=1000 * per_tile_step, gflop_per_tile_step=gflop,
                   screen_tiles_per_field=tiles, screen_steps=steps)
    rows_out = [("CPU thread (measured here), hours", per_tile_step)]
    if args.gpu_ms_per_tile_step:
        rows_out.append(("GPU (--gpu-ms-per-tile-step), hours", args.gpu_ms_per_tile_step / 1000))
    rows_out.append((f"GPU floor at {args.gpu_peak_tflops:g} TFLOP/s (bound), hours",
                     gflop / (1000 * args.gpu_peak_tflops)))
    for label, s in rows_out:
        print(f"{label:<44} " + " ".join(f"{hours(s, tiles, steps, args.screen_fields, w):>10.1f}"
                                         for w in args.screen_workers))
        figures[label] = hours(s, tiles, steps, args.screen_fields, 1)
    return figures


if __name__ == "__main__":
    main()

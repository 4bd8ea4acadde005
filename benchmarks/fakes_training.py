"""Does sharing the G step's fakes with the D step (`rls train --fakes shared`, the default
since 0.4.3 on this benchmark's evidence) train as well as fresh fakes (NVlabs' phases)? The
same runs (data, seeds, settings) both ways: loss curves, and the SWD of G and its EMA against
training crops, compared seed by seed.

    python benchmarks/fakes_training.py data/train/translocation_s3000 --seeds 0-5 --jobs 2 \\
        --threads 1 --iters 4000 --metrics-every 200 --out docs/images/perf
    python benchmarks/fakes_training.py DATA --preset standard --resolution 128 --iters 4000 --device cuda

SWD swings by 2-4x between measurements of one run, so one seed says little: each run is
summarised by the mean of its last half of measurements and by its best measurement (what
`--export best` ships), and the arms are compared per seed (shared minus fresh).
Writes fakes_training_<preset>_<resolution>px.png and .csv to --out. Keep it small on a CPU
(tiny preset at 64 px; the cpu preset at 128 px takes ~20 min per 2000 iterations on one thread).
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training_ab import add_run_arguments, train_run  # noqa: E402


def parse_seeds(text: str) -> List[int]:
    """"0-3" -> [0, 1, 2, 3]; "0,4,7" -> [0, 4, 7]."""
    seeds: List[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


def run(args: argparse.Namespace, fakes: str, seed: int, outdir: str) -> dict:
    """One arm of one seed; a top-level function so worker processes can run it."""
    from rls_core.train.monitor import METRICS_NAME, read_metrics

    log = train_run(args, Path(outdir), seed=seed, fakes=fakes, metrics_every=args.metrics_every)
    metrics = [(int(m["iteration"]), float(m["swd_G"]), float(m["swd_G_ema"]))
               for m in read_metrics(Path(outdir) / METRICS_NAME)]
    return {"fakes": fakes, "seed": seed, "log": log, "metrics": metrics}


def summarise(r: dict, iters: int) -> Dict[str, float]:
    """Last-quarter mean losses; SWD: mean of the last half of measurements, and the best."""
    tail = [row for row in r["log"] if row["iteration"] > iters * 3 // 4]
    late = [m for m in r["metrics"] if m[0] > iters // 2] or r["metrics"][-1:]
    return {"D": statistics.fmean(row["D"] for row in tail), "G": statistics.fmean(row["G"] for row in tail),
            "swd_G": statistics.fmean(m[1] for m in late), "swd_ema": statistics.fmean(m[2] for m in late),
            "best": min(min(m[1], m[2]) for m in r["metrics"]), "s_per_iter": r["log"][-1]["s_per_iter"]}


def report(results: Dict[Tuple[str, int], dict], arms: List[str], seeds: List[int], args) -> List[dict]:
    print(f"{args.preset} preset, {args.resolution} px, {args.iters} iterations, batch {args.batch}, "
          f"{args.device}, seeds {','.join(map(str, seeds))}")
    print("SWD x1e3 vs training crops: mean of the measurements after iteration "
          f"{args.iters // 2} (G, EMA) and the run's best (either)")
    rows = []
    for seed in seeds:
        for fakes in arms:
            s = summarise(results[fakes, seed], args.iters)
            rows.append({"seed": seed, "fakes": fakes, **s})
            print(f"  seed {seed:>3} {fakes:>6}: D {s['D']:.3f} G {s['G']:.3f} | SWD G {s['swd_G']:7.1f} "
                  f"EMA {s['swd_ema']:7.1f} best {s['best']:7.1f} | {s['s_per_iter']:.3f} s/it")
    a, b = "shared", "fresh"  # paired by name, whatever order the arms ran in
    by = {(r["fakes"], r["seed"]): r for r in rows}
    for key in ("swd_G", "swd_ema", "best"):
        d = [by[a, s][key] - by[b, s][key] for s in seeds]
        sd = statistics.stdev(d) if len(d) > 1 else float("nan")
        means = {f: statistics.fmean(by[f, s][key] for s in seeds) for f in arms}
        print(f"  {key:>7}: {b} {means[b]:.1f}, {a} {means[a]:.1f}; {a} - {b} per seed "
              f"{statistics.fmean(d):+.1f} (sd {sd:.1f}); {a} lower in {sum(x < 0 for x in d)} of {len(d)} seeds")
    return rows


def plot(results: Dict[Tuple[str, int], dict], arms: List[str], seeds: List[int], args, out: Path) -> None:
    """Writes `out` with the suffix .png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"fresh": "tab:blue", "shared": "tab:orange"}  # by name: the same in every plot
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for (fakes, seed), r in results.items():
        c, lab = colours[fakes], (f"{fakes} fakes" if seed == seeds[0] else None)
        axes[0].plot([row["iteration"] for row in r["log"]], [row["D"] for row in r["log"]], color=c, alpha=0.4,
                     lw=0.8, label=lab)
        its = [m[0] for m in r["metrics"]]
        axes[1].plot(its, [m[1] for m in r["metrics"]], color=c, alpha=0.35, lw=0.8, label=lab)
        axes[2].plot(its, [m[2] for m in r["metrics"]], color=c, alpha=0.35, lw=0.8, label=lab)
    for fakes in arms:  # the mean over seeds, bold
        its = [m[0] for m in results[fakes, seeds[0]]["metrics"]]
        for ax, k in ((axes[1], 1), (axes[2], 2)):
            ax.plot(its, [statistics.fmean(results[fakes, s]["metrics"][i][k] for s in seeds) for i in range(len(its))],
                    color=colours[fakes], lw=2.5, label=f"{fakes}: mean of {len(seeds)} seeds")
    for ax, title in zip(axes, ("D loss", "SWD x1e3 of G vs training crops", "SWD x1e3 of G's EMA")):
        ax.set_xlabel("iteration")
        ax.set_title(title)
        ax.legend(fontsize=8)
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    fig.suptitle(f"{args.preset} preset, {args.resolution} px, batch {args.batch}, {args.device}: "
                 f"the same {len(seeds)} seed(s) with shared vs fresh fakes for D")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)
    plt.close(fig)


def main() -> None:
    from rls_core.train import FAKES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(ap, iters=1000)
    ap.set_defaults(log_every=10)
    ap.add_argument("--seeds", default="0", help='training seeds, e.g. "0-5" or "0,3,7" (default: 0)')
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs at once, each in its own process (give --threads too, e.g. 1 per core)")
    ap.add_argument("--metrics-every", type=int, default=100)
    ap.add_argument("--out", default=None, help="folder for fakes_training_<preset>_<resolution>px.png/.csv")
    args = ap.parse_args()
    seeds, arms = parse_seeds(args.seeds), list(FAKES)
    if args.jobs > 1:
        args.progress = False  # interleaved bars from several processes are unreadable

    results: Dict[Tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = [(args, f, s, str(Path(tmp) / f"{f}_{s}")) for s in seeds for f in arms]
        mapper = stack.enter_context(ProcessPoolExecutor(args.jobs)).map if args.jobs > 1 else map
        for r in mapper(run, *zip(*work)):
            results[r["fakes"], r["seed"]] = r
            print(f"done: seed {r['seed']}, {r['fakes']} fakes", flush=True)
    rows = report(results, arms, seeds, args)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        out = Path(args.out) / f"fakes_training_{args.preset}_{args.resolution}px"
        plot(results, arms, seeds, args, out)
        with open(out.with_suffix(".csv"), "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rows)
        print(f"wrote {out.with_suffix('.png')} and .csv")


if __name__ == "__main__":
    main()

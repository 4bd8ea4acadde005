"""Does sharing the G step's fakes with the D step (`rls train --fakes shared`, the default)
train as well as fresh fakes (NVlabs' phases)? The same run (data, seed, settings) both ways,
side by side: loss curves, SWD of G and its EMA against training crops, and seconds per iteration.

    python benchmarks/fakes_training.py data/train/translocation_s3000 --out docs/images/perf
    python benchmarks/fakes_training.py DATA --preset standard --resolution 128 --iters 4000 --device cuda

Writes fakes_training.png and .csv to --out. Keep it small on a CPU (tiny preset, 64 px).
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training_ab import add_run_arguments, train_run  # noqa: E402


def run(args, fakes: str, outdir: Path) -> dict:
    from rls_core.train.monitor import METRICS_NAME, read_metrics

    log = train_run(args, outdir, seed=args.seed, fakes=fakes, metrics_every=args.metrics_every)
    return {"log": log, "metrics": read_metrics(outdir / METRICS_NAME)}


def main() -> None:
    from rls_core.train import FAKES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(ap, iters=1000)
    ap.set_defaults(log_every=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--metrics-every", type=int, default=100)
    ap.add_argument("--out", default=None, help="folder for fakes_training.png/.csv")
    args = ap.parse_args()

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fakes in FAKES:
            runs[fakes] = run(args, fakes, Path(tmp) / fakes)
    q = args.iters * 3 // 4
    print(f"{args.preset} preset, {args.resolution} px, {args.iters} iterations, batch {args.batch}, "
          f"seed {args.seed}, {args.device}")
    for fakes, r in runs.items():
        tail = [row for row in r["log"] if row["iteration"] > q]
        mean = {k: sum(row[k] for row in tail) / len(tail) for k in ("D", "G")}
        swd = [(int(m["iteration"]), float(m["swd_G"]), float(m["swd_G_ema"])) for m in r["metrics"]]
        last = swd[-len(swd) // 4 or -1:]
        print(f"  {fakes:>6} fakes: mean D {mean['D']:.3f}, G {mean['G']:.3f} over the last quarter; "
              f"SWD x1e3 of the last {len(last)} measurements: G {sum(s[1] for s in last) / len(last):.1f}, "
              f"EMA {sum(s[2] for s in last) / len(last):.1f}; {r['log'][-1]['s_per_iter']:.3f} s/iteration")
    if args.out:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        fig, axes = plt.subplots(1, 3, figsize=(14, 3.5))
        for fakes, r in runs.items():
            for ax, key in zip(axes[:2], ("D", "G")):
                ax.plot([row["iteration"] for row in r["log"]], [row[key] for row in r["log"]], label=f"{fakes} fakes",
                        alpha=0.8)
                ax.set_xlabel("iteration")
                ax.set_ylabel(f"{key} loss")
            its = [int(m["iteration"]) for m in r["metrics"]]
            axes[2].plot(its, [float(m["swd_G"]) for m in r["metrics"]], "o-", label=f"{fakes}: G")
            axes[2].plot(its, [float(m["swd_G_ema"]) for m in r["metrics"]], "s--", label=f"{fakes}: EMA")
        axes[2].set_xlabel("iteration")
        axes[2].set_ylabel("SWD x1e3 vs training crops")
        for ax in axes:
            ax.legend()
        fig.suptitle(f"{args.preset} preset, {args.resolution} px, batch {args.batch}, {args.device}: same seed, "
                     "shared vs fresh fakes for D")
        fig.tight_layout()
        fig.savefig(out / "fakes_training.png", dpi=100)
        with open(out / "fakes_training.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["fakes", "iteration", "D", "G"])
            for fakes, r in runs.items():
                for row in r["log"]:
                    w.writerow([fakes, int(row["iteration"]), row["D"], row["G"]])
        print(f"wrote {out / 'fakes_training.png'}")


if __name__ == "__main__":
    main()

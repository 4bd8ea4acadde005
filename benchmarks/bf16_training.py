"""Does training in bf16 diverge? The same run (data, seed, settings) in float32 and with
bfloat16 autocast (`rls train --accel bf16`), side by side: loss curves and a summary.

    python benchmarks/bf16_training.py data/train/translocation_s3000 --out docs/images/perf
    python benchmarks/bf16_training.py DATA --preset standard --resolution 128 --iters 2000 --device cuda

Prints the mean D and G losses over the last quarter of each run and writes
bf16_training.png (and .csv) to --out. On a CPU without native bf16 the bf16 run is ~10x
slower (docs/performance.md), so keep it small there; on a GPU use the real preset.
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training_ab import add_run_arguments, train_run  # noqa: E402


def run(args, accel: str, outdir: Path) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 on a CPU without native support: we know
        return train_run(args, outdir, accel=accel)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(ap, iters=300)
    ap.add_argument("--out", default=None, help="folder for bf16_training.png/.csv")
    args = ap.parse_args()

    logs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for accel in ("none", "bf16"):
            logs[accel] = run(args, accel, Path(tmp) / accel)
    q = args.iters * 3 // 4
    print(f"{args.preset} preset, {args.resolution} px, {args.iters} iterations, batch {args.batch}, {args.device}")
    for accel, rows in logs.items():
        tail = [r for r in rows if r["iteration"] > q]
        d = sum(r["D"] for r in tail) / len(tail)
        g = sum(r["G"] for r in tail) / len(tail)
        print(f"  {'float32' if accel == 'none' else 'bf16':>8}: mean D {d:.3f}, mean G {g:.3f} over the last quarter; "
              f"{rows[-1]['s_per_iter']:.3f} s/iteration")
    if args.out:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        for ax, key in zip(axes, ("D", "G")):
            for accel, rows in logs.items():
                ax.plot([r["iteration"] for r in rows], [r[key] for r in rows],
                        label="float32" if accel == "none" else "bf16 autocast")
            ax.set_xlabel("iteration")
            ax.set_ylabel(f"{key} loss")
            ax.legend()
        fig.suptitle(f"{args.preset} preset, {args.resolution} px, batch {args.batch}, {args.device}: same seed, "
                     "float32 vs bf16")
        fig.tight_layout()
        fig.savefig(out / "bf16_training.png", dpi=100)
        with open(out / "bf16_training.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["accel", "iteration", "D", "G"])
            for accel, rows in logs.items():
                for r in rows:
                    w.writerow([accel, int(r["iteration"]), r["D"], r["G"]])
        print(f"wrote {out / 'bf16_training.png'}")


if __name__ == "__main__":
    main()

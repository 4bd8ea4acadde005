"""Summarize the pipelines' CSVs: the readout per condition, super-resolved (SR) vs HR reference.

    python scripts/summarize.py translocation out/translocation     # reads out/translocation/{sr,hr}
    python scripts/summarize.py golgi out/golgi --plot out/golgi/spot_area_by_condition.png

translocation: per-cell NF-kB translocation ratio (nuclear / cytoplasmic mean intensity),
    column Mean_Nuclei_Math_TranslocationRatio of Translocation_Cells.csv.
golgi: per-image mean Golgi spot area (px at the HR scale), column
    Mean_GolgiSpots_AreaShape_Area of Golgi_Image.csv.

Prints the mean, median and n per condition for every run folder found (sr, hr, or any
folder given with --run NAME=DIR) and writes a box plot. Only the standard library and
matplotlib, so it runs in CellProfiler's environment.
"""
from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

#: assay -> (CSV file, value column, what one value is, axis label)
READOUTS = {
    "translocation": ("Translocation_Cells.csv", "Mean_Nuclei_Math_TranslocationRatio", "cells",
                      "NF-kB translocation ratio (nucleus / cytoplasm)"),
    "golgi": ("Golgi_Image.csv", "Mean_GolgiSpots_AreaShape_Area", "images", "mean Golgi spot area (px)"),
}


def load_values(run_dir: Path, assay: str) -> Dict[str, List[float]]:
    """Condition -> finite readout values of one pipeline run (raises if the CSV is missing)."""
    fname, column, _, _ = READOUTS[assay]
    path = Path(run_dir) / fname
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: did the CellProfiler run finish (and find its plugin)?")
    out: Dict[str, List[float]] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if column not in (reader.fieldnames or []):
            raise KeyError(f"{path} has no column {column}")
        for row in reader:
            try:
                v = float(row[column])
            except ValueError:
                continue
            if math.isfinite(v):
                out.setdefault(row["Metadata_Condition"], []).append(v)
    return out


def summarize(runs: Sequence[Tuple[str, Path]], assay: str) -> Dict[str, Dict[str, List[float]]]:
    _, column, unit, label = READOUTS[assay]
    results = {name: load_values(d, assay) for name, d in runs}
    print(f"{assay}: {label} ({column}; one value per {unit[:-1]})")
    print(f"{'run':<6} {'condition':<12} {'n':>4} {'mean':>9} {'median':>9}")
    for name, by_cond in results.items():
        if not by_cond:
            print(f"{name:<6} (no finite values: no objects found?)")
        for cond in sorted(by_cond):
            v = by_cond[cond]
            print(f"{name:<6} {cond:<12} {len(v):>4} {statistics.mean(v):>9.3f} {statistics.median(v):>9.3f}")
    return results


def boxplot(results: Dict[str, Dict[str, List[float]]], assay: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, _, _, label = READOUTS[assay]
    names = list(results)
    conds = sorted({c for r in results.values() for c in r})
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.6), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        data = [results[name].get(c, []) for c in conds]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(conds) + 1))
        ax.set_xticklabels(conds)
        ax.set_title({"sr": "super-resolved (RLS)", "hr": "HR reference"}.get(name, name))
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(label)
    fig.suptitle(f"{assay}: " + " vs ".join(n.upper() if n in ("sr", "hr") else n for n in names), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("assay", choices=sorted(READOUTS))
    ap.add_argument("out", type=Path, help="folder holding the sr/ and hr/ run folders")
    ap.add_argument("--run", action="append", default=[], metavar="NAME=DIR",
                    help="an extra (or only) run folder to include, e.g. mine=out/my_run")
    ap.add_argument("--plot", type=Path, help="box plot PNG (default: OUT/<ratio|spot_area>_by_condition.png)")
    args = ap.parse_args(argv)
    runs = [(n, args.out / n) for n in ("sr", "hr") if (args.out / n).is_dir()]
    for item in args.run:
        name, _, d = item.partition("=")
        runs.append((name, Path(d)))
    if not runs:
        print(f"no run folders (sr/, hr/) in {args.out}", file=sys.stderr)
        return 1
    try:
        results = summarize(runs, args.assay)
    except (FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    default = "ratio_by_condition.png" if args.assay == "translocation" else "spot_area_by_condition.png"
    boxplot(results, args.assay, args.plot or args.out / default)
    return 0


if __name__ == "__main__":
    sys.exit(main())
